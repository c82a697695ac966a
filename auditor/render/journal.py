"""`audit --log-findings`: one line per finding for the journal, with a priority prefix.

systemd reads a leading `<N>` on a line a service writes (SyslogLevelPrefix=yes, the default)
as that line's syslog priority, the convention of sd-daemon(3). So `journalctl -t portaudit
-p warning` lists exactly the findings that are warn or worse, and a crit finding is an error
in whatever ships the journal off the host.
"""

from __future__ import annotations

from typing import assert_never

from auditor.engine.report import AuditReport, Severity

ERR, WARNING, INFO = 3, 4, 6
"""Priorities of sd-daemon(3) (SD_ERR, SD_WARNING, SD_INFO)."""


def priority(severity: Severity) -> int:
    match severity:
        case Severity.CRIT:
            return ERR
        case Severity.WARN:
            return WARNING
        case Severity.INFO:
            return INFO
        case _:
            assert_never(severity)


def _one_line(text: str) -> str:
    """The journal splits on newlines; a message must stay one entry."""
    return " ".join(text.split())


def journal_lines(audit: AuditReport) -> list[str]:
    """`<4>EPH-001 warn 10.0.0.2 -> 10.0.0.5:3306: <message>` per finding, then a summary.

    The summary line (info) makes a clean run visible in the journal too, and names how many
    rules were skipped, since a skipped rule is a check that did not happen.
    """
    lines: list[str] = []
    counts = {s: 0 for s in Severity}
    for f in audit.findings:
        counts[f.severity] += 1
        where = f" [{f.netns}]" if f.netns else ""
        subject = f" {f.subject}" if f.subject else ""
        lines.append(
            f"<{priority(f.severity)}>{f.id} {f.severity}{where}{subject}: " + _one_line(f.message)
        )
    summary = ", ".join(f"{counts[s]} {s}" for s in sorted(Severity, reverse=True))
    lines.append(f"<{INFO}>portaudit: {summary}; {len(audit.skipped_rules())} rule(s) skipped")
    return lines
