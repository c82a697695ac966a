"""`audit --format table`: one screen an operator can act on (tabulate)."""

from __future__ import annotations

import textwrap

from tabulate import tabulate

from auditor.engine.report import AuditReport, Finding, Status


def _fix_text(f: Finding) -> str:
    """The persistent line (what `portaudit fix` writes), not `sysctl -w`, which a reboot undoes."""
    if f.fix.sysctl:
        return "\n".join(f"{k} = {v}" for k, v in f.fix.sysctl.items())
    return textwrap.shorten(f.fix.advice, width=70, placeholder=" …")


def _subject(f: Finding) -> str:
    """The subject, led by the namespace when the audit covered several."""
    if not f.netns:
        return f.subject
    return f"[netns {f.netns}] {f.subject}" if f.subject else f"[netns {f.netns}]"


def render_table(audit: AuditReport) -> str:
    host = audit.facts.host
    lines = [
        f"portaudit: {host.hostname or 'host'} (kernel {host.kernel or '?'}, {host.netns or '?'})"
    ]
    findings = audit.findings
    if findings:
        rows = [
            [
                str(f.severity).upper(),
                f.id,
                "\n".join(textwrap.wrap(_subject(f), 34)) or "-",
                "\n".join(textwrap.wrap(f.message, 56)),
                "\n".join(textwrap.wrap(_fix_text(f), 44, break_long_words=False)),
            ]
            for f in findings
        ]
        lines.append(
            tabulate(rows, headers=["SEV", "ID", "SUBJECT", "FINDING", "FIX"], tablefmt="simple")
        )
    else:
        lines.append("No findings.")
    s = audit.summary()
    outcomes = [o for r in audit.reports for o in r.outcomes]
    skipped = sorted(
        {
            o.rule_id
            for o in outcomes
            if o.status is Status.SKIPPED and o.reason != "skipped by config"
        }
    )
    errors = sorted({o.rule_id for o in outcomes if o.status is Status.ERROR})
    summary = f"{len(findings)} findings: {s['crit']} crit, {s['warn']} warn, {s['info']} info"
    if skipped:
        summary += f"; skipped (facts unavailable): {', '.join(skipped)}"
    if errors:
        summary += f"; rule errors: {', '.join(errors)}"
    lines.append("")
    lines.append(summary)
    if findings:
        lines.append("Details: portaudit rules show ID   Fixes: portaudit fix --dry-run")
    if audit.all_netns:
        labels = ", ".join(ns.label for ns in audit.namespaces)
        lines.append(f"Network namespaces audited ({len(audit.namespaces)}): {labels}")
        if audit.skipped_netns:
            lines.append("Skipped namespaces:")
            lines.extend(f"  {what}: {why}" for what, why in audit.skipped_netns)
    return "\n".join(lines) + "\n"
