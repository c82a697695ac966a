"""`portaudit rules show ID`: a rule's documentation, laid out like ruff's rule pages."""

from __future__ import annotations

import textwrap

from auditor.engine.load import Rule


def _para(text: str) -> str:
    return "\n".join(textwrap.fill(p, 88) for p in text.strip().split("\n\n"))


def render_rule_doc(rule: Rule) -> str:
    out = [f"{rule.id} ({rule.name})", "", rule.title, ""]
    out += ["## Why it matters", _para(rule.rationale), ""]
    out.append("## When it fires")
    if rule.for_each:
        out.append(f"Checked once per {rule.for_each[:-1]}.")
    for sev, cond in rule.severity:
        out.append(f"  {sev!s:5} when {' '.join(cond.source.split())}")
    if rule.params:
        out.append(
            "Params (override in /etc/portaudit/config.yaml under rules." + rule.id + ".params):"
        )
        out += [f"  {k} = {v}" for k, v in rule.params.items()]
    out.append("")
    if rule.example:
        out += ["## Example", textwrap.indent(rule.example.rstrip(), "  "), ""]
    out.append(f"## Fix ({rule.applicability})")
    for key, value in rule.fix_sysctl:
        out.append(f"  {key} = {value.source}")
    out += [_para(rule.fix_advice.source), "(Values in braces are filled in for each finding.)", ""]
    out.append("## Sources")
    out += [f"  - {s}" for s in rule.sources]
    out += ["", f"Defined in {rule.path}"]
    return "\n".join(out) + "\n"
