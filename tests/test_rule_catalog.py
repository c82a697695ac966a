"""The catalog is documented and tested: a rule without docs or scenarios fails here.

Checks every file in `rules/` (the shipped catalog): every documentation field present and
non-empty, ids unique and equal to the file name, every id the interface promises present, params
present wherever a condition reads one, and at least one firing and one quiet scenario per rule.
The checks are plain functions over data so the test below can prove they fail on a bad
catalog, not only pass on the good one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from auditor.engine.load import builtin_rules_dir, load_rules
from tests.scenario import SCENARIOS, load_scenario

RULES_DIR = builtin_rules_dir()

DESIGN_IDS = (
    "EPH-001",
    "EPH-004",
    "EPH-005",
    "EPH-006",
    "TW-001",
    "TW-002",
    "TW-003",
    "TW-004",
    "TW-005",
    "LSN-001",
    "RCH-001",
    "CT-001",
    "FD-002",
)
"""Rule ids the interface promises (README, docs/rules.md); a rule behind one may not go away."""

DOC_FIELDS = ("id", "name", "title", "rationale", "example", "severity", "message", "sources")
_SOURCE_RE = re.compile(r"^(https://\S+|[a-z_0-9.-]+\([1-8]\))$")


def rule_problems(path: Path, data: Any) -> list[str]:
    """Everything wrong with one rule file's documentation, as readable lines."""
    if not isinstance(data, dict):
        return [f"{path.name}: not a mapping"]
    out = []
    for key in DOC_FIELDS:
        if not data.get(key):
            out.append(f"{path.name}: {key} is missing or empty")
    if data.get("id") != path.stem:
        out.append(f"{path.name}: id {data.get('id')!r} does not match the file name")
    fix = data.get("fix") or {}
    if not isinstance(fix, dict) or not str(fix.get("advice", "")).strip():
        out.append(f"{path.name}: fix.advice is missing or empty")
    if not isinstance(fix, dict) or not fix.get("applicability"):
        out.append(f"{path.name}: fix.applicability is missing")
    if "evidence" not in data or not data["evidence"]:
        out.append(f"{path.name}: evidence is missing or empty")
    rationale = str(data.get("rationale", ""))
    if len(rationale.split()) < 40:
        out.append(f"{path.name}: rationale is too short to explain why it matters")
    for src in data.get("sources") or []:
        if not isinstance(src, str) or not _SOURCE_RE.match(src):
            out.append(f"{path.name}: source {src!r} is neither an https URL nor a man page")
    exprs = [*(data.get("severity") or {}).values(), *(data.get("let") or {}).values()]
    conditions = " ".join(str(v) for v in exprs)
    for pname in set(re.findall(r"params\.([a-z_0-9]+)", conditions)):
        if pname not in (data.get("params") or {}):
            out.append(f"{path.name}: reads params.{pname} but declares no such param")
    return out


def scenario_problems(rule_ids: list[str], scenarios_dir: Path) -> list[str]:
    """Rules lacking a firing scenario (non-empty expect) or a quiet one (`expect: []`)."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in sorted(scenarios_dir.glob("*/*.yaml")):
        scenario = load_scenario(path)
        (firing if scenario.expect else quiet).add(scenario.rule)
    out = []
    for rid in rule_ids:
        if rid not in firing:
            out.append(f"{rid}: no scenario where it fires (non-empty expect)")
        if rid not in quiet:
            out.append(f"{rid}: no quiet scenario (expect: [])")
    return out


def catalog_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yaml"))


def test_catalog_loads_through_the_engine() -> None:
    rules = load_rules()
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids))
    missing = set(DESIGN_IDS) - set(ids)
    assert not missing, f"promised ids without a rule: {sorted(missing)}"


@pytest.mark.parametrize("path", catalog_files(), ids=lambda p: p.stem)
def test_rule_is_documented(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert rule_problems(path, data) == []


def test_every_rule_has_firing_and_quiet_scenarios() -> None:
    ids = [p.stem for p in catalog_files()]
    assert scenario_problems(ids, SCENARIOS) == []
    # Scenario folders name real rules, so a renamed rule cannot leave orphans behind.
    orphans = {p.name for p in SCENARIOS.iterdir() if p.is_dir()} - set(ids)
    assert not orphans, f"scenario folders without a rule: {sorted(orphans)}"


# --- the meta-test must be able to fail --------------------------------------------------------


def test_checks_catch_an_undocumented_rule(tmp_path: Path) -> None:
    good_path = RULES_DIR / "EPH-001.yaml"
    good = yaml.safe_load(good_path.read_text(encoding="utf-8"))
    assert rule_problems(good_path, good) == []
    for field in ("title", "rationale", "example", "sources"):
        bad = dict(good, **{field: ""})
        assert any(field in p for p in rule_problems(good_path, bad)), field
    no_applicability = dict(
        good, fix={k: v for k, v in good["fix"].items() if k != "applicability"}
    )
    assert rule_problems(good_path, no_applicability)
    renamed = tmp_path / "EPH-999.yaml"
    assert any("does not match" in p for p in rule_problems(renamed, good))
    no_params = {k: v for k, v in good.items() if k != "params"}
    assert any("params.crit_ratio" in p for p in rule_problems(good_path, no_params))


def test_checks_catch_a_rule_without_scenarios(tmp_path: Path) -> None:
    (tmp_path / "XX-001").mkdir()
    (tmp_path / "XX-001" / "fires.yaml").write_text(
        "rule: XX-001\ndescription: d\nexpect:\n  - {severity: warn, subject: ''}\n"
    )
    assert scenario_problems(["XX-001"], tmp_path) == ["XX-001: no quiet scenario (expect: [])"]
    assert len(scenario_problems(["XX-002"], tmp_path)) == 2
