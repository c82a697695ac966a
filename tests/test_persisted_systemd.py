"""Cross-check the boot model against the real `systemd-sysctl` on every fixture root.

systemd-sysctl (v252) has no `--root`, so each check runs tests/sysctl_ns.py under
`unshare --mount`: in that private mount namespace the fixture's directories are bind-mounted
over /etc/sysctl.d, /run/sysctl.d, /usr/local/lib/sysctl.d, /usr/lib/sysctl.d and
/etc/sysctl.conf, and the mounts vanish with the process. The apply check adds `--net`, so
`/proc/sys/net` is a fresh namespace's own; the fixtures hold only `net.*` keys and the runner
refuses anything else, so nothing reaches the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from auditor.facts.model import PersistedSysctl
from auditor.facts.persisted import boot_files, collect_persisted, effective
from auditor.hostfs import HostRoot

FIXTURES = Path(__file__).parent / "fixtures" / "persist"
RUNNER = Path(__file__).parent / "sysctl_ns.py"
SYSTEMD_SYSCTL = "/lib/systemd/systemd-sysctl"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
PROBE_KEYS = (
    "net.core.somaxconn",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.default.rp_filter",
    "net.ipv4.conf.lo.rp_filter",
    "net.ipv4.conf.all.accept_local",
    "net.ipv4.conf.lo.accept_local",
)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for unshare --mount/--net"
    if not Path(SYSTEMD_SYSCTL).exists():
        return f"{SYSTEMD_SYSCTL} is not installed"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "needs util-linux unshare and mount"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def run_in_ns(mode: str, case: str, *keys: str) -> dict[str, Any]:
    flags = ["--mount"] + (["--net"] if mode == "apply" else [])
    argv = [
        "unshare",
        *flags,
        sys.executable,
        str(RUNNER),
        mode,
        str(FIXTURES / case),
        os.readlink("/proc/self/ns/mnt"),
        os.readlink("/proc/self/ns/net"),
        *keys,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def model(case: str) -> PersistedSysctl:
    got = collect_persisted(HostRoot(proc=FIXTURES / "no-proc", root=FIXTURES / case))
    assert isinstance(got, PersistedSysctl)
    return got


def cat_headers(stdout: str) -> list[str]:
    return [line[2:] for line in stdout.splitlines() if line.startswith("# /")]


@pytest.mark.parametrize("case", [c for c in CASES if c != "dangling"])
def test_cat_config_lists_the_same_files_in_the_same_order(case: str) -> None:
    got = run_in_ns("cat", case)
    assert got["rc"] == 0, got["stderr"]
    files = boot_files(HostRoot(proc=FIXTURES / "no-proc", root=FIXTURES / case))
    # --cat-config lists masked files too (as empty ones): it prints what it opens
    headers = [h.split(" ", 1)[0] for h in cat_headers(got["stdout"])]
    # a file whose own first line is a comment starting with "# /" adds a header-like line
    headers = [h for h in headers if h.startswith(("/etc/sysctl.d/", "/run/", "/usr/"))]
    assert headers == [f.host_path for f in files]


def test_cat_config_fails_on_a_dangling_link_that_boot_skips() -> None:
    """systemd's cat stops at a dangling link, while boot skips it (ignore_enoent)."""
    got = run_in_ns("cat", "dangling")
    assert got["rc"] != 0
    assert "50-vendor.conf" in got["stderr"]


@pytest.mark.parametrize("case", CASES)
def test_systemd_sysctl_applies_what_the_model_predicts(case: str) -> None:
    got = run_in_ns("apply", case, *PROBE_KEYS)
    before, after = got["before"], got["values"]
    p = model(case)
    checked = 0
    for key in PROBE_KEYS:
        a = effective(p, key)
        if a is None:
            assert after[key] == before[key], f"{case}: {key} should be left alone"
        elif a.problem is None:
            assert after[key] == " ".join(a.value.split()), f"{case}: {key} from {a.file}:{a.line}"
        else:
            continue
        checked += 1
    assert checked >= 8


def test_problem_lines_behave_as_reported() -> None:
    """What the kernel does with the lines CFG-005 reports (measured, kernel 6.x)."""
    got = run_in_ns("apply", "problems", *PROBE_KEYS)
    before, after = got["before"], got["values"]
    # quoted value: written with its quotes, rejected with EINVAL: lost at boot
    assert after["net.core.somaxconn"] == before["net.core.somaxconn"]
    assert "Invalid argument" in got["stderr"]
    # BOM: the first key becomes "\ufeffnet/ipv4/tcp_fin_timeout", which does not exist
    assert after["net.ipv4.tcp_fin_timeout"] == before["net.ipv4.tcp_fin_timeout"]
    # no '=': ignored with a warning
    assert after["net.ipv4.tcp_syncookies"] == before["net.ipv4.tcp_syncookies"]
    # inline comment on an integer: the kernel parses the leading number and ignores the rest,
    # so "1 # enable reuse" happens to work; the line is still reported, since on a string or
    # vector value the comment is written into the setting
    assert after["net.ipv4.tcp_tw_reuse"] == "1"
    # slash form, odd spacing and a tab inside the value: applied
    assert after["net.ipv4.ip_local_port_range"] == "20000 30000"
