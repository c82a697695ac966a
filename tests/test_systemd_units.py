"""The timer and service units: systemd accepts them, the sandbox scores well, and
`portaudit systemd install --root` writes units that start this very installation."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from auditor import units
from auditor.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
UNIT_DIR = Path("etc/systemd/system")
MAX_EXPOSURE = 3.0

analyze = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    analyze is None, reason="systemd-analyze not installed (Debian package 'systemd')"
)


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI the way an operator does, in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "auditor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd or REPO,
    )


@pytest.fixture()
def installed(tmp_path: Path) -> Path:
    got = cli("systemd", "install", "--root", str(tmp_path))
    assert got.returncode == 0, got.stderr
    return tmp_path


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> values (keys may repeat, as systemd allows)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key, []).append(value)
    return out


def verify(*paths: Path) -> None:
    assert analyze is not None
    got = subprocess.run(
        [analyze, "verify", *map(str, paths)], capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 0, got.stderr
    # verify prints warnings (unknown keys, bad values) without failing: there must be none.
    assert got.stderr.strip() == "", got.stderr


def exposure(path: Path) -> float:
    assert analyze is not None
    got = subprocess.run(
        [analyze, "security", "--offline=yes", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 0, got.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", got.stdout)
    assert found, got.stdout
    return float(found.group(1))


# --- the shipped files -------------------------------------------------------------------


def test_service_is_a_read_only_oneshot() -> None:
    unit = read_unit(REPO / "systemd" / "portaudit.service")["Service"]
    assert unit["Type"] == ["oneshot"]
    assert unit["SuccessExitStatus"] == ["1"]
    assert unit["TimeoutStartSec"] and unit["TimeoutStartSec"][0] != "infinity"
    (exec_start,) = unit["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[1:5] == ["audit", "--format", "prometheus", "-o"]
    assert argv[5] == "/var/lib/prometheus/node-exporter/portaudit.prom"
    assert "--log-findings" in argv
    assert "fix" not in argv and "--all-netns" not in argv
    assert unit["SyslogLevelPrefix"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    # "-": without the directory the service still starts, and portaudit says it cannot write
    assert unit["ReadWritePaths"] == ["-/var/lib/prometheus/node-exporter"]
    assert unit["StateDirectory"] == ["portaudit"]
    assert unit["ProtectKernelTunables"] == ["yes"]
    assert unit["NoNewPrivileges"] == ["yes"]
    caps = set(unit["CapabilityBoundingSet"][0].split())
    # CAP_DAC_OVERRIDE already covers what CAP_DAC_READ_SEARCH would allow
    assert caps == {"CAP_SYS_PTRACE", "CAP_DAC_OVERRIDE"}
    families = set(unit["RestrictAddressFamilies"][0].split())
    assert "AF_NETLINK" in families
    # A private network namespace would hide the very sockets the audit is about.
    assert "PrivateNetwork" not in unit
    assert "ProcSubset" not in unit


def test_timer_runs_every_five_minutes_after_boot() -> None:
    timer = read_unit(REPO / "systemd" / "portaudit.timer")
    assert timer["Timer"]["OnBootSec"] == ["2min"]
    assert timer["Timer"]["OnUnitActiveSec"] == ["5min"]
    assert timer["Timer"]["RandomizedDelaySec"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


# --- what install writes -------------------------------------------------------------------


@needs_analyze
def test_installed_units_verify(installed: Path) -> None:
    verify(installed / UNIT_DIR / "portaudit.service", installed / UNIT_DIR / "portaudit.timer")


@needs_analyze
def test_installed_service_exposure_is_low(installed: Path) -> None:
    assert exposure(installed / UNIT_DIR / "portaudit.service") <= MAX_EXPOSURE


@needs_analyze
def test_shipped_service_exposure_is_low() -> None:
    # security --offline does not need ExecStart to exist, so the shipped file is scored as is.
    assert exposure(REPO / "systemd" / "portaudit.service") <= MAX_EXPOSURE


def test_installed_service_starts_this_portaudit(installed: Path) -> None:
    """ExecStart (with its Environment=) runs this checkout's CLI: its help lists `systemd`."""
    service = read_unit(installed / UNIT_DIR / "portaudit.service")["Service"]
    argv = shlex.split(service["ExecStart"][0])
    program = argv[: argv.index("audit")]
    assert os.path.isabs(program[0])
    env = {"PATH": "/usr/bin:/bin"}
    for assignment in service.get("Environment", []):
        key, _, value = shlex.split(assignment)[0].partition("=")
        env[key] = value
    got = subprocess.run(
        [*program, "systemd", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd="/",
    )
    assert got.returncode == 0, got.stderr
    assert "install" in got.stdout and "uninstall" in got.stdout
    # And the rest of the command line is the shipped one.
    shipped = read_unit(REPO / "systemd" / "portaudit.service")["Service"]["ExecStart"][0]
    assert argv[len(program) :] == shlex.split(shipped)[1:]


def test_install_enables_timer_and_is_idempotent(installed: Path) -> None:
    link = installed / UNIT_DIR / "timers.target.wants" / "portaudit.timer"
    assert link.is_symlink()
    assert os.readlink(link) == "/etc/systemd/system/portaudit.timer"
    assert (installed / "var/lib/prometheus/node-exporter").is_dir()
    before = {p: p.read_bytes() for p in (installed / UNIT_DIR).glob("portaudit.*")}
    again = cli("systemd", "install", "--root", str(installed))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("unchanged") == 3, again.stdout
    assert {p: p.read_bytes() for p in (installed / UNIT_DIR).glob("portaudit.*")} == before
    assert not list((installed / UNIT_DIR).glob("*.bak"))


def test_install_keeps_a_backup_of_an_edited_unit(installed: Path) -> None:
    service = installed / UNIT_DIR / "portaudit.service"
    service.write_text(service.read_text() + "# local edit\n")
    got = cli("systemd", "install", "--root", str(installed))
    assert got.returncode == 0, got.stderr
    assert f"previous version kept as {service}.bak" in got.stdout
    assert (installed / UNIT_DIR / "portaudit.service.bak").read_text().endswith("# local edit\n")
    assert "# local edit" not in service.read_text()


def test_no_enable_writes_units_only(tmp_path: Path) -> None:
    got = cli("systemd", "install", "--root", str(tmp_path), "--no-enable")
    assert got.returncode == 0, got.stderr
    assert (tmp_path / UNIT_DIR / "portaudit.service").is_file()
    assert not (tmp_path / UNIT_DIR / "timers.target.wants").exists()
    assert "systemctl enable --now portaudit.timer" in got.stdout


def test_uninstall_removes_what_portaudit_wrote(installed: Path) -> None:
    prom = installed / "var/lib/prometheus/node-exporter"
    (prom / "portaudit.prom").write_text("portaudit_last_run_success 1\n")
    (prom / "other.prom").write_text("other 1\n")
    state = installed / "var/lib/portaudit"
    state.mkdir(parents=True)
    (state / "counters.json").write_text("{}")
    got = cli("systemd", "uninstall", "--root", str(installed))
    assert got.returncode == 0, got.stderr
    assert not list((installed / UNIT_DIR).rglob("portaudit.*"))
    assert not (prom / "portaudit.prom").exists()
    assert (prom / "other.prom").exists(), "another collector's file was removed"
    assert not state.exists()
    again = cli("systemd", "uninstall", "--root", str(installed))
    assert again.returncode == 0
    assert "nothing to remove" in again.stdout


_PATH = re.compile(r"(?<![\w.-])/[\w./-]+")


def _printed_paths(stdout: str) -> list[str]:
    """Every file path a line of `systemd install|uninstall` names; not the ExecStart command
    or a warning about it (paths as the service sees them inside the root), nor a link's
    target (the link's content, also a path inside the root)."""
    out = []
    for line in stdout.splitlines():
        if line.startswith(("ExecStart runs", "warning: ", "not enabled")):
            continue
        out += _PATH.findall(line.partition(" -> ")[0])
    return out


def test_every_printed_path_carries_the_root(tmp_path: Path) -> None:
    """With --root R the operator looks for the files under R: a line naming
    /etc/systemd/system/... would send them to the live host's units."""
    state = tmp_path / "var/lib/portaudit/counters"
    state.mkdir(parents=True)
    (state / "net-4026531840.json").write_text("{}")
    (tmp_path / "var/lib/portaudit/counters.json").write_text("{}")
    steps = [
        cli("systemd", "install", "--root", str(tmp_path)),
        cli("systemd", "install", "--root", str(tmp_path)),
        cli("systemd", "uninstall", "--root", str(tmp_path)),
    ]
    for got in steps:
        assert got.returncode == 0, got.stderr
    paths = [p for got in steps for p in _printed_paths(got.stdout)]
    assert len(paths) >= 12, [got.stdout for got in steps]
    assert [p for p in paths if not p.startswith(f"{tmp_path}/")] == []
    assert f"wrote {tmp_path}/etc/systemd/system/portaudit.service" in steps[0].stdout
    assert f"removed {tmp_path}/var/lib/portaudit/counters/net-4026531840.json" in steps[2].stdout


def test_bad_root_is_one_line_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    got = cli("systemd", "install", "--root", str(blocker))
    assert got.returncode == 2
    assert got.stderr.startswith("portaudit: ")
    assert "Traceback" not in got.stderr
    assert len(got.stderr.strip().splitlines()) == 1


# --- where systemd runs --------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> None:
        self.calls.append(list(argv))


def test_with_systemd_running_it_uses_systemctl(tmp_path: Path) -> None:
    run = Recorder()
    command = units.Command(("/usr/bin/true",))
    done = units.install(tmp_path, command=command, run=run, booted=True)
    assert run.calls == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "portaudit.timer"],
    ]
    assert "ran systemctl enable --now portaudit.timer" in done
    assert not (tmp_path / UNIT_DIR / "timers.target.wants").exists()
    run.calls.clear()
    units.uninstall(tmp_path, run=run, booted=True)
    assert run.calls == [
        ["systemctl", "disable", "--now", "portaudit.timer"],
        ["systemctl", "daemon-reload"],
    ]


