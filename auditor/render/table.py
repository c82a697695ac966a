"""`audit --format table`: one screen an operator can act on (tabulate)."""

from __future__ import annotations

import textwrap

from tabulate import tabulate

from auditor.engine.report import Finding, Report, Status


def _fix_text(f: Finding) -> str:
    """The persistent line (what `portaudit fix` writes), not `sysctl -w`, which a reboot undoes."""
    if f.fix.sysctl:
        return "\n".join(f"{k} = {v}" for k, v in f.fix.sysctl.items())
    return textwrap.shorten(f.fix.advice, width=70, placeholder=" …")


def render_table(report: Report) -> str:
    host = report.facts.host
    lines = [
        f"portaudit: {host.hostname or 'host'} (kernel {host.kernel or '?'}, {host.netns or '?'})"
    ]
    if report.findings:
        rows = [
            [
                str(f.severity).upper(),
                f.id,
                "\n".join(textwrap.wrap(f.subject, 34)) or "-",
                "\n".join(textwrap.wrap(f.title, 56)),
                "\n".join(textwrap.wrap(_fix_text(f), 44, break_long_words=False)),
            ]
            for f in report.findings
        ]
        lines.append(
            tabulate(rows, headers=["SEV", "ID", "SUBJECT", "FINDING", "FIX"], tablefmt="simple")
        )
    else:
        lines.append("No findings.")
    s = report.summary()
    skipped = sorted(
        {
            o.rule_id
            for o in report.outcomes
            if o.status is Status.SKIPPED and o.reason != "skipped by config"
        }
    )
    errors = sorted({o.rule_id for o in report.outcomes if o.status is Status.ERROR})
    summary = (
        f"{len(report.findings)} findings: {s['crit']} crit, {s['warn']} warn, {s['info']} info"
    )
    if skipped:
        summary += f"; skipped (facts unavailable): {', '.join(skipped)}"
    if errors:
        summary += f"; rule errors: {', '.join(errors)}"
    lines.append("")
    lines.append(summary)
    if report.findings:
        lines.append("Details: portaudit rules show ID   Fixes: portaudit fix --dry-run")
    return "\n".join(lines) + "\n"
