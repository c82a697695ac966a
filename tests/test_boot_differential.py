"""The boot model against the real systemd-sysctl, value by value, on 200 generated trees.

Each tree (tests/boot_trees.py) is applied by the installed systemd-sysctl inside a private
mount namespace and a fresh network namespace (tests/boot_ns.py), and every probed key's value
afterwards is compared with what `boot_view(tree).decide(key, initial=before)` predicts. The
keys are all per-network-namespace, so the host is never written.
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

from auditor.hostfs import HostRoot
from auditor.sysctl.boot import boot_view
from auditor.sysctl.tree import SysctlTree
from tests.boot_trees import PROBE_KEYS, Entry, generate, must_be_net_only

RUNNER = Path(__file__).parent / "boot_ns.py"
SYSTEMD_SYSCTL = "/usr/lib/systemd/systemd-sysctl"
TREES = 200


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for unshare --mount/--net"
    if not Path(SYSTEMD_SYSCTL).exists():
        return f"{SYSTEMD_SYSCTL} is not installed"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "needs util-linux unshare and mount"
    if not Path("/etc/sysctl.conf").is_file():
        return "needs an /etc/sysctl.conf to bind a scratch file over"
    return None


pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
]


def write_tree(root: Path, tree: dict[str, Entry]) -> None:
    for d in ("etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d", "usr/lib/sysctl.d"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for path, entry in tree.items():
        dst = root / path.lstrip("/")
        if isinstance(entry, bytes):
            dst.write_bytes(entry)
        else:
            dst.unlink(missing_ok=True)
            os.symlink(entry[1], dst)


def predict(root: Path, before: dict[str, str]) -> dict[str, str]:
    model = boot_view(SysctlTree.read(HostRoot(proc=root / "no-proc", root=root)))
    out = {}
    for key in PROBE_KEYS:
        d = model.decide(key, initial=before)
        out[key] = before[key] if d is None else " ".join(d.value.split())
    return out


def run_trees(trees: Path, mode: str = "batch") -> dict[str, Any]:
    argv = [
        "unshare",
        "--mount",
        sys.executable,
        str(RUNNER),
        mode,
        str(trees),
        os.readlink("/proc/self/ns/mnt"),
        os.readlink("/proc/self/ns/net"),
        *PROBE_KEYS,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    results: dict[str, Any] = json.loads(out.stdout)
    return results


def test_model_equals_systemd_sysctl_on_generated_trees(tmp_path: Path) -> None:
    trees = tmp_path / "trees"
    for seed in range(TREES):
        tree = generate(seed)
        must_be_net_only(tree)
        write_tree(trees / str(seed), tree)
    results = run_trees(trees)
    assert len(results) == TREES
    compared = agreed = 0
    disagreements = []
    for seed, got in sorted(results.items(), key=lambda kv: int(kv[0])):
        want = predict(trees / seed, got["before"])
        for key in PROBE_KEYS:
            compared += 1
            if want[key] == got["after"][key]:
                agreed += 1
            else:
                disagreements.append(
                    f"tree {seed}: {key}: model {want[key]!r}, systemd-sysctl"
                    f" {got['after'][key]!r} (before {got['before'][key]!r})"
                )
    print(f"boot model vs systemd-sysctl: {agreed}/{compared} values agree on {TREES} trees")
    assert not disagreements, "\n".join(disagreements[:20])
    assert compared == TREES * len(PROBE_KEYS)


SYSTEMD_50_DEFAULT = (
    b"net.ipv4.conf.default.rp_filter = 2\n"
    b"net.ipv4.conf.*.rp_filter = 2\n"
    b"-net.ipv4.conf.all.rp_filter\n"
)


@pytest.mark.parametrize("lo_file", ["10-lo.conf", "60-lo.conf"])
def test_cfg001_quiet_on_a_freshly_booted_namespace_with_50_default_and_a_lo_line(
    tmp_path: Path, lo_file: str
) -> None:
    """systemd's 50-default.conf plus `net.ipv4.conf.lo.rp_filter = 0`, booted for real: whether
    the lo line comes before or after default's, the audit finds no drift."""
    tree: dict[str, Entry] = {
        "/usr/lib/sysctl.d/50-default.conf": SYSTEMD_50_DEFAULT,
        f"/etc/sysctl.d/{lo_file}": b"net.ipv4.conf.lo.rp_filter = 0\n",
    }
    write_tree(tmp_path / "trees" / "0", tree)
    got = run_trees(tmp_path / "trees", "batch-audit")["0"]
    assert got["after"]["net.ipv4.conf.default.rp_filter"] == "2"
    report = json.loads(got["audit"])
    assert [f for f in report["findings"] if f["id"] == "CFG-001"] == [], got["audit"]
