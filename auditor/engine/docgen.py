"""Generate the documentation that restates code: the rule names and the rule catalog table.

The names section of docs/rules.md comes from the vocabulary (`auditor/engine/names.py`) and
the README's rule table from the shipped rules (`load_rules()`), each between a pair of marker
comments, so the committed text can never drift from what the loader accepts. After adding a
rule or a name:

    python -m auditor.engine.docgen --write     # rewrite the generated sections in place
    python -m auditor.engine.docgen --check     # exit 1 naming each stale file (what the tests do)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from auditor.engine.load import Rule, load_rules
from auditor.engine.names import HOST_NAMES, SUBJECT_KINDS

REPO = Path(__file__).resolve().parent.parent.parent
RULES_DOC = Path("docs") / "rules.md"
README = Path("README.md")


def _begin(section: str) -> str:
    return f"<!-- begin generated {section}: python -m auditor.engine.docgen --write -->"


def _end(section: str) -> str:
    return f"<!-- end generated {section} -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def names_markdown() -> str:
    """Every name a rule may read, host-wide then per `for_each` kind, with type and meaning."""
    out = [
        "Host-wide (every rule):",
        "",
        "| name | type | meaning |",
        "|---|---|---|",
    ]
    out += [f"| `{n.shown}` | {_cell(n.type)} | {_cell(n.doc)} |" for n in HOST_NAMES]
    for kind in SUBJECT_KINDS.values():
        needs = ", ".join(f"`{g}`" for g in kind.requires)
        out += [
            "",
            f"`for_each: {kind.kind}` ({needs}): {_cell(kind.doc)}",
            "",
            "| name | type | meaning |",
            "|---|---|---|",
        ]
        out += [
            f"| `{kind.prefix}.{name}` | {_cell(f.type)} | {_cell(f.doc)} |"
            for name, f in kind.fields.items()
        ]
    return "\n".join(out)


def rule_table_markdown(rules: Sequence[Rule]) -> str:
    """The catalog as the README shows it: id, what it finds, and at which severities."""
    out = ["| id | finds | severities |", "|---|---|---|"]
    for rule in rules:
        levels = ", ".join(str(sev) for sev, _ in rule.severity)
        out.append(f"| {rule.id} | {_cell(rule.title)} | {levels} |")
    return "\n".join(out)


class MarkersMissing(ValueError):
    """A document lacks the begin/end comments of a generated section."""


def replace_section(text: str, section: str, body: str) -> str:
    """`text` with the lines between the section's markers replaced by `body`."""
    begin, end = _begin(section), _end(section)
    head, found, rest = text.partition(begin + "\n")
    old, found_end, tail = rest.partition(end)
    if not found or not found_end:
        raise MarkersMissing(f"no {begin!r} ... {end!r} pair")
    del old
    return f"{head}{begin}\n{body}\n{end}{tail}"


def generated(root: Path = REPO) -> dict[Path, str]:
    """Each document with its generated sections brought up to date."""
    rules_doc = (root / RULES_DOC).read_text(encoding="utf-8")
    readme = (root / README).read_text(encoding="utf-8")
    return {
        RULES_DOC: replace_section(rules_doc, "names", names_markdown()),
        README: replace_section(readme, "rule table", rule_table_markdown(load_rules())),
    }


def stale(root: Path = REPO) -> list[Path]:
    """The documents whose committed text differs from what would be generated."""
    return [
        rel
        for rel, text in generated(root).items()
        if (root / rel).read_text(encoding="utf-8") != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m auditor.engine.docgen", description=__doc__)
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite the generated sections")
    group.add_argument("--check", action="store_true", help="exit 1 when a section is stale")
    ap.add_argument("--root", type=Path, default=REPO, help="the repository (default: this one)")
    args = ap.parse_args(argv)
    try:
        docs = generated(args.root)
    except (OSError, MarkersMissing) as exc:
        print(f"docgen: {exc}", file=sys.stderr)
        return 2
    if args.check:
        bad = [rel for rel, text in docs.items() if (args.root / rel).read_text() != text]
        for rel in bad:
            print(f"docgen: {rel} is stale; run python -m auditor.engine.docgen --write")
        return 1 if bad else 0
    for rel, text in docs.items():
        path = args.root / rel
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"docgen: wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
