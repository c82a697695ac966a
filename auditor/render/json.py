"""`audit --format json`: the shape in DESIGN.md (schema 1), plus the rules that were skipped."""

from __future__ import annotations

import json
from typing import Any

from auditor.engine.report import Finding, Report, Status


def finding_dict(f: Finding) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f.id,
        "name": f.name,
        "severity": str(f.severity),
        "title": f.title,
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


def report_dict(report: Report) -> dict[str, Any]:
    host = report.facts.host
    skipped = [
        {"id": o.rule_id, "subject": o.subject, "reason": o.reason}
        if o.subject
        else {"id": o.rule_id, "reason": o.reason}
        for o in report.outcomes
        if o.status in (Status.SKIPPED, Status.ERROR)
    ]
    return {
        "schema": 1,
        "host": {"hostname": host.hostname, "kernel": host.kernel, "netns": host.netns},
        "findings": [finding_dict(f) for f in report.findings],
        "summary": report.summary(),
        "skipped": skipped,
    }


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, sort_keys=False) + "\n"
