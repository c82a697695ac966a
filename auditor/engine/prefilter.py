"""Which subject rows a rule cannot fire on, decided from one number per row before any row is
built.

A host with 100,000 destinations has a handful near exhaustion; EPH-001 and TW-001 fire only
above a share of the usable ports. When every severity condition of a rule demands a row field
that never exceeds a kind's ceiling (`dest.ratio`, and `dest.effective_ratio` which is at most
it) to be above a threshold that does not depend on the row, a row whose ceiling is at or
below the lowest such threshold cannot fire: it is neither built nor evaluated, and is counted
as passing. The verdict is the same as evaluating it: the demanded comparison is a conjunct
reached only after conjuncts that read row fields alone (a row field never skips), so on such
a row every condition is False without a let or a host fact being read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from auditor.engine.expr import EvalError, Expr, Lookup, Skip, Tree

CanFire = Callable[[float], bool]


def _conjuncts(tree: Tree) -> tuple[Tree, ...]:
    if tree[0] == "bool" and tree[1]:
        return tuple(tree[2])
    return (tree,)


def _names(tree: Tree, found: set[str] | None = None) -> set[str]:
    """The whole dotted names `tree` reads (`dest.ratio`, not also `dest`), and the functions
    it calls, over the tuple shapes `expr._encode` makes."""
    found = set() if found is None else found
    kind = tree[0]
    if kind == "name":
        found.add(tree[1])
    elif kind == "bool" or kind == "tuple":
        for item in tree[-1]:
            _names(item, found)
    elif kind == "unary":
        _names(tree[2], found)
    elif kind == "bin":
        _names(tree[2], found)
        _names(tree[3], found)
    elif kind == "cmp":
        _names(tree[1], found)
        for _op, item in tree[2]:
            _names(item, found)
    elif kind == "if":
        for item in tree[1:]:
            _names(item, found)
    elif kind == "call":
        found.add(tree[1])
        for item in tree[2]:
            _names(item, found)
    return found


def _threshold(
    tree: Tree, bounded: frozenset[str], row_names: frozenset[str], lets: Mapping[str, Expr]
) -> tuple[Tree, bool] | None:
    """(the threshold's tree, inclusive) when `tree` is `bounded > t`, `bounded >= t`,
    `t < bounded` or `t <= bounded` with `t` free of row fields and lets."""
    if tree[0] != "cmp" or len(tree[2]) != 1:
        return None
    left, (op, right) = tree[1], tree[2][0]
    if op in ("Gt", "GtE") and left[0] == "name" and left[1] in bounded:
        other, inclusive = right, op == "GtE"
    elif op in ("Lt", "LtE") and right[0] == "name" and right[1] in bounded:
        other, inclusive = left, op == "LtE"
    else:
        return None
    names = _names(other)
    if names & row_names or any(n in lets for n in names):
        return None
    return other, inclusive


def can_fire(
    conditions: Sequence[Expr],
    bounded: frozenset[str],
    row_names: frozenset[str],
    lets: Mapping[str, Expr],
    lookup: Lookup,
) -> CanFire | None:
    """A test on a row's ceiling that is False only where no condition can hold, or None
    when some condition does not have that shape (then every row is evaluated)."""
    strict: list[float] = []
    inclusive: list[float] = []
    for cond in conditions:
        found: tuple[Tree, bool] | None = None
        for part in _conjuncts(cond.tree):
            found = _threshold(part, bounded, row_names, lets)
            if found is not None:
                break
            if not _names(part) <= row_names:
                return None
        if found is None:
            return None
        threshold = Expr.checked(cond.source, frozenset(_names(found[0])), found[0])
        try:
            value = threshold.evaluate(lookup)
        except (Skip, EvalError):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        (inclusive if found[1] else strict).append(float(value))
    if not conditions:
        return None
    low = min(strict, default=float("inf"))
    low_inclusive = min(inclusive, default=float("inf"))
    return lambda ceiling: ceiling > low or ceiling >= low_inclusive