def test_systemd_running_only_for_the_live_root(tmp_path: Path) -> None:
    assert units.systemd_running(tmp_path) is False


# --- fitting ExecStart to the installation -------------------------------------------------


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_resolve_prefers_the_running_script(tmp_path: Path) -> None:
    script = executable(tmp_path / "venv/bin/portaudit")
    executable(tmp_path / "venv/bin/python3")
    got = units.resolve_command(
        argv0=str(script),
        executable=str(tmp_path / "venv/bin/python3"),
        package_parent=tmp_path / "venv/lib/site-packages",
        installed=True,
    )
    assert got.argv == (str(script),)
    assert got.environment == {}


def test_resolve_finds_the_script_next_to_the_interpreter(tmp_path: Path) -> None:
    script = executable(tmp_path / "venv/bin/portaudit")
    got = units.resolve_command(
        argv0="/somewhere/auditor/__main__.py",
        executable=str(tmp_path / "venv/bin/python3"),
        package_parent=tmp_path / "venv/lib/site-packages",
        installed=True,
    )
    assert got.argv == (str(script),)


def test_source_tree_ignores_an_installed_script(tmp_path: Path) -> None:
    """From a checkout, the script next to python is some earlier pip install, not this code."""
    executable(tmp_path / "venv/bin/portaudit")
    got = units.resolve_command(
        argv0=str(tmp_path / "src/auditor/__main__.py"),
        executable=str(tmp_path / "venv/bin/python3"),
        package_parent=tmp_path / "src",
        installed=False,
    )
    assert got.argv == (str(tmp_path / "venv/bin/python3"), "-m", "auditor")
    assert got.environment == {"PYTHONPATH": str(tmp_path / "src")}


