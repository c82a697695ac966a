"""TW-003 reads the boot files: what `portaudit fix` does with each kind of finding.

The scenarios (tests/scenarios/TW-003/) pin the findings; these run the CLI over the same
trees to prove the fix side: on a kernel without tcp_tw_recycle the finding carries no sysctl
to write (writing it would fail, and persisting it would add a line the kernel rejects), while
on an old kernel the fix persists 0 over the file line that turns it on.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import root_args, run_cli
from tests.scenario import SCENARIOS, build_tree, load_scenario


def _tree(case: str, tmp_path: Path) -> Path:
    return build_tree(load_scenario(SCENARIOS / "TW-003" / f"{case}.yaml"), tmp_path / "host")


def _tw003(root: Path) -> list[dict[str, object]]:
    out = run_cli(
        "audit", *root_args(root), "--only", "TW-003", "--format", "json", "--fail-on", "never"
    )
    assert out.returncode == 0, out.stderr
    return [f for f in json.loads(out.stdout)["findings"] if f["id"] == "TW-003"]


def test_modern_kernel_finding_has_no_runtime_fix(tmp_path: Path) -> None:
    root = _tree("fires-file-modern-kernel", tmp_path)
    (finding,) = _tw003(root)
    assert finding["fix"]["sysctl"] == {}  # type: ignore[index]
    before = (root / "etc/sysctl.d/90-tuning.conf").read_text()
    out = run_cli("fix", *root_args(root), "--only", "TW-003", "--dry-run")
    # a failing rule fix cannot apply: said, with where to read the advice, and exit 1
    assert out.returncode == 1, out.stderr
    assert "left out: TW-003: no sysctl fix (advice only)" in out.stdout
    assert "Traceback" not in out.stderr
    assert (root / "etc/sysctl.d/90-tuning.conf").read_text() == before
    assert not (root / "etc/sysctl.d/99-zz-portaudit.conf").exists()


def test_old_kernel_fix_persists_zero_over_the_file_line(tmp_path: Path) -> None:
    root = _tree("fires-next-boot-old-kernel", tmp_path)
    (finding,) = _tw003(root)
    assert finding["fix"]["sysctl"] == {"net.ipv4.tcp_tw_recycle": "0"}  # type: ignore[index]
    out = run_cli("fix", *root_args(root), "--only", "TW-003", "--yes")
    assert out.returncode == 0, out.stderr
    assert _tw003(root) == []  # boot now applies 0: the later portaudit file decides it
