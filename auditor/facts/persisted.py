"""What survives a reboot: the sysctl files `systemd-sysctl` reads at boot, and their verdict.

Boot order follows systemd v252 (src/sysctl/sysctl.c `run()`, src/basic/conf-files.c
`conf_files_list_strv()` with no flags): every `*.conf` in SYSCTL_DIRS, merged by basename (the
first directory that has a name wins, even if its file is a symlink to /dev/null or points
nowhere: that is how a file is masked), hidden files skipped, then all read in `strcmp` order of
the basename. Within that stream a later assignment of a key replaces an earlier one; a glob key
applies to every matching key that no line names explicitly; a `-key` line without `=` keeps
globs off `key`. `/etc/sysctl.conf` is read only if a sysctl.d file links to it (Debian <= 12 and
RHEL ship `/etc/sysctl.d/99-sysctl.conf -> ../sysctl.conf`).

procps `sysctl --system` (procps-ng 4.0 `PreloadSystem()`) reads a different set: hidden `.conf`
files too, `/lib/sysctl.d` as a fifth directory, and `/etc/sysctl.conf` last, always. Operators
who test with it can see a value boot never applies; those keys are recorded as differences.

Every path is resolved under `HostRoot.root` with symlinks chased inside it (an absolute link
target such as `/etc/sysctl.conf` means `<root>/etc/sysctl.conf`), so a fixture tree or an image
never leaks into the running host's files.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from auditor.errors import UsageError
from auditor.facts.model import (
    PersistedSysctl,
    SysctlAssignment,
    SysctlLineProblem,
    Unavailable,
)
from auditor.hostfs import HostRoot, systemd_normalize
from auditor.inputfile import MAX_CONFIG_FILE, read_bytes
from auditor.sysctlfile import SysctlLine, is_glob, parse_sysctl_text

SYSCTL_DIRS: tuple[str, ...] = (
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
)
"""systemd's CONF_PATHS("sysctl.d") without split-usr, highest precedence first (Debian 12's
systemd 252 lists exactly these four)."""

PROCPS_DIRS: tuple[str, ...] = (*SYSCTL_DIRS, "/lib/sysctl.d")
SYSCTL_CONF = "/etc/sysctl.conf"
_MAX_HOPS = 40
_BACKUP_SUFFIXES = (
    "~",
    ".rpmnew",
    ".rpmsave",
    ".rpmorig",
    ".dpkg-old",
    ".dpkg-new",
    ".dpkg-tmp",
    ".dpkg-dist",
    ".dpkg-bak",
    ".dpkg-backup",
    ".dpkg-remove",
    ".ucf-new",
    ".ucf-old",
    ".ucf-dist",
    ".swp",
    ".bak",
    ".old",
    ".new",
)
"""systemd's `hidden_or_backup_file()`; only hidden names matter once `.conf` is required."""


@dataclass(frozen=True, slots=True)
class BootFile:
    """One file in the read order, after basename merging."""

    host_path: str
    """Where it is listed, as the host names it (`/etc/sysctl.d/99-sysctl.conf`)."""
    real_path: Path
    """The file to open or to write: every symlink followed, under the root."""
    masked: bool
    """It applies nothing (a link to /dev/null, or to nothing) but still hides its basename."""
    target: str = ""
    """The host path after following symlinks (`/etc/sysctl.conf` for 99-sysctl.conf)."""


def chase(host: HostRoot, host_path: str) -> str:
    """The host path `host_path` ends at after following every symlink inside the root.

    Like systemd's `chase_symlinks(..., CHASE_PREFIX_ROOT)`: absolute targets restart at the
    root and `..` never climbs above it. The result need not exist.
    """
    pending: deque[str] = deque(PurePosixPath(host_path).parts[1:])
    done: list[str] = []
    hops = 0
    while pending:
        name = pending.popleft()
        if name in ("", "."):
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        real = host.root.joinpath(*done, name)
        try:
            target = os.readlink(real)
        except OSError:
            done.append(name)
            continue
        hops += 1
        if hops > _MAX_HOPS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", host_path)
        tparts = PurePosixPath(target).parts
        if target.startswith("/"):
            done = []
            tparts = tparts[1:]
        pending.extendleft(reversed(tparts))
    return "/" + "/".join(done)


def _real(host: HostRoot, canonical: str) -> Path:
    return host.root.joinpath(*PurePosixPath(canonical).parts[1:])


def _is_hidden_or_backup(name: str) -> bool:
    return name.startswith(".") or name.endswith(_BACKUP_SUFFIXES)


