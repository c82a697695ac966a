"""Install and remove the systemd timer that runs the audit on every host.

The unit files shipped in `systemd/` name `/usr/local/bin/portaudit`; a host may have portaudit
in a virtualenv, under `/usr/bin`, or only as a source tree, so `install` rewrites `ExecStart=`
to the command that runs *this* installation, with an absolute path (systemd wants one, and a
PATH lookup at run time could find another copy). Everything is written under `--root`, so an
image build (or a test) can install into a tree; only on the live root with a running systemd
does it call `systemctl`, and otherwise it makes the same `timers.target.wants` link that
`systemctl enable` would make.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from auditor.errors import AuditorError, InputError, RefusedError, UsageError
from auditor.facts.rates import remove_state
from auditor.hostfs import shown
from auditor.safepath import Dir, LinkRefused, split

SERVICE = "portaudit.service"
TIMER = "portaudit.timer"
UNIT_DIR = "/etc/systemd/system"
WANTS_DIR = "/etc/systemd/system/timers.target.wants"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
TEXTFILE = f"{TEXTFILE_DIR}/portaudit.prom"
TEMPLATE_PROGRAM = "/usr/local/bin/portaudit"
"""The program the shipped unit names; `install` replaces it with this installation's command."""

HIDDEN_BY_SANDBOX = ("/tmp", "/var/tmp")  # noqa: S108 (names, not files we write)
"""PrivateTmp=yes gives the service empty versions of these: a portaudit there cannot start."""
HOME_DIRS = ("/home", "/root", "/run/user")
"""ProtectHome=yes hides these; a portaudit installed there needs ProtectHome=read-only."""

Runner = Callable[[Sequence[str]], None]


@dataclass(frozen=True, slots=True)
class Command:
    """How systemd must start this installation: argv plus any environment it needs."""

    argv: tuple[str, ...]
    environment: dict[str, str] = field(default_factory=dict)
    package: str = ""
    """The directory holding the `auditor` package the command imports (it must stay visible)."""

    @property
    def paths(self) -> tuple[str, ...]:
        """Paths the service must be able to see for the command to start."""
        found = [self.argv[0]]
        found += [p for p in self.environment.get("PYTHONPATH", "").split(":") if p]
        if self.package:
            found.append(self.package)
        return tuple(found)


def _package_parent() -> Path:
    return Path(__file__).resolve().parent.parent


def _installed_for(executable: str, parent: Path) -> bool:
    """True when `parent` is one of the interpreter's own install dirs (not a source checkout).

    Only then is the `portaudit` script next to the interpreter known to run this very code;
    from a source tree, that script (if any) belongs to whatever was pip-installed earlier.
    """
    if os.path.realpath(executable) != os.path.realpath(sys.executable):
        return False
    dirs = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    return any(os.path.realpath(d) == os.path.realpath(parent) for d in dirs)


def resolve_command(
    argv0: str | None = None,
    executable: str | None = None,
    package_parent: Path | None = None,
    installed: bool | None = None,
) -> Command:
    """The command that runs this installation, by absolute path.

    In order: the `portaudit` script being run; when this package is installed in the running
    interpreter's environment, the script pip put next to that interpreter; else
    `<interpreter> -m auditor`, with PYTHONPATH set when the package is a source tree (or a
    user site) the interpreter would not find from a service's empty environment. Paths are
    made absolute but symlinks are kept: a virtualenv's `python` is a symlink that must stay one.
    A `portaudit` found on PATH is not used: it may well be another installation.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    parent = _package_parent() if package_parent is None else package_parent
    installed = _installed_for(executable, parent) if installed is None else installed

    def runnable(p: str) -> str | None:
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return os.path.abspath(p)
        return None

    if os.path.basename(argv0) == "portaudit" and (found := runnable(argv0)):
        return Command((found,), package=str(parent))
    if not executable:
        raise UsageError("cannot tell which Python runs portaudit (sys.executable is empty)")
    if installed and (found := runnable(os.path.join(os.path.dirname(executable), "portaudit"))):
        return Command((found,), package=str(parent))
    env = {} if installed else {"PYTHONPATH": str(parent)}
    return Command((os.path.abspath(executable), "-m", "auditor"), env, package=str(parent))


_PLAIN = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")
_UNSAFE_PROGRAM = re.compile(r"[\"'\\\x00-\x1f\x7f]")
"""Characters systemd refuses in an executable's path ("contains special characters")."""


