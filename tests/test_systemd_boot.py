"""The units under a real systemd: a Debian 12 image booted with `systemd-nspawn -b`.

The image comes from the Debian package registry (debootstrap, cached in pytest's cache dir);
portaudit and its dependencies are wheels built on this host and installed into a venv in the
image. The container boots with `--volatile=overlay`, so every run starts from the same image
and nothing it writes survives. Commands run inside with `nsenter` into the container's PID 1:
install the units, start the service, and check the textfile, the journal lines and the exit
status, as the timer would leave them. Skipped, with the reason, where the machine cannot
debootstrap or boot a container (no root, no systemd-nspawn, no network, a sandboxed kernel).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv"
BOOT_TIMEOUT = 120.0
TEXTFILE = "/var/lib/prometheus/node-exporter/portaudit.prom"


def _tools_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root for debootstrap and systemd-nspawn"
    for tool, package in (
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("nsenter", "util-linux"),
    ):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian package '{package}')"
    return None


pytestmark = pytest.mark.skipif(_tools_missing() is not None, reason=_tools_missing() or "")


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> Path:
    """A minimal Debian 12 tree with systemd and python3, debootstrapped once and cached."""
    cache = Path(request.config.cache.mkdir("nspawn-image"))
    tree = cache / SUITE
    if (tree / "usr/lib/systemd/systemd").exists() and (tree / "usr/bin/python3").exists():
        return tree
    partial = cache / f"{SUITE}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    got = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(partial),
         "http://deb.debian.org/debian"],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    if got.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        pytest.skip(f"cannot debootstrap {SUITE}: {_last_line(got.stdout + got.stderr)}")
    partial.rename(tree)
    return tree


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """portaudit and every dependency as wheels, built on this host for the image's Python."""
    out = tmp_path_factory.mktemp("wheels")
    got = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "-q", "-w", str(out),
         str(REPO)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if got.returncode != 0:
        pytest.skip(f"cannot build wheels: {_last_line(got.stderr)}")
    return out


class Container:
    """A booted container; `run` executes argv in all of its namespaces (never a shell string)."""

    def __init__(self, leader: int) -> None:
        self.leader = leader

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        return subprocess.run(
            ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "--", *argv],
            capture_output=True, text=True, timeout=timeout, env=env, check=False,
        )  # fmt: skip


def _child_systemd(parent: int) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == parent and comm == "systemd":
            return int(entry)
    return None


@pytest.fixture(scope="module")
def booted(
    image: Path, wheels: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    name = f"pa-{uuid.uuid4().hex[:8]}"
    console = tmp_path_factory.mktemp("nspawn") / "console.log"
    # --register=no --keep-unit: no machined or system bus needed on this side.
    with open(console, "w") as log:
        proc = subprocess.Popen(
            ["systemd-nspawn", "-q", "-D", str(image), "-M", name, "-b", "--volatile=overlay",
             "--register=no", "--keep-unit", "--bind-ro", f"{wheels}:/wheels"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        leader = None
        while leader is None and proc.poll() is None and time.monotonic() < deadline:
            leader = _child_systemd(proc.pid)
            time.sleep(0.5)
        if leader is None:
            out = console.read_text(errors="replace")
            pytest.skip(f"this machine cannot boot a container: {_last_line(out)}")
        box = Container(leader)
        state = box.run("systemctl", "is-system-running", "--wait", timeout=BOOT_TIMEOUT)
        if state.stdout.strip() not in ("running", "degraded"):
            pytest.skip(f"the container's systemd did not come up: {_last_line(state.stdout)}")
        yield box
    finally:
        if proc.poll() is None:
            proc.terminate()  # nspawn asks the container's systemd to power off
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture(scope="module")
def installed(booted: Container) -> Container:
    for argv in (
        ("python3", "-m", "venv", "/opt/portaudit"),
        ("/opt/portaudit/bin/pip", "install", "-q", "--no-index", "--find-links", "/wheels",
         "portaudit"),
        ("/opt/portaudit/bin/portaudit", "systemd", "install"),
    ):  # fmt: skip
        got = booted.run(*argv, timeout=600)
        assert got.returncode == 0, (argv, got.stdout, got.stderr)
    return booted


def journal_lines(box: Container) -> list[tuple[str, str]]:
    """(priority, message) of the lines portaudit itself logged, oldest first."""
    got = box.run("journalctl", "-u", "portaudit.service", "-o", "json", "--no-pager")
    out = []
    for line in got.stdout.splitlines():
        entry = json.loads(line)
        if entry.get("SYSLOG_IDENTIFIER") == "portaudit":
            out.append((str(entry.get("PRIORITY")), str(entry.get("MESSAGE"))))
    return out


def test_timer_is_enabled_and_active(installed: Container) -> None:
    got = installed.run("systemctl", "is-active", "portaudit.timer")
    assert got.stdout.strip() == "active", got.stdout + got.stderr
    got = installed.run("systemctl", "is-enabled", "portaudit.timer")
    assert got.stdout.strip() == "enabled", got.stdout + got.stderr


def test_service_writes_the_textfile_and_journal_lines(installed: Container) -> None:
    start = installed.run("systemctl", "start", "portaudit.service", timeout=180)
    assert start.returncode == 0, start.stderr
    status = installed.run(
        "systemctl", "show", "-p", "ExecMainStatus", "-p", "Result", "portaudit.service"
    )
    props = dict(line.split("=", 1) for line in status.stdout.splitlines() if "=" in line)
    assert props["Result"] == "success", status.stdout
    assert props["ExecMainStatus"] in ("0", "1"), status.stdout  # 1: findings, by design
    text = installed.run("cat", TEXTFILE)
    assert text.returncode == 0, text.stderr
    assert "portaudit_" in text.stdout
    listing = installed.run("ls", "-A", str(Path(TEXTFILE).parent))
    assert listing.stdout.split() == ["portaudit.prom"], listing.stdout  # no temp file left
    lines = journal_lines(installed)
    assert any(msg.startswith("portaudit: ") and " crit, " in msg for _, msg in lines), lines
    assert not any("internal error" in msg or "Traceback" in msg for _, msg in lines), lines


def test_missing_textfile_directory_is_portaudits_own_error(installed: Container) -> None:
    """With ReadWritePaths=-, systemd starts the service and portaudit says it cannot write."""
    installed.run("mv", str(Path(TEXTFILE).parent), "/var/lib/prometheus/moved")
    try:
        installed.run("systemctl", "start", "portaudit.service", timeout=180)
        status = installed.run("systemctl", "show", "-p", "ExecMainStatus", "portaudit.service")
        assert status.stdout.strip() == "ExecMainStatus=2", status.stdout
        lines = journal_lines(installed)
        assert not any("226/NAMESPACE" in msg for _, msg in lines), lines
        # An error is logged at priority err (3), like a crit finding.
        assert any(p == "3" and "cannot write" in msg for p, msg in lines[-6:]), lines
    finally:
        installed.run("mv", "/var/lib/prometheus/moved", str(Path(TEXTFILE).parent))