def test_this_checkout_resolves_to_itself() -> None:
    got = units.resolve_command(argv0=str(REPO / "auditor" / "__main__.py"))
    assert got.argv == (sys.executable, "-m", "auditor")
    assert got.environment == {"PYTHONPATH": str(REPO)}


def test_install_refuses_a_portaudit_the_sandbox_hides() -> None:
    # The live root: refused before anything is written (so this touches nothing on the host).
    with pytest.raises(UsageError, match="PrivateTmp"):
        units.install(Path("/"), command=units.Command(("/tmp/venv/bin/portaudit",)))


def test_staging_into_another_root_warns_about_a_hidden_portaudit(tmp_path: Path) -> None:
    done = units.install(
        tmp_path, enable=False, command=units.Command(("/tmp/venv/bin/portaudit",)), booted=False
    )
    assert any(line.startswith("warning: ") and "PrivateTmp" in line for line in done)
    assert (tmp_path / UNIT_DIR / "portaudit.service").is_file()


def test_home_installation_keeps_home_readable() -> None:
    template = (REPO / "systemd" / "portaudit.service").read_text()
    text = units.render_service(template, units.Command(("/home/ops/.venv/bin/portaudit",)))
    assert "ProtectHome=read-only" in text.splitlines()
    assert "ProtectHome=yes" not in text.splitlines()
    plain = units.render_service(template, units.Command(("/usr/bin/portaudit",)))
    assert "ProtectHome=yes" in plain.splitlines()


