"""`--only ID,...`: the one parser of rule ids, for `audit` and `fix` alike.

Ids are matched without regard to case (`eph-001` is EPH-001, as `rules show` has always
accepted), an unknown id is a usage error naming it, and an empty list is an error rather
than a silent "every rule".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from auditor.errors import UsageError

if TYPE_CHECKING:
    from auditor.engine.load import Rule


def parse_only(text: str | None) -> frozenset[str] | None:
    """`--only eph-001,TW-001` -> {"EPH-001", "TW-001"}; None when the flag was not given."""
    if text is None:
        return None
    ids = frozenset(p.strip().upper() for p in text.split(",") if p.strip())
    if not ids:
        raise UsageError("--only needs at least one rule id")
    return ids


def check_known(ids: Iterable[str], rules: Sequence[Rule]) -> None:
    """UsageError for the first id (in sorted order) that no loaded rule has."""
    known = {r.id for r in rules}
    for rule_id in sorted(ids):
        if rule_id not in known:
            raise UsageError(f"--only: unknown rule id {rule_id!r}")


def select_rules(rules: Sequence[Rule], only: str | None) -> list[Rule]:
    """The rules `--only` names (all of them without the flag), in catalog order."""
    ids = parse_only(only)
    if ids is None:
        return list(rules)
    check_known(ids, rules)
    return [r for r in rules if r.id in ids]