def _list_dirs(
    host: HostRoot, dirs: tuple[str, ...], *, skip_hidden: bool, dedupe_dirs: bool
) -> list[BootFile]:
    seen: dict[str, BootFile] = {}
    visited: set[str] = set()
    for d in dirs:
        try:
            canonical = chase(host, d)
        except OSError:
            continue
        if dedupe_dirs:
            # path_strv_resolve_uniq(): /lib/sysctl.d and /usr/lib/sysctl.d are one directory
            # on a merged-/usr system and are listed once.
            if canonical in visited:
                continue
            visited.add(canonical)
        try:
            names = os.listdir(_real(host, canonical))
        except OSError:
            continue
        for name in names:
            if not name.endswith(".conf") or name in seen:
                continue
            if skip_hidden and _is_hidden_or_backup(name):
                continue
            listed = f"{d}/{name}"
            try:
                target = chase(host, listed)
            except OSError:
                seen[name] = BootFile(listed, _real(host, canonical) / name, True, "")
                continue
            real = _real(host, target)
            masked = target == "/dev/null" or not os.path.lexists(real)
            seen[name] = BootFile(listed, real, masked, target)
    return [seen[n] for n in sorted(seen, key=os.fsencode)]


def boot_files(host: HostRoot) -> list[BootFile]:
    """The files systemd-sysctl reads at boot, in the order it reads them (masked ones too)."""
    return _list_dirs(host, SYSCTL_DIRS, skip_hidden=True, dedupe_dirs=True)


def boot_file_map(host: HostRoot) -> dict[str, BootFile]:
    """host path as assignments name it (`SysctlAssignment.file`) -> the file to open or edit."""
    return {f.host_path: f for f in boot_files(host)}


def procps_files(host: HostRoot) -> list[BootFile]:
    """The files `sysctl --system` reads, in its order: /etc/sysctl.conf last when regular."""
    files = _list_dirs(host, PROCPS_DIRS, skip_hidden=False, dedupe_dirs=False)
    try:
        target = chase(host, SYSCTL_CONF)
        real = _real(host, target)
        if stat.S_ISREG(real.stat().st_mode):
            files.append(BootFile(SYSCTL_CONF, real, False, target))
    except OSError:
        pass
    return files


@dataclass(frozen=True, slots=True)
class _Read:
    assignments: tuple[SysctlAssignment, ...]
    problems: tuple[SysctlLineProblem, ...]
    read: tuple[str, ...]
    masked: tuple[str, ...]


def _assignment(f: str, ln: SysctlLine) -> SysctlAssignment:
    assert ln.key is not None
    return SysctlAssignment(
        file=f,
        line=ln.lineno,
        key=ln.key,
        value=ln.value or "",
        ignore_errors=ln.ignore_errors,
        exclude=ln.value is None,
        problem=ln.problem,
    )


