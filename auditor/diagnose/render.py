"""A Diagnosis as text for a terminal or as JSON for tools. Pure: nothing is computed here."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from tabulate import tabulate

from auditor.diagnose.model import Diagnosis
from auditor.facts.model import to_jsonable

JSON_SCHEMA = 1


def to_json_dict(d: Diagnosis) -> dict[str, Any]:
    t = d.target
    return {
        "schema": JSON_SCHEMA,
        "verdict": str(d.verdict),
        "exit_code": d.exit_code,
        "likely": [c.id for c in d.likely],
        "summary": d.summary,
        "target": {
            "text": t.text,
            "host": t.host,
            "port": t.port,
            "protocol": str(t.protocol),
            "tls": t.tls,
            "path": t.path,
        },
        "resolution": {
            "addresses": list(d.resolution.addresses),
            "hosts_file": [to_jsonable(e) for e in d.resolution.hosts_entries],
            "error": d.resolution.error or None,
            "error_kind": d.resolution.error_kind or None,
            "nameservers": list(d.resolution.nameservers),
            "expect_ip": d.resolution.expect_ip,
            "expect_mismatch": d.resolution.expect_mismatch,
        },
        "addresses": [
            {
                "address": a.address,
                "route": to_jsonable(a.route),
                "result": to_jsonable(a.connect),
                "protocol": to_jsonable(a.protocol),
                "tries": list(a.tries),
            }
            for a in d.attempts
        ],
        "evidence": list(d.evidence),
        "causes": [
            {
                "id": c.id,
                "case": c.case,
                "status": str(c.status),
                "why": c.why,
                "rule": c.rule or None,
                "evidence": [to_jsonable(e) for e in c.evidence],
            }
            for c in d.causes
        ],
        "next_steps": list(d.next_steps),
        "local": to_jsonable(d.local),
        "proxies": to_jsonable(d.proxies),
        "port_use": to_jsonable(d.port_use),
        "client_firewall": to_jsonable(d.client_firewall),
        "client_nat": to_jsonable(d.client_nat),
        "path": d.path or None,
        "own_path": None
        if d.own_path is None
        else {
            "verdict": str(d.own_path.verdict),
            "addresses": [
                {
                    "address": a.address,
                    "result": to_jsonable(a.connect),
                    "protocol": to_jsonable(a.protocol),
                    "tries": list(a.tries),
                }
                for a in d.own_path.attempts
            ],
        },
    }


def render_json(d: Diagnosis) -> str:
    return json.dumps(to_json_dict(d), indent=2, sort_keys=False) + "\n"


def render_table(d: Diagnosis, width: int = 100) -> str:
    head = str(d.verdict).upper()
    if d.likely:
        head += " - LIKELY: " + ", ".join(c.id for c in d.likely)
    lines = [f"{d.target.text}: {head}", f"  {d.summary}"]
    if d.path:
        lines.append(f"  Judged path: {d.path}")
    lines += ["", "Evidence:"]
    lines += [f"  - {e}" for e in d.evidence]
    if d.causes:
        rows = [
            [
                c.status,
                c.id + (f"\n({c.rule})" if c.rule else ""),
                textwrap.fill(f"{c.case}\n", 38),
                "\n".join(
                    [textwrap.fill(c.why, 52)]
                    + [textwrap.fill(f"- {e.what}: {e.value} [{e.where}]", 52) for e in c.evidence]
                ),
            ]
            for c in d.causes
        ]
        lines += ["", "Causes:"]
        table = tabulate(rows, headers=["status", "id", "case", "why"], tablefmt="simple")
        lines += ["  " + row for row in table.splitlines()]
    if d.next_steps:
        lines += ["", "Next steps:"]
        for i, step in enumerate(d.next_steps, 1):
            lines += textwrap.wrap(
                step, width, initial_indent=f"  {i}. ", subsequent_indent="     "
            )
    return "\n".join(lines) + "\n"
