"""Rows a rule cannot fire on are never built: each severity condition demands `dest.ratio` (or
`dest.effective_ratio`, at most it) above a threshold, so a destination below the lowest one
passes uncounted as an object, with the same findings as evaluating every row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auditor.config import load_config
from auditor.engine.evaluate import evaluate
from auditor.engine.expr import Expr, Value
from auditor.engine.load import load_rules
from auditor.engine.names import DESTINATIONS, LazyRow
from auditor.engine.prefilter import can_fire
from auditor.engine.report import Report
from auditor.facts.collect import collect_facts
from auditor.hostfs import HostRoot
from tests.scenario import build_tree, load_scenario

RULE = """\
id: XX-001
name: test-rule
title: t
rationale: r
message: "{dest.used}"
sources: [tcp(7)]
for_each: destinations
params: {warn_ratio: 0.5}
severity:
  crit: dest.effective_ratio >= 0.9
  warn: not dest.loopback and dest.ratio > params.warn_ratio
fix: {advice: a, applicability: display-only}
"""

SOCKETS = [{"src": "10.0.0.2", "dst": "10.0.0.5", "dport": 80, "state": "TIME_WAIT", "count": 95}]
SOCKETS += [
    {"src": "10.0.0.2", "dst": f"10.0.1.{i}", "dport": 80, "state": "TIME_WAIT", "count": 1}
    for i in range(1, 41)
]
SOCKETS += [{"src": "10.0.0.2", "dst": "10.0.2.1", "dport": 80, "state": "TIME_WAIT", "count": 60}]


def _audit(tmp: Path, passing: bool) -> Report:
    rules = tmp / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "XX-001.yaml").write_text(RULE)
    spec = tmp / "case.yaml"
    case = {
        "rule": "XX-001",
        "description": "d",
        "expect": [],
        "sysctl": {"net.ipv4.ip_local_port_range": "40000 40099"},
        "sockets": SOCKETS,
    }
    spec.write_text(json.dumps(case))
    root = build_tree(load_scenario(spec), tmp / f"host-{passing}")
    host = HostRoot(proc=root / "proc", root=root)
    return evaluate(
        load_rules([rules], builtin=False),
        collect_facts(host),
        load_config(host, None),
        passing=passing,
    )


def test_rows_that_cannot_fire_are_not_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []
    init = LazyRow.__init__

    def counting(self: LazyRow, item: Any, ctx: Any, fields: Any) -> None:
        built.append(item)
        init(self, item, ctx, fields)

    monkeypatch.setattr(LazyRow, "__init__", counting)
    quick = _audit(tmp_path, passing=False)
    assert len(built) == 2  # the 95 and the 60, of 42 destinations
    built.clear()
    every = _audit(tmp_path, passing=True)
    assert len(built) == 42
    assert [(f.severity, f.subject, f.message) for f in quick.findings] == [
        (f.severity, f.subject, f.message) for f in every.findings
    ]
    assert [str(f.severity) for f in quick.findings] == ["crit", "warn"]


def _test(*conds: str, lets: dict[str, str] | None = None) -> Any:
    values: dict[str, Value] = {"params.t": 0.5, "sysctl.x": 1}
    return can_fire(
        [Expr(c) for c in conds],
        DESTINATIONS.bounded,
        DESTINATIONS.names,
        {k: Expr(v) for k, v in (lets or {}).items()},
        values.__getitem__,
    )


def test_threshold_shapes() -> None:
    test = _test("dest.ratio > params.t", "0.8 <= dest.effective_ratio")
    assert test is not None
    assert not test(0.5) and test(0.51) and test(0.8)
    inclusive = _test("dest.ratio >= 0.7 and sysctl.x == 1")
    assert inclusive is not None and inclusive(0.7) and not inclusive(0.69)


@pytest.mark.parametrize(
    "conds",
    [
        ("dest.ratio > 0.5", "sysctl.x == 1"),  # a condition without a ratio floor
        ("sysctl.x == 1 and dest.ratio > 0.5",),  # a host fact read first may skip the row
        ("share > 0.1 and dest.ratio > 0.5",),  # so may a let
        ("dest.ratio > dest.used",),  # a threshold that depends on the row
        ("dest.ratio < 0.5",),  # an upper bound
        ("dest.used > 5",),  # not a bounded field
        ("dest.ratio > 'x'",),
    ],
)
def test_no_filter_where_the_shape_does_not_hold(conds: tuple[str, ...]) -> None:
    assert _test(*conds, lets={"share": "dest.used / 2"}) is None