def systemd_quote(word: str, *, program: bool = False, dollars: bool = True) -> str:
    """One word as systemd's ExecStart= / Environment= parser reads it back unchanged.

    `%` starts a specifier everywhere, so it is doubled. `$` starts a variable in ExecStart=
    arguments (`dollars`), but not in the program path nor in Environment=. Words with other
    unusual characters go inside double quotes with C-style escapes; the program path may not
    contain quotes, backslashes or control characters at all, so those are refused.
    """
    if any(ch in word for ch in "\n\r\0"):
        raise UsageError(f"cannot put {word!r} in a unit file: it contains a line break or NUL")
    if program and _UNSAFE_PROGRAM.search(word):
        raise UsageError(f"systemd cannot start a program whose path is {word!r}; move portaudit")
    escaped = word.replace("%", "%%")
    if dollars and not program:
        escaped = escaped.replace("$", "$$")
    if _PLAIN.match(word):
        return escaped
    escaped = escaped.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _template(name: str) -> str:
    """A shipped unit file: inside the wheel (`auditor/systemd`) or in the source tree."""
    packaged = resources.files("auditor").joinpath("systemd", name)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    source = _package_parent() / "systemd" / name
    try:
        return source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(source, None, "unit template not found (broken installation)") from None


def render_service(template: str, command: Command) -> str:
    """The service unit with ExecStart= (and what it needs to start) fitted to `command`."""
    program = " ".join(systemd_quote(a, program=(i == 0)) for i, a in enumerate(command.argv))
    lines = template.splitlines()
    out: list[str] = []
    replaced = False
    home = any(_under(p, HOME_DIRS) for p in command.paths)
    for line in lines:
        if line.startswith("ExecStart=") and TEMPLATE_PROGRAM in line:
            line = line.replace(TEMPLATE_PROGRAM, program, 1)
            replaced = True
            out.append(line)
            for key, value in sorted(command.environment.items()):
                out.append(f"Environment={systemd_quote(f'{key}={value}', dollars=False)}")
            continue
        if line == "ProtectHome=yes" and home:
            out.append("# portaudit is installed under a home directory: it must stay readable.")
            line = "ProtectHome=read-only"
        out.append(line)
    if not replaced:
        raise InputError(SERVICE, None, f"template has no ExecStart= naming {TEMPLATE_PROGRAM}")
    return "\n".join(out) + "\n"


def _under(path: str, dirs: Sequence[str]) -> bool:
    real = os.path.realpath(path)
    return any(p == d or p.startswith(d + "/") for p in (path, real) for d in dirs)


def systemd_running(root: Path) -> bool:
    """The test `sd_booted()` makes: systemd is PID 1 of the host `root` names."""
    return os.path.realpath(root) == "/" and Path("/run/systemd/system").is_dir()


def _run(argv: Sequence[str]) -> None:
    try:
        subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise AuditorError(f"{argv[0]}: not found") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()
        why = detail[-1] if detail else f"exit status {exc.returncode}"
        raise AuditorError(f"{' '.join(argv)} failed: {why}") from None
    except subprocess.TimeoutExpired:
        raise AuditorError(f"{' '.join(argv)} did not finish in 60 s") from None


def _write_unit(units: Dir, name: str, text: str, where: str) -> str:
    """Write one unit atomically; keep a backup of a different earlier version.

    A masked unit (a link to /dev/null, `systemctl mask`) is the operator's decision and is
    refused, as is any other link: it could lead out of `--root`."""
    link = units.readlink(name)
    if link == "/dev/null":
        raise RefusedError(f"{where} is masked (a link to /dev/null); `systemctl unmask` it first")
    if link is not None:
        raise RefusedError(f"{where} is a symbolic link; refusing to write through it")
    data = text.encode()
    old = units.read(name)
    if old == data:
        return f"unchanged {where}"
    note = ""
    if old is not None:
        backup = name + ".bak"
        units.replace(backup, old)
        note = f" (previous version kept as {where}.bak)"
    units.replace(name, data, mode=0o644)
    return f"wrote {where}{note}"


def _rel(host_path: str) -> str:
    return host_path.lstrip("/")


def _missing_in_root(root: Path, command: Command) -> list[str]:
    """The paths ExecStart= needs that do not exist inside `root` (an image built elsewhere)."""
    if os.path.realpath(root) == "/":
        return []
    missing = []
    for p in command.paths:
        rel = _rel(os.path.normpath(p))
        try:
            with Dir.open(root) as top:
                parent, name = split(rel)
                with top.subdir(parent) as d:
                    found = d.lstat(name) is not None
        except OSError:
            found = False
        if not found:
            missing.append(p)
    return missing


