"""`audit --format table`: one screen an operator can act on.

Three layouts of the same findings:
- no width known (a pipe, a file): the fixed-width table, so saved output does not depend on
  the terminal it was made on;
- a terminal at least `TABLE_MIN_WIDTH` wide: the table, its columns scaled to the width;
- a narrower terminal, or `--verbose`: one block per finding (severity, id and subject on the
  first line, the message and fix indented below, as the rules' `example:` shows them);
  `--verbose` adds each finding's evidence, owners and advice, which otherwise only JSON has.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from auditor.engine.report import AuditReport, Finding, Status
from auditor.render.tablelayout import simple_table

TABLE_MIN_WIDTH = 120
"""Below this, five columns leave too little room for a sysctl line: blocks are used."""
FIXED = (34, 56, 44)
"""Subject, finding and fix widths when no terminal width is known."""
INDENT = "      "


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


def _wrap(text: str, width: int, break_long_words: bool = True) -> str:
    return "\n".join(textwrap.wrap(text, max(width, 8), break_long_words=break_long_words))


def _fit(text: str, width: int | None, indent: str = "  ") -> list[str]:
    """`text` wrapped to `width` (as is when no width is known); a word longer than a whole line
    is broken, since nothing else keeps it inside the terminal."""
    if width is None or len(text) <= width:
        return [text]
    return textwrap.wrap(text, max(width, 20), subsequent_indent=indent) or [text]


def _columns(width: int | None) -> tuple[int, int, int]:
    if width is None:
        return FIXED
    room = max(width - 4 - 7 - 8 - 2, 60)  # SEV, ID, column gaps, slack
    subject = room * 24 // 100
    fix = room * 32 // 100
    return subject, room - subject - fix, fix


def _table(findings: Sequence[Finding], width: int | None) -> str:
    subject_w, title_w, fix_w = _columns(width)
    rows = [
        [
            str(f.severity).upper(),
            f.id,
            _wrap(_subject(f), subject_w) or "-",
            _wrap(f.message, title_w),
            _wrap(_fix_text(f), fix_w, break_long_words=False),
        ]
        for f in findings
    ]
    return simple_table(rows, ["SEV", "ID", "SUBJECT", "FINDING", "FIX"])


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, str):
        import json

        return v if v and v.strip() == v else json.dumps(v)
    return str(v)


def _block(f: Finding, width: int, verbose: bool) -> list[str]:
    inner = max(width - len(INDENT), 30)

    def para(label: str, text: str) -> list[str]:
        lines = textwrap.wrap(f"{label}{text}", inner, subsequent_indent="  ")
        return [INDENT + line for line in lines]

    subject = _subject(f)
    head = f"{str(f.severity).upper():<5} {f.id}" + (f"  {subject}" if subject else "")
    out = [*_fit(head, width, INDENT), *para("", f.message)]
    evidence = dict(f.evidence)
    owners = evidence.pop("owners", None)
    if verbose and evidence:
        out += para("evidence: ", " ".join(f"{k}={_value(v)}" for k, v in evidence.items()))
    if verbose and owners:
        out += para("owners: ", _value(owners))
    for k, v in f.fix.sysctl.items():
        out += para("fix: ", f"{k} = {v}")
    if verbose:
        out += para("advice: ", f.fix.advice)
    elif not f.fix.sysctl:
        out += para("advice: ", textwrap.shorten(f.fix.advice, inner * 2 - 12, placeholder=" …"))
    return out


def render_table(audit: AuditReport, width: int | None = None, verbose: bool = False) -> str:
    """The findings for a terminal `width` columns wide (None: not a terminal)."""
    host = audit.facts.host
    lines = _fit(
        f"portaudit: {host.hostname or 'host'} (kernel {host.kernel or '?'}, {host.netns or '?'})",
        width,
    )
    findings = audit.findings
    if not findings:
        lines.append("No findings.")
    elif verbose or (width is not None and width < TABLE_MIN_WIDTH):
        for f in findings:
            lines.extend(_block(f, width or 100, verbose))
            lines.append("")
        lines.pop()
    else:
        lines.append(_table(findings, width))
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
    lines.extend(_fit(summary, width))
    if findings:
        hints = ["Details: portaudit rules show ID", "Fixes: portaudit fix --dry-run"]
        if not verbose:
            hints.append("More: -v")
        hint = "   ".join(hints)
        lines.extend([hint] if width is None or len(hint) <= width else hints)
    if audit.all_netns:
        labels = ", ".join(ns.label for ns in audit.namespaces)
        lines.extend(_fit(f"Network namespaces audited ({len(audit.namespaces)}): {labels}", width))
        if audit.skipped_netns:
            lines.append("Skipped namespaces:")
            for what, why in audit.skipped_netns:
                lines.extend(_fit(f"  {what}: {why}", width, "    "))
    return "\n".join(lines) + "\n"
