"""`fix` and `rollback` against the real kernel, inside network namespaces the tests make.

Runtime writes happen only inside the test namespace and only to per-netns keys; config files
live under a temp `--root`. Every portaudit run here is a subprocess in the namespace, so no
write from this test process can reach the host's /proc/sys.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from tests.netns import Netns, make_netns, requires_netns

SERVER_PORT = 5000  # outside the test range, so the listener does not take one of its ports
RANGE = "net.ipv4.ip_local_port_range"
REUSE = "net.ipv4.tcp_tw_reuse"
DROPIN = "etc/sysctl.d/99-zz-portaudit.conf"
ORIGINAL = (
    "# site settings\nnet.ipv4.ip_local_port_range = 40000 40099\nnet.ipv4.tcp_tw_reuse = 0\n"
)

pytestmark = [requires_netns, pytest.mark.netns]


def exhaust(ns: Netns) -> dict[str, object]:
    run = ns.python("-m", "tests.workloads.exhaust", "--port", str(SERVER_PORT), "--max", "300")
    result: dict[str, object] = json.loads(run.stdout)
    return result


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file (bytes) and link (target) under root/etc."""
    out: dict[str, bytes | str] = {}
    for p in sorted((root / "etc").rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def test_fix_ends_real_eaddrnotavail_and_rollback_restores(tmp_path: Path) -> None:
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    (tmp_path / "etc/sysctl.d/10-site.conf").write_text(ORIGINAL)
    original_tree = tree(tmp_path)
    with make_netns("pa-fix") as ns:
        ns.sysctl_write(RANGE, "40000 40099")
        ns.sysctl_write(REUSE, "0")  # default 2 would recycle loopback ports
        first = exhaust(ns)
        assert first["eaddrnotavail"] is True and first["connected"] == 100, first

        args = ("--root", str(tmp_path), "--proc", "/proc")
        dry = ns.portaudit("fix", "--dry-run", "--for-host", "--only", "EPH-001", *args)
        assert dry.returncode == 0, dry.stderr
        assert f"+++ {tmp_path}/etc/sysctl.d/99-zz-portaudit.conf" in dry.stdout  # under --root
        assert "[per-netns]" in dry.stdout
        assert ns.sysctl_read(RANGE) == "40000 40099"
        assert tree(tmp_path) == original_tree

        # --for-host: this test namespace stands for a host whose root is tmp_path
        done = ns.portaudit("fix", "--yes", "--for-host", "--only", "EPH-001", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        new = ns.sysctl_read(RANGE)
        low, high = (int(x) for x in new.split())
        assert high - low + 1 > 10_000, new
        dropin = (tmp_path / DROPIN).read_text()
        assert f"{RANGE} = {low} {high}" in dropin and "portaudit fix (EPH-001)" in dropin
        assert (tmp_path / "etc/sysctl.d/10-site.conf").read_text() == ORIGINAL

        # the same workload, with the 100 TIME_WAIT sockets of the first run still there
        second = exhaust(ns)
        assert second["eaddrnotavail"] is False and second["connected"] == 300, second

        again = ns.portaudit("fix", "--yes", "--for-host", "--only", "EPH-001", *args)
        assert again.returncode == 0, again.stderr
        assert "nothing to do" in again.stdout or "no failing finding" in again.stdout
        assert (tmp_path / DROPIN).read_text() == dropin

        back = ns.portaudit("rollback", "--yes", *args)
        assert back.returncode == 0, back.stdout + back.stderr
        assert ns.sysctl_read(RANGE) == "40000 40099"
        assert tree(tmp_path) == original_tree

        twice = ns.portaudit("rollback", "--yes", *args)
        assert twice.returncode == 0 and "nothing to roll back" in twice.stdout
        assert ns.sysctl_read(RANGE) == "40000 40099"


DRIVER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from auditor.errors import FixError
    from auditor.fix.apply import apply_plan
    from auditor.fix.plan import FileEdit, KeyChange, Plan
    from auditor.hostfs import HostRoot

    root = Path(sys.argv[1])
    host = HostRoot(proc=Path("/proc"), root=root)
    dropin = root / "etc/sysctl.d/99-zz-portaudit.conf"
    changes = (
        KeyChange("net.ipv4.tcp_tw_reuse", "1", "0", None, "", "", True, ("TW-001",), True),
        KeyChange("net.ipv4.ip_local_port_range", sys.argv[2], "40000 40099", None, "",
                  "/etc/sysctl.d/99-zz-portaudit.conf", True, ("EPH-001",), True),
    )
    edit = FileEdit("/etc/sysctl.d/99-zz-portaudit.conf", dropin, dropin.read_bytes(),
                    dropin.read_bytes() + b"net.ipv4.ip_local_port_range = " +
                    sys.argv[2].encode() + b"\\n")
    try:
        apply_plan(host, Plan(changes, (edit,)))
    except FixError as exc:
        print(json.dumps({"code": exc.exit_code, "message": str(exc)}))
    else:
        print(json.dumps({"code": 0}))
    """
)


def test_value_refused_by_kernel_restores_earlier_runtime_write(tmp_path: Path) -> None:
    """A plan built by hand (validation would refuse it) so the kernel itself says EINVAL."""
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    (tmp_path / DROPIN).write_text("# mine\n")
    before = tree(tmp_path)
    with make_netns("pa-einval") as ns:
        ns.sysctl_write(RANGE, "40000 40099")
        ns.sysctl_write(REUSE, "0")
        run = ns.python("-c", DRIVER, str(tmp_path), "500 600")  # below unprivileged start 1024
        out = json.loads(run.stdout)
        assert out["code"] == 3, out
        assert "kernel refused '500 600'" in out["message"]
        assert "restored" in out["message"]
        assert ns.sysctl_read(REUSE) == "0"
        assert ns.sysctl_read(RANGE) == "40000 40099"
    assert tree(tmp_path) == before


READ_ONLY = textwrap.dedent(
    """
    import subprocess, sys
    d = sys.argv[1]
    subprocess.run(["mount", "--bind", d, d], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", d], check=True)
    sys.argv = ["portaudit", *sys.argv[2:]]
    from auditor.cli import main
    main()
    """
)


def test_read_only_sysctl_dir_restores_runtime(tmp_path: Path) -> None:
    """/etc/sysctl.d read-only (a bind mount in a private mount namespace): root ignores
    mode bits, so chmod 0555 would not stop the write."""
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    (tmp_path / DROPIN).write_text("net.core.somaxconn = 4096\n")
    before = tree(tmp_path)
    with make_netns("pa-ro") as ns:
        ns.sysctl_write(RANGE, "40000 40099")
        ns.sysctl_write(REUSE, "0")
        exhaust(ns)
        run = ns.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                sys.executable,
                "-c",
                READ_ONLY,
                str(tmp_path / "etc/sysctl.d"),
                "fix",
                "--yes",
                "--for-host",
                "--only",
                "EPH-001",
                "--root",
                str(tmp_path),
            ],
            check=False,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        assert run.returncode == 3, run.stdout + run.stderr
        assert "Read-only file system" in run.stderr
        assert "restored" in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1
        assert ns.sysctl_read(RANGE) == "40000 40099"
    assert tree(tmp_path) == before


SCOPE = textwrap.dedent(
    """
    import json
    from pathlib import Path
    from auditor.fix import netns
    from auditor.fix.keys import KEYS
    from auditor.hostfs import HostRoot
    host = HostRoot(proc=Path("/proc"), root=Path("/"))
    present = [k for k in KEYS if host.sysctl_path(k).exists()]
    print(json.dumps({"initial": netns.in_initial_netns(host),
                      "writable": {k: netns.writable(host, k) for k in present}}))
    """
)


def test_key_table_scope_matches_a_test_namespace() -> None:
    """`KEYS[k].per_netns` is what `fix` trusts before a runtime write: every `net.*` key the
    kernel shows in a fresh namespace is writable there exactly when the table calls it
    per-netns; keys outside `net.*` (`fs.file-max`) are writable everywhere but never per-netns."""
    from auditor.fix.keys import KEYS

    with make_netns("pa-scope") as ns:
        out = json.loads(ns.python("-c", SCOPE).stdout)
    assert out["initial"] is False
    writable = out["writable"]
    assert "net.ipv4.ip_local_port_range" in writable
    wrong = {k: w for k, w in writable.items() if k.startswith("net.") and w != KEYS[k].per_netns}
    assert wrong == {}
    assert [k for k in KEYS if not k.startswith("net.") and KEYS[k].per_netns] == []


GLOBAL = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from auditor.engine.report import Applicability, Finding, Fix, Severity
    from auditor.errors import AuditorError
    from auditor.fix.prepare import build_plan
    from auditor.hostfs import HostRoot

    host = HostRoot(proc=Path("/proc"), root=Path(sys.argv[1]))
    f = Finding("FD-002", "n", Severity.CRIT, "t", "s", "m", {},
                Fix({"fs.file-max": sys.argv[2]}, "a", Applicability.SAFE), ())
    try:
        plan = build_plan(host, [f], runtime=sys.argv[3] == "1", for_host=sys.argv[4] == "1")
    except AuditorError as exc:
        print(json.dumps({"code": exc.exit_code, "message": str(exc)}))
    else:
        print(json.dumps({"code": 0, "runtime": [c.write_runtime for c in plan.changes],
                          "files": [e.path for e in plan.files], "notes": plan.notes}))
    """
)


def test_global_key_refused_at_runtime_in_a_namespace(tmp_path: Path) -> None:
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    with make_netns("pa-global") as ns:
        current = int(ns.run(["cat", "/proc/sys/fs/file-max"]).stdout)
        other = str(current - 1)
        # as a container: a global key is the host's business, left out with a note
        left = json.loads(ns.python("-c", GLOBAL, str(tmp_path), other, "1", "0").stdout)
        assert left["code"] == 0 and left["runtime"] == [] and left["files"] == []
        assert any("fs.file-max is global: fix it on the host" in n for n in left["notes"])
        refused = json.loads(ns.python("-c", GLOBAL, str(tmp_path), other, "1", "1").stdout)
        assert refused["code"] == 2
        assert "fs.file-max is global" in refused["message"]
        persisted = json.loads(ns.python("-c", GLOBAL, str(tmp_path), other, "0", "1").stdout)
        assert persisted == {
            "code": 0,
            "runtime": [False],
            "files": ["/etc/sysctl.d/99-zz-portaudit.conf"],
            "notes": [],
        }
        assert int(ns.run(["cat", "/proc/sys/fs/file-max"]).stdout) == current
    assert not (tmp_path / DROPIN).exists()


def test_cli_refusals_exit_2_nothing_written(tmp_path: Path) -> None:
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    with make_netns("pa-cli") as ns:
        ns.sysctl_write(RANGE, "40000 40099")
        ns.sysctl_write(REUSE, "0")
        exhaust(ns)
        args = ("--root", str(tmp_path), "--only", "EPH-001")
        for bad in ("../../etc/passwd", "/proc/sys/net/ipv4/tcp_tw_reuse", "/etc/sysctl.d/a.txt"):
            run = ns.portaudit("fix", "--yes", "--file", bad, *args)
            assert run.returncode == 2, run.stdout + run.stderr
            assert run.stderr.startswith("portaudit: --file") and "Traceback" not in run.stderr
        # no terminal (stdin is not a tty under subprocess) and no --yes
        run = ns.portaudit("fix", *args, input="y\n")
        assert run.returncode == 2, run.stdout + run.stderr
        assert "no terminal" in run.stderr
        run = ns.portaudit("rollback", "--root", str(tmp_path))
        assert run.returncode == 0 and "nothing to roll back" in run.stdout
        assert ns.sysctl_read(RANGE) == "40000 40099"
    assert tree(tmp_path) == {}


def _on_pty(ns: Netns, args: list[str], answer: bytes) -> tuple[int, str]:
    """Run portaudit in the namespace with a pseudo-terminal as stdin, answering the prompt."""
    import subprocess
    import sys

    master, slave = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, sys.executable, "-m", "auditor", *args],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    os.close(slave)
    os.write(master, answer)
    out, _ = proc.communicate(timeout=60)
    os.close(master)
    return proc.returncode, out.decode()


def test_confirmation_on_a_terminal(tmp_path: Path) -> None:
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    with make_netns("pa-tty") as ns:
        ns.sysctl_write(RANGE, "40000 40099")
        ns.sysctl_write(REUSE, "0")
        exhaust(ns)
        args = ["fix", "--only", "EPH-001", "--root", str(tmp_path)]
        code, out = _on_pty(ns, args, b"n\n")
        assert code == 0 and "Apply these changes?" in out and "nothing changed" in out, out
        assert ns.sysctl_read(RANGE) == "40000 40099"
        assert tree(tmp_path) == {}
        code, out = _on_pty(ns, args, b"y\n")
        assert code == 0 and "applied" in out, out
        assert ns.sysctl_read(RANGE) != "40000 40099"
        code, out = _on_pty(ns, ["rollback", "--root", str(tmp_path)], b"y\n")
        assert code == 0 and "Roll back these changes?" in out, out
        assert ns.sysctl_read(RANGE) == "40000 40099"


def test_rollback_refused_from_another_namespace(tmp_path: Path) -> None:
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    with make_netns("pa-nsa") as a, make_netns("pa-nsb") as b:
        a.sysctl_write(RANGE, "40000 40099")
        a.sysctl_write(REUSE, "0")
        b.sysctl_write(RANGE, "40000 40099")
        exhaust(a)
        done = a.portaudit("fix", "--yes", "--only", "EPH-001", "--root", str(tmp_path))
        assert done.returncode == 0, done.stderr
        fixed = a.sysctl_read(RANGE)
        b.sysctl_write(RANGE, fixed)  # so b's value matches what fix left, except the netns
        other = b.portaudit("rollback", "--yes", "--root", str(tmp_path))
        assert other.returncode == 2 and "run rollback there" in other.stderr, other.stderr
        assert b.sysctl_read(RANGE) == fixed
        back = a.portaudit("rollback", "--yes", "--root", str(tmp_path))
        assert back.returncode == 0, back.stderr
        assert a.sysctl_read(RANGE) == "40000 40099"
