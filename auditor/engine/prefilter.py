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

import ast
from collections.abc import Callable, Mapping, Sequence

from auditor.engine.expr import EvalError, Expr, Lookup, Skip, dotted_name

CanFire = Callable[[float], bool]


def _conjuncts(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return list(node.values)
    return [node]


def _names(node: ast.AST, found: set[str] | None = None) -> set[str]:
    """The whole dotted names `node` reads (`dest.ratio`, not also `dest`)."""
    found = set() if found is None else found
    name = dotted_name(node) if isinstance(node, ast.expr) else None
    if name is not None:
        found.add(name)
        return found
    for child in ast.iter_child_nodes(node):
        _names(child, found)
    return found


def _threshold(
    node: ast.expr, bounded: frozenset[str], row_names: frozenset[str], lets: Mapping[str, Expr]
) -> tuple[ast.expr, bool] | None:
    """(the threshold's expression, inclusive) when `node` is `bounded > t`, `bounded >= t`,
    `t < bounded` or `t <= bounded` with `t` free of row fields and lets."""
    if not isinstance(node, ast.Compare) or len(node.ops) != 1:
        return None
    left, op, right = node.left, node.ops[0], node.comparators[0]
    if isinstance(op, ast.Gt | ast.GtE) and dotted_name(left) in bounded:
        other, inclusive = right, isinstance(op, ast.GtE)
    elif isinstance(op, ast.Lt | ast.LtE) and dotted_name(right) in bounded:
        other, inclusive = left, isinstance(op, ast.LtE)
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
        found: tuple[ast.expr, bool] | None = None
        for part in _conjuncts(ast.parse(cond.source.strip(), mode="eval").body):
            found = _threshold(part, bounded, row_names, lets)
            if found is not None:
                break
            if not _names(part) <= row_names:
                return None
        if found is None:
            return None
        try:
            value = Expr(ast.unparse(found[0])).evaluate(lookup)
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