def read_files(files: list[BootFile]) -> _Read | Unavailable:
    """Parse `files` in order; an unreadable one is a problem, an unlistable set Unavailable."""
    assignments: list[SysctlAssignment] = []
    problems: list[SysctlLineProblem] = []
    read: list[str] = []
    masked: list[str] = []
    for bf in files:
        if bf.masked:
            masked.append(bf.host_path)
            continue
        try:
            data = read_bytes(bf.real_path, MAX_CONFIG_FILE)
        except PermissionError:
            return Unavailable(f"{bf.host_path}: permission denied (run as root)")
        except OSError as exc:
            problems.append(SysctlLineProblem(bf.host_path, 0, "unreadable", exc.strerror or ""))
            continue
        read.append(bf.host_path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_line = data[: exc.start].count(b"\n") + 1
            problems.append(
                SysctlLineProblem(
                    bf.host_path, bad_line, "bad-encoding", f"not UTF-8: {exc.reason}"
                )
            )
            text = data.decode("utf-8", errors="replace")
        for ln in parse_sysctl_text(text, bf.host_path):
            if ln.problem is not None:
                problems.append(
                    SysctlLineProblem(bf.host_path, ln.lineno, ln.problem, ln.raw.strip("\r\n"))
                )
            if ln.key is not None:
                assignments.append(_assignment(bf.host_path, ln))
    return _Read(tuple(assignments), tuple(problems), tuple(read), tuple(masked))


def _boot_options(assignments: tuple[SysctlAssignment, ...]) -> dict[str, SysctlAssignment]:
    """systemd's ordered hashmap after parsing: key -> deciding line, in application order.

    A repeat with the same value keeps the first one's place (only the deciding line moves to
    the later one, which is what an edit must change); a new value moves the key to the end.
    """
    opts: dict[str, SysctlAssignment] = {}
    for a in assignments:
        old = opts.get(a.key)
        if old is not None and old.exclude == a.exclude and old.value == a.value:
            opts[a.key] = a
            continue
        opts.pop(a.key, None)
        opts[a.key] = a
    return opts


def glob_matches(pattern: str, key: str) -> bool:
    """Whether glob(3) over /proc/sys would find `key` for `pattern` (`*` stays in one name)."""
    pp = systemd_normalize(pattern.translate(str.maketrans("./", "/."))).split("/")
    kp = systemd_normalize(key.translate(str.maketrans("./", "/."))).split("/")
    return len(pp) == len(kp) and all(fnmatchcase(k, p) for k, p in zip(kp, pp, strict=True))


def effective_in(assignments: tuple[SysctlAssignment, ...], key: str) -> SysctlAssignment | None:
    """The line that decides `key` at boot, or None when boot leaves the kernel's value."""
    opts = _boot_options(assignments)
    explicit = opts.get(key)
    if explicit is not None:
        return None if explicit.exclude else explicit
    winner = None
    for k, a in opts.items():
        if is_glob(k) and not a.exclude and glob_matches(k, key):
            winner = a
    return winner


def effective(persisted: PersistedSysctl, key: str) -> SysctlAssignment | None:
    """The deciding line for `key` at boot (globs resolved as systemd-sysctl does), or None."""
    return effective_in(persisted.assignments, key)


def effective_all(persisted: PersistedSysctl) -> dict[str, SysctlAssignment]:
    """Every explicitly named key (no globs) that boot sets, with its deciding line."""
    out: dict[str, SysctlAssignment] = {}
    for k, a in _boot_options(persisted.assignments).items():
        if not is_glob(k) and not a.exclude:
            out[k] = a
    return out


def _procps_value(assignments: tuple[SysctlAssignment, ...], key: str) -> str | None:
    """The value `sysctl --system` leaves for `key`: every line is written in order."""
    explicit = [a for a in assignments if a.key == key]
    if explicit:
        return None if explicit[-1].exclude else explicit[-1].value
    value = None
    for a in assignments:
        if is_glob(a.key) and not a.exclude and glob_matches(a.key, key):
            value = a.value
    return value


def _fold(v: str) -> str:
    return " ".join(v.split())


def collect_persisted(host: HostRoot) -> PersistedSysctl | Unavailable:
    """The boot view of every sysctl file under `host.root`, with procps' differences."""
    try:
        boot = read_files(boot_files(host))
    except OSError as exc:
        return Unavailable(f"sysctl.d: {exc.strerror or exc}")
    if isinstance(boot, Unavailable):
        return boot
    problems = list(boot.problems)
    runtime: dict[str, str] = {}
    proc_sys = host.proc_path("sys")
    have_proc = proc_sys.is_dir()
    explicit_keys = sorted({a.key for a in boot.assignments if not is_glob(a.key)})
    for key in explicit_keys:
        if not have_proc:
            break
        try:
            path = host.sysctl_path(key)
        except UsageError:
            continue
        if not os.path.lexists(path):
            problems.extend(
                SysctlLineProblem(a.file, a.line, "unknown-key", a.key)
                for a in boot.assignments
                if a.key == key and not a.exclude
            )
            continue
        got = host.read_sysctl(key)
        if not isinstance(got, Unavailable):
            runtime[key] = got
    differences: dict[str, str] = {}
    try:
        procps = read_files(procps_files(host))
    except OSError:
        procps = Unavailable("procps files not listable")
    if not isinstance(procps, Unavailable):
        keys = explicit_keys + sorted(
            {a.key for a in procps.assignments if not is_glob(a.key)} - set(explicit_keys)
        )
        for key in keys:
            b = effective_in(boot.assignments, key)
            p = _procps_value(procps.assignments, key)
            bv = None if b is None else _fold(b.value)
            pv = None if p is None else _fold(p)
            if bv != pv:
                differences[key] = "(not set)" if pv is None else pv
    order = {f: i for i, f in enumerate(boot.read)}
    problems.sort(key=lambda p: (order.get(p.file, len(order)), p.line))
    return PersistedSysctl(
        files=boot.read,
        assignments=boot.assignments,
        problems=tuple(problems),
        procps_differences=differences,
        runtime=runtime,
        masked=boot.masked,
    )
