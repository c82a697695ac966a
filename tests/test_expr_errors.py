"""A rule whose expression meets values of the wrong kind is reported with what was compared,
in words, and where: never Python's own exception text (`'<' not supported between instances
of 'str' and 'int'`). The value here is a boot file's `1_000` for a key whose running value
is text (a port list), so `boot.<key>` is that text."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.config import load_config
from auditor.engine.evaluate import evaluate
from auditor.engine.load import load_rules
from auditor.engine.report import Status
from auditor.facts.collect import collect_facts
from auditor.hostfs import HostRoot
from tests.helpers import copy_root

RULE = """\
id: TST-950
name: test-wrong-kinds
title: "wrong kinds"
rationale: Test rule comparing a text with a number.
example: "WARN TST-950 ..."
let:
  runtime: sysctl.net.ipv4.tcp_max_tw_buckets
  boot: boot.net.ipv4.ip_local_reserved_ports
severity:
  warn: "{condition}"
subject: ""
message: "m"
fix:
  sysctl: {{}}
  advice: none
  applicability: display-only
sources:
  - https://docs.kernel.org/networking/ip-sysctl.html
"""

CASES = [
    ("boot < 5", "cannot compare '1_000' (text) with 5 (a number) in 'boot < 5'"),
    (
        "min(runtime, boot) < 5",
        "cannot take min() of 131072 (a number) and '1_000' (text) in 'min(runtime, boot) < 5'",
    ),
    ("boot + 1 > 5", "cannot compute '1_000' (text) + 1 (a number) in 'boot + 1 > 5'"),
    ("runtime * boot > 5", "cannot compute 131072 (a number) * '1_000' (text)"),
    ("-boot < 5", "cannot negate '1_000' (text) in '-boot < 5'"),
    ("5 in boot + 'x'", "cannot look for 5 (a number) in '1_000x' (text)"),
    ("abs(boot) > 1", "cannot take abs() of '1_000' (text)"),
]


@pytest.mark.parametrize(("condition", "reason"), CASES, ids=[c for c, _r in CASES])
def test_wrong_kinds_are_said_in_words(tmp_path: Path, condition: str, reason: str) -> None:
    root = copy_root("minimal", tmp_path)
    (root / "proc/sys/net/ipv4/tcp_max_tw_buckets").write_text("131072\n")
    (root / "proc/sys/net/ipv4/ip_local_reserved_ports").write_text("5000-5001\n")
    conf = root / "etc/sysctl.d/90-tuning.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("net.ipv4.ip_local_reserved_ports = 1_000\n")
    rule = tmp_path / "rule.yaml"
    rule.write_text(RULE.format(condition=condition))
    host = HostRoot(proc=root / "proc", root=root)
    rules = [r for r in load_rules([rule]) if r.id == "TST-950"]
    report = evaluate(rules, collect_facts(host), load_config(host, None))
    mine = [o for o in report.outcomes if o.rule_id == "TST-950"]
    assert [o.status for o in mine] == [Status.ERROR], mine
    assert reason in mine[0].reason, mine[0].reason
    for o in report.outcomes:
        assert "not supported" not in (o.reason or "") and "instances of" not in (o.reason or "")