@needs_analyze
@pytest.mark.parametrize(
    ("name", "breaks_unquoted"),
    [("port audit", True), ("50%n", True), ("a$b", False), ("plain", False)],
)
def test_odd_paths_survive_systemd_parsing(
    tmp_path: Path, name: str, breaks_unquoted: bool
) -> None:
    """The quoted ExecStart names the same file once systemd has parsed it."""
    script = executable(tmp_path / name / "portaudit")
    template = (REPO / "systemd" / "portaudit.service").read_text()
    unit = tmp_path / "portaudit.service"
    unit.write_text(units.render_service(template, units.Command((str(script),))))
    verify(unit)  # fails with "Command ... is not executable" if the path came out wrong
    if breaks_unquoted:
        # The check above can fail: written raw, systemd splits at the space or expands %n.
        broken = tmp_path / "broken.service"
        quoted = units.systemd_quote(str(script), program=True)
        broken.write_text(unit.read_text().replace(quoted, str(script)))
        assert analyze is not None
        got = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True)
        assert got.returncode != 0 and "not executable" in got.stderr, got.stderr


@pytest.mark.parametrize("bad", ['/opt/q"uote/portaudit', "/opt/back\\slash/portaudit"])
def test_paths_systemd_cannot_start_are_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="systemd cannot start"):
        units.render_service(
            (REPO / "systemd" / "portaudit.service").read_text(), units.Command((bad,))
        )


def test_quote_refuses_line_breaks() -> None:
    with pytest.raises(UsageError):
        units.systemd_quote("/opt/a\nb/portaudit")


