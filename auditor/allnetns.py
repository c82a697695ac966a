"""`audit --all-netns` and `facts --all-netns`: one snapshot and report per network namespace.

Each namespace is judged on its own facts (its own port range, sockets and sysctls), so a
finding appears once, under the namespace it belongs to: `Finding.netns` carries the label and
the subject starts with `[netns <label>]`. For output the reports are merged into one (the
current namespace's facts head it), and the JSON gains two keys, additive to DESIGN.md's shape:
`namespaces` (each audited namespace with its finding count) and `skipped_netns` (each one that
could not be read, with the reason).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from auditor.config import Config
from auditor.engine.evaluate import evaluate
from auditor.engine.load import Rule
from auditor.engine.report import Outcome, Report
from auditor.facts.model import Unavailable, to_jsonable
from auditor.facts.netns import NetnsRef, collect_all_netns, require_live
from auditor.hostfs import HostRoot


@dataclasses.dataclass(frozen=True, slots=True)
class NetnsAudit:
    audited: list[tuple[NetnsRef, Report]]
    skipped: list[tuple[str, str]]
    """(namespace label or place, reason)."""

    def merged(self) -> Report:
        """All findings in one report, sorted as a single-namespace report is."""
        findings = [f for _, r in self.audited for f in r.findings]
        findings.sort(key=lambda f: (-f.severity, f.id, f.netns, f.subject))
        outcomes = [o for _, r in self.audited for o in r.outcomes]
        return Report(
            facts=self.audited[0][1].facts, findings=tuple(findings), outcomes=tuple(outcomes)
        )


def _label(report: Report, ref: NetnsRef) -> Report:
    prefix = f"[netns {ref.label}]"

    def subject(s: str) -> str:
        return f"{prefix} {s}" if s else prefix

    return Report(
        facts=report.facts,
        findings=tuple(
            dataclasses.replace(f, subject=subject(f.subject), netns=ref.label)
            for f in report.findings
        ),
        outcomes=tuple(
            Outcome(o.rule_id, o.status, subject(o.subject), o.reason) for o in report.outcomes
        ),
    )


def audit_all_netns(host: HostRoot, rules: Sequence[Rule], config: Config) -> NetnsAudit:
    require_live(host)
    problems: list[tuple[str, str]] = []
    audited: list[tuple[NetnsRef, Report]] = []
    skipped: list[tuple[str, str]] = []
    for ref, facts in collect_all_netns(host, problems):
        if isinstance(facts, Unavailable):
            skipped.append((ref.label, facts.reason))
            continue
        audited.append((ref, _label(evaluate(rules, facts, config, netns=ref.label), ref)))
    return NetnsAudit(audited=audited, skipped=skipped + problems)


def _namespaces(result: NetnsAudit) -> list[dict[str, Any]]:
    return [
        {
            "netns": ref.label,
            "inode": ref.inode,
            "name": ref.name or None,
            "pid": ref.pid if not ref.name else None,
            "owner": ref.owner or None,
            "findings": len(report.findings),
        }
        for ref, report in result.audited
    ]


def render_json_all(result: NetnsAudit) -> str:
    from auditor.render.json import report_dict

    out = report_dict(result.merged())
    out["namespaces"] = _namespaces(result)
    out["skipped_netns"] = [{"netns": what, "reason": why} for what, why in result.skipped]
    return json.dumps(out, indent=2) + "\n"


def render_table_all(result: NetnsAudit) -> str:
    from auditor.render.table import render_table

    text = render_table(result.merged())
    labels = ", ".join(ref.label for ref, _ in result.audited)
    text += f"Network namespaces audited ({len(result.audited)}): {labels}\n"
    if result.skipped:
        text += "Skipped namespaces:\n"
        text += "".join(f"  {what}: {why}\n" for what, why in result.skipped)
    return text


def render_prometheus_all(result: NetnsAudit) -> str:
    from auditor.render.prometheus import render_prometheus

    return render_prometheus([r for _, r in result.audited])


def facts_all_netns_json(host: HostRoot) -> str:
    """`facts --all-netns`: {"schema": 1, "namespaces": [{netns, inode, facts | unavailable}]}."""
    require_live(host)
    problems: list[tuple[str, str]] = []
    rows: list[dict[str, Any]] = []
    for ref, facts in collect_all_netns(host, problems):
        row: dict[str, Any] = {"netns": ref.label, "inode": ref.inode}
        if isinstance(facts, Unavailable):
            row["unavailable"] = facts.reason
        else:
            row["facts"] = to_jsonable(facts)
        rows.append(row)
    out = {
        "schema": 1,
        "namespaces": rows,
        "skipped_netns": [{"netns": what, "reason": why} for what, why in problems],
    }
    return json.dumps(out, indent=2) + "\n"
