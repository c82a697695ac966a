"""What a change set did: each fixed rule's findings before, and the same subjects after.

`fix` re-reads the facts after writing and re-runs the rules, so the operator sees the effect
measured, not promised: `EPH-001 127.0.0.1 -> 127.0.0.1:8080: crit 100% -> ok 0.2%`.
"""

from __future__ import annotations

from collections.abc import Iterable

from auditor.engine.report import Finding, Report
from auditor.facts.model import PortRange, SocketTable


def _ratio(report: Report, f: Finding) -> float | None:
    """used/capacity for a destination finding, read from `report`'s facts (None otherwise)."""
    ev = f.evidence
    if not {"src", "dst", "dport"} <= set(ev):
        return None
    ports, sockets = report.facts.ports, report.facts.sockets
    if not isinstance(ports, PortRange) or not isinstance(sockets, SocketTable):
        return None
    if ports.usable <= 0:
        return None
    row = sockets.rows.find((ev["src"], ev["dst"], ev["dport"]))
    return ports.share(0 if row is None else row.used)


def _pct(x: float) -> str:
    return f"{x:.1%}" if x < 0.1 else f"{x:.0%}"


def effect_lines(before: Report, after: Report, rules: Iterable[str]) -> list[str]:
    """One line per finding of the fixed rules: severity (and use, where measured) then and now."""
    fixed = set(rules)
    now = {(f.id, f.subject): f for f in after.findings}
    out: list[str] = []
    for f in before.findings:
        if f.id not in fixed:
            continue
        later = now.get((f.id, f.subject))
        then_sev = str(f.severity)
        now_sev = str(later.severity) if later is not None else "ok"
        line = f"{f.id} {f.subject}".rstrip() + f": {then_sev} -> {now_sev}"
        r0, r1 = _ratio(before, f), _ratio(after, f)
        if r0 is not None and r1 is not None:
            line = f"{f.id} {f.subject}: {_pct(r0)} -> {_pct(r1)} ({then_sev} -> {now_sev})"
        out.append(line)
    return out