def test_unit_text_is_valid_ini_for_other_tools(installed: Path) -> None:
    """Config-management tools read units as INI; duplicate keys must not break that."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(installed / UNIT_DIR / "portaudit.timer")
    assert parser["Timer"]["OnUnitActiveSec"] == "5min"


# --- from a wheel --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """portaudit installed from its wheel into a --target dir, away from this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    build = ["wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (whl,) = out.glob("portaudit-*.whl")
    target = out / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(whl)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def test_wheel_ships_the_unit_templates(installed_wheel: Path, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(installed_wheel), "PYTHONNOUSERSITE": "1"}
    code = (
        "from auditor import units; import auditor; "
        "print(auditor.__file__); print(units._template('portaudit.timer'))"
    )
    got = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith(str(installed_wheel))
    assert "OnUnitActiveSec=5min" in got.stdout
    # Staging units from there into another root works, with a warning: the unit's
    # PrivateTmp=yes would hide a /tmp install on a live system (where it is refused).
    root = tmp_path / "root"
    root.mkdir()
    script = str(installed_wheel / "bin" / "portaudit")
    staged = subprocess.run(
        [sys.executable, script, "systemd", "install", "--root", str(root), "--no-enable"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert staged.returncode == 0, staged.stdout + staged.stderr
    assert "warning: " in staged.stdout and "PrivateTmp" in staged.stdout
    assert f"ExecStart runs {script}" in staged.stdout
    assert (root / "etc/systemd/system/portaudit.service").is_file()


def test_a_masked_unit_is_refused_and_left_masked(tmp_path: Path) -> None:
    """`systemctl mask` links the unit to /dev/null: writing through the link would replace the
    host's /dev/null with the unit file. Install refuses it, uninstall leaves it."""
    unit_dir = tmp_path / UNIT_DIR
    unit_dir.mkdir(parents=True)
    (unit_dir / "portaudit.timer").symlink_to("/dev/null")
    got = cli("systemd", "install", "--root", str(tmp_path), "--no-enable")
    assert got.returncode == 2
    assert "portaudit.timer is masked" in got.stderr and "unmask" in got.stderr
    assert len(got.stderr.strip().splitlines()) == 1
    assert os.readlink(unit_dir / "portaudit.timer") == "/dev/null"
    assert os.stat("/dev/null").st_rdev == os.makedev(1, 3)
    gone = cli("systemd", "uninstall", "--root", str(tmp_path))
    assert gone.returncode == 0, gone.stderr
    assert f"left {unit_dir}/portaudit.timer: masked" in gone.stdout
    assert os.readlink(unit_dir / "portaudit.timer") == "/dev/null"


def test_a_unit_linked_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.service"
    outside.write_text("[Unit]\n")
    root = tmp_path / "root"
    (root / UNIT_DIR).mkdir(parents=True)
    (root / UNIT_DIR / "portaudit.service").symlink_to(outside)
    got = cli("systemd", "install", "--root", str(root), "--no-enable")
    assert got.returncode == 2
    assert "symbolic link" in got.stderr
    assert outside.read_text() == "[Unit]\n"


def test_install_into_another_root_checks_that_execstart_exists_there(tmp_path: Path) -> None:
    """An image staged from an installation outside it names a program the image lacks."""
    command = units.Command(("/opt/portaudit-venv/bin/portaudit",))
    done = units.install(tmp_path, command=command, booted=False)
    assert any("/opt/portaudit-venv/bin/portaudit does not exist under" in line for line in done), (
        done
    )
    program = tmp_path / "opt/portaudit-venv/bin/portaudit"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    again = units.install(tmp_path, command=command, booted=False)
    assert not any("does not exist" in line for line in again), again


def test_cli_install_into_another_root_says_execstart_is_missing(tmp_path: Path) -> None:
    got = cli("systemd", "install", "--root", str(tmp_path))
    assert got.returncode == 0, got.stderr
    assert "does not exist under" in got.stdout


def test_uninstall_does_not_follow_a_linked_textfile_dir(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "portaudit.prom").write_text("keep\n")
    root = tmp_path / "root"
    (root / "var/lib/prometheus").mkdir(parents=True)
    (root / "var/lib/prometheus/node-exporter").symlink_to(outside)
    done = units.uninstall(root, booted=False)
    assert any("symbolic link" in line for line in done), done
    assert (outside / "portaudit.prom").read_text() == "keep\n"