def install(
    root: Path,
    enable: bool = True,
    command: Command | None = None,
    run: Runner = _run,
    booted: bool | None = None,
) -> list[str]:
    """Write both units under `root` and enable the timer; returns what was done, line by line."""
    command = resolve_command() if command is None else command
    hidden = [p for p in command.paths if _under(p, HIDDEN_BY_SANDBOX)]
    problem = (
        f"portaudit runs from {hidden[0]}, which the unit's PrivateTmp=yes hides" if hidden else ""
    )
    if problem and root.resolve() == Path("/"):
        raise UsageError(f"{problem}; install portaudit outside /tmp and /var/tmp first")
    done = [f"ExecStart runs {' '.join(command.argv)}"]
    if problem:
        # Staging units into another root (an image build, a test): say it, do not refuse.
        done.append(f"warning: {problem}: the service cannot start until it is installed elsewhere")
    missing = _missing_in_root(root, command)
    if missing:
        done.append(
            f"warning: {missing[0]} does not exist under {root}: the service cannot start there"
            " until portaudit is installed at that path inside the image"
        )
    service = render_service(_template(SERVICE), command)
    timer = _template(TIMER)
    with Dir.open(root) as top:
        with top.subdir(_rel(UNIT_DIR), create=True) as unit_dir:
            for name, text in ((SERVICE, service), (TIMER, timer)):
                done.append(_write_unit(unit_dir, name, text, shown(root, f"{UNIT_DIR}/{name}")))
        try:
            with top.subdir(_rel(TEXTFILE_DIR), create=True, mode=0o755) as textdir:
                if textdir.created:
                    done.append(
                        f"created {shown(root, TEXTFILE_DIR)}"
                        " (node_exporter --collector.textfile.directory)"
                    )
        except LinkRefused:
            # The service writes there by path at run time: a link the operator made is theirs.
            done.append(
                f"{shown(root, TEXTFILE_DIR)} is a symbolic link: left as it is, not created"
            )
        booted = systemd_running(root) if booted is None else booted
        if booted:
            run(["systemctl", "daemon-reload"])
            done.append("ran systemctl daemon-reload")
            if enable:
                run(["systemctl", "enable", "--now", TIMER])
                done.append(f"ran systemctl enable --now {TIMER}")
        elif enable:
            target = f"{UNIT_DIR}/{TIMER}"
            with top.subdir(_rel(WANTS_DIR), create=True) as wants:
                if wants.readlink(TIMER) == target:
                    done.append(f"unchanged {shown(root, f'{WANTS_DIR}/{TIMER}')} (enabled)")
                else:
                    wants.remove(TIMER)
                    wants.symlink(target, TIMER)
                    done.append(
                        f"linked {shown(root, f'{WANTS_DIR}/{TIMER}')} -> {target}"
                        " (enabled for next boot)"
                    )
            done.append("systemd is not running this root: the timer starts at its next boot")
    if not enable:
        done.append(f"not enabled: run `systemctl enable --now {TIMER}` to start it")
    return done


def uninstall(root: Path, run: Runner = _run, booted: bool | None = None) -> list[str]:
    """Stop and remove the units, the enable link and the files only portaudit writes."""
    done: list[str] = []
    booted = systemd_running(root) if booted is None else booted
    with Dir.open(root) as top:
        if booted and _exists(top, f"{UNIT_DIR}/{TIMER}"):
            run(["systemctl", "disable", "--now", TIMER])
            done.append(f"ran systemctl disable --now {TIMER}")
        for host_path in (
            f"{WANTS_DIR}/{TIMER}",
            f"{UNIT_DIR}/{TIMER}",
            f"{UNIT_DIR}/{SERVICE}",
            TEXTFILE,
        ):
            where = shown(root, host_path)
            parent, name = split(_rel(host_path))
            try:
                d = top.subdir(parent)
            except FileNotFoundError:
                continue
            except LinkRefused:
                done.append(
                    f"left {where}: {shown(root, f'/{parent}')} is a symbolic link, not followed"
                )
                continue
            with d:
                if d.readlink(name) == "/dev/null":
                    done.append(f"left {where}: masked by the operator")
                elif d.remove(name):
                    done.append(f"removed {where}")
        done += remove_state(top, root)
    if booted:
        run(["systemctl", "daemon-reload"])
        done.append("ran systemctl daemon-reload")
    if not done:
        done.append("nothing to remove: portaudit's units are not installed")
    return done


def _exists(top: Dir, host_path: str) -> bool:
    parent, name = split(_rel(host_path))
    try:
        with top.subdir(parent) as d:
            return d.lstat(name) is not None
    except OSError:
        return False
