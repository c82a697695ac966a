"""What a plain `portaudit audit` loads and how it ends: the start-up cost is part of every run
from a timer, so the heavy modules stay off its path and the exit skips the teardown only when
that cannot be observed."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from pathlib import Path

import pytest

from auditor import auditcmd
from tests.helpers import ROOTS, root_args
from tests.netns import make_netns, requires_netns, workload

HEAVY = (
    "dataclasses", "inspect", "tabulate", "shutil", "socket", "yaml", "typer", "hashlib", "psutil",
)  # fmt: skip
"""Modules a plain audit of a host with findings does without (tabulate loads the first
four: the table is drawn by `auditor.render.tablelayout`; the listeners' processes are read
from /proc by `auditor.facts.process`, not psutil)."""


@pytest.mark.parametrize("fmt", ["json", "table"])
@pytest.mark.parametrize(
    ("tree", "also"),
    [("busy-client", ("ast",)), ("minimal", ("ast", "auditor.engine.prefilter"))],
)
def test_plain_audit_loads_none_of_the_heavy_modules(
    fmt: str, tree: str, also: tuple[str, ...], tmp_path: Path
) -> None:
    """The cached catalog's expressions are compiled from their stored trees, and the
    prefilter reads those trees: no parser on either path. `minimal` has no destination to
    judge, so the prefilter stays unloaded too."""
    unwanted = HEAVY + also
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['portaudit', 'audit', '--format', '{fmt}', '--no-state', '--fail-on',"
        f" 'never', *{root_args(ROOTS / tree)!r}]\n"
        "from auditor import auditcmd\n"
        "def report(code):\n"
        f"    print(sorted(m for m in {unwanted!r} if m in sys.modules), file=sys.stderr)\n"
        "    sys.exit(code)\n"
        "auditcmd.finish = report\n"
        "auditcmd.main()\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    for _ in range(2):  # the first run fills the rule cache, the second reads it
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "[]"
    assert "EPH-" in result.stdout or tree == "minimal"


LISTENER = r"""
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 8080)); s.listen(8)
print("ready", flush=True)
sys.stdin.read()
"""


@requires_netns
@pytest.mark.netns
def test_a_live_audit_of_a_host_with_a_listener_does_not_load_psutil() -> None:
    """Every real host listens somewhere, so its listeners' processes are always read: from
    /proc, not through psutil, whose import alone cost a third of an idle audit."""
    code = (
        "import sys\n"
        "sys.argv = ['portaudit', 'audit', '--format', 'json', '--no-state', '--fail-on',"
        " 'never', '--only', 'FD-003']\n"
        "from auditor import auditcmd\n"
        "def report(code):\n"
        "    print(sorted(m for m in ('psutil', 'auditor.facts.process') if m in sys.modules),"
        " file=sys.stderr)\n"
        "    sys.exit(code)\n"
        "auditcmd.finish = report\n"
        "auditcmd.main()\n"
    )
    with make_netns("pa-start") as ns, workload(ns, LISTENER):
        result = ns.python("-c", code, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "['auditor.facts.process']"


def test_finish_exits_at_once_only_when_nothing_is_registered_for_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hard: list[int] = []

    def fake_exit(code: int) -> None:
        hard.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    ran: list[bool] = []
    callback = atexit.register(lambda: ran.append(True))
    try:
        with pytest.raises(SystemExit) as exc:
            auditcmd.finish(1)
        assert exc.value.code == 1 and hard == []  # the usual exit: the callback will run
    finally:
        atexit.unregister(callback)
    if atexit._ncallbacks() == 0:
        with pytest.raises(SystemExit):
            auditcmd.finish(1)
        assert hard == [1]


def test_console_entry_exit_code_and_output_unchanged(tmp_path: Path) -> None:
    out = os.path.join(tmp_path, "report.json")
    args = [*root_args(ROOTS / "busy-client"), "--no-state"]
    piped = subprocess.run(
        [sys.executable, "-m", "auditor", "audit", *args, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    to_file = subprocess.run(
        [sys.executable, "-m", "auditor", "audit", *args, "--format", "json", "-o", out],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert piped.returncode == to_file.returncode == 1  # busy-client has warn/crit findings
    with open(out) as fh:
        assert fh.read() == piped.stdout
