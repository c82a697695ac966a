"""Malformed rule files: exit 2, one line naming file:line, no traceback, no Python object built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from auditor.engine.load import load_rule_file, load_rules
from auditor.errors import InputError

REPO = Path(__file__).resolve().parent.parent
GOOD = """\
id: TST-001
name: test-rule
title: A test rule
rationale: Exists to be broken.
for_each: destinations
params: {warn_ratio: 0.7}
severity:
  warn: dest.ratio > params.warn_ratio
subject: "{dest.src} -> {dest.dst}:{dest.dport}"
message: "{dest.used} used"
fix:
  sysctl: {net.ipv4.ip_local_port_range: "10000 65535"}
  advice: Widen the range.
  applicability: safe
sources: [https://docs.kernel.org/networking/ip-sysctl.html]
"""


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditor", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def write(tmp_path: Path, text: str, name: str = "TST-001.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_rule_loads(tmp_path: Path) -> None:
    rule = load_rule_file(write(tmp_path, GOOD))
    assert rule.id == "TST-001" and rule.for_each == "destinations"
    assert [str(s) for s, _ in rule.severity] == ["warn"]


@pytest.mark.parametrize(
    ("old", "new", "line", "words"),
    [
        (
            "  warn: dest.ratio > params.warn_ratio",
            "  warn: dest.ratio > params.warn_ratio: [",
            8,
            "yaml",
        ),
        (
            "  warn: dest.ratio > params.warn_ratio",
            "  warn: dest.rati > params.warn_ratio",
            8,
            "unknown name 'dest.rati'",
        ),
        (
            "  warn: dest.ratio > params.warn_ratio",
            "  warn: dest.ratio > params.crit_ratio",
            8,
            "unknown name 'params.crit_ratio'",
        ),
        (
            "  warn: dest.ratio > params.warn_ratio",
            "  warn: dest.ratio.__class__",
            8,
            "may not start with '_'",
        ),
        (
            "  warn: dest.ratio > params.warn_ratio",
            "  urgent: dest.ratio > 1",
            8,
            "unknown severity 'urgent'",
        ),
        ("title: A test rule", "title: A test rule\ncolour: red", 4, "unknown field 'colour'"),
        ("rationale: Exists to be broken.\n", "", 1, "missing field 'rationale'"),
        ("id: TST-001", "id: tst1", 1, "expected AREA-NNN"),
        ("for_each: destinations", "for_each: planets", 5, "unknown kind 'planets'"),
        (
            'message: "{dest.used} used"',
            'message: "{dest.used.__class__} used"',
            10,
            "only dotted names",
        ),
        (
            'message: "{dest.used} used"',
            'message: "{dest.nope} used"',
            10,
            "unknown name 'dest.nope'",
        ),
        ("net.ipv4.ip_local_port_range:", "../../etc/passwd:", 12, "invalid sysctl key"),
        ("  applicability: safe", "  applicability: maybe", 14, "safe, unsafe or display-only"),
        (
            "sources: [https://docs.kernel.org/networking/ip-sysctl.html]",
            "sources: []",
            15,
            "sources",
        ),
        (
            "id: TST-001",
            "id: !!python/object/apply:os.system ['touch /tmp/pwned-by-yaml']",
            1,
            "python/object",
        ),
        (
            "params: {warn_ratio: 0.7}",
            "params: {warn_ratio: 0.7, warn_ratio: 0.8}",
            6,
            "duplicate key",
        ),
    ],
)
def test_bad_rule_is_one_line_error(
    tmp_path: Path, old: str, new: str, line: int, words: str
) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(InputError) as exc:
        load_rule_file(path)
    assert exc.value.path == str(path)
    assert exc.value.line == line, str(exc.value)
    assert words.lower() in str(exc.value).lower()
    result = run_cli("rules", "list", "--rules", str(path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"portaudit: {path}:{line}: ")
    assert not Path("/tmp/pwned-by-yaml").exists()


def test_duplicate_id_names_both_places(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "a.yaml")
    second = write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(
        InputError, match=r"duplicate rule id TST-001 \(first in .*a\.yaml:1\)"
    ) as exc:
        load_rules([tmp_path], builtin=False)
    assert exc.value.path == str(second)


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="one rule"):
        load_rule_file(write(tmp_path, "- a\n- b\n"))


def test_missing_rules_path_is_input_error(tmp_path: Path) -> None:
    result = run_cli("rules", "list", "--rules", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "no such rule file or directory" in result.stderr


def test_builtin_catalog_loads() -> None:
    rules = load_rules()
    assert len({r.id for r in rules}) == len(rules)
