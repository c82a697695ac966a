"""`audit --format json`: the shape in docs/design.md and docs/schema/audit.json (schema 1).

A many-namespace audit has the same shape plus `namespaces` and `skipped_netns`, and each
finding and skipped rule names its namespace in `netns`; subjects are the same text as in a
single-namespace audit.
"""

from __future__ import annotations

import json
from typing import Any

from auditor.engine.report import AuditReport, Finding, Status


def finding_dict(f: Finding) -> dict[str, Any]:
    """One finding. `title` carries the finding's message (the key predates `message`, and
    consumers read it); `rule_title` is the rule's own title."""
    out: dict[str, Any] = {
        "id": f.id,
        "name": f.name,
        "severity": str(f.severity),
        "title": f.message,
        "rule_title": f.title,
        "subject": f.subject,
        "evidence": f.evidence,
        "fix": {
            "sysctl": f.fix.sysctl,
            "advice": f.fix.advice,
            "applicability": str(f.fix.applicability),
        },
        "sources": list(f.sources),
    }
    if f.netns:
        out["netns"] = f.netns
    return out


def _skipped(audit: AuditReport) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for label, report in audit.labelled():
        for o in report.outcomes:
            if o.status not in (Status.SKIPPED, Status.ERROR):
                continue
            entry: dict[str, Any] = {"id": o.rule_id}
            if o.subject:
                entry["subject"] = o.subject
            entry["reason"] = o.reason
            if label:
                entry["netns"] = label
            out.append(entry)
    return out


def report_dict(audit: AuditReport) -> dict[str, Any]:
    host = audit.facts.host
    out: dict[str, Any] = {
        "schema": 1,
        "host": {"hostname": host.hostname, "kernel": host.kernel, "netns": host.netns},
        "findings": [finding_dict(f) for f in audit.findings],
        "summary": audit.summary(),
        "skipped": _skipped(audit),
    }
    if audit.all_netns:
        out["namespaces"] = [
            {
                "netns": ns.label,
                "inode": ns.inode,
                "name": ns.name,
                "pid": ns.pid,
                "owner": ns.owner,
                "findings": len(report.findings),
            }
            for ns, report in zip(audit.namespaces, audit.reports, strict=True)
        ]
        out["skipped_netns"] = [{"netns": what, "reason": why} for what, why in audit.skipped_netns]
    return out


def render_json(audit: AuditReport) -> str:
    return json.dumps(report_dict(audit), indent=2, sort_keys=False) + "\n"
