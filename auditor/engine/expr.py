"""A small, safe expression language for rule conditions.

Conditions are Python syntax parsed with `ast.parse(mode="eval")`, then checked against an
allow-list of node types and evaluated by this module's own walker. Names are string keys into a
flat table of plain values (numbers, strings, booleans, tuples, str->int mappings): no Python
object is reachable, so there is no attribute, subscript or call escape of the kind that hit
simpleeval (#138) and asteval (#86). Unknown names are rejected at load time, with file:line.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Value = Any
"""int | float | str | bool | None | tuple[Value, ...] | Mapping[str, int]"""


class ExprSyntaxError(ValueError):
    """The expression is not in the language; the message says which construct."""


class Skip(Exception):
    """A name's fact is unavailable on this host: the rule (or subject) is skipped, not failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EvalError(Exception):
    """The expression failed on these values (division by zero, comparing a string to a number)."""


@dataclass(frozen=True, slots=True)
class Missing:
    """A table entry for a name whose fact could not be collected."""

    reason: str


_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_FUNCS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "abs": abs, "len": len}


def dotted_name(node: ast.expr) -> str | None:
    """`a.b.c` as the string "a.b.c", or None when the node is not a plain dotted name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _check(node: ast.AST, names: set[str]) -> None:
    """Reject every node outside the allow-list; collect the dotted names used."""
    if isinstance(node, ast.Expression):
        _check(node.body, names)
    elif isinstance(node, (ast.Name, ast.Attribute)):
        name = dotted_name(node)
        if name is None:
            raise ExprSyntaxError("attribute access is only allowed on names (a.b.c)")
        if any(part.startswith("_") for part in name.split(".")):
            raise ExprSyntaxError(f"name {name!r}: parts may not start with '_'")
        names.add(name)
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, (int, float, str, bool, type(None))):
            raise ExprSyntaxError(f"constant {node.value!r} is not allowed")
    elif isinstance(node, ast.BoolOp):
        for v in node.values:
            _check(v, names)
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
            raise ExprSyntaxError(f"operator {type(node.op).__name__} is not allowed")
        _check(node.operand, names)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise ExprSyntaxError(f"operator {type(node.op).__name__} is not allowed")
        _check(node.left, names)
        _check(node.right, names)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _CMPOPS:
                raise ExprSyntaxError(f"comparison {type(op).__name__} is not allowed")
        _check(node.left, names)
        for c in node.comparators:
            _check(c, names)
    elif isinstance(node, ast.IfExp):
        _check(node.test, names)
        _check(node.body, names)
        _check(node.orelse, names)
    elif isinstance(node, (ast.Tuple, ast.List)):
        for e in node.elts:
            _check(e, names)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
            raise ExprSyntaxError("only min(), max(), abs() and len() may be called")
        if node.keywords:
            raise ExprSyntaxError("keyword arguments are not allowed")
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise ExprSyntaxError("*args is not allowed")
            _check(a, names)
    else:
        raise ExprSyntaxError(f"{type(node).__name__} is not allowed in a rule expression")


class Expr:
    """A checked expression: `names` lists what it reads; `evaluate(lookup)` computes it."""

    __slots__ = ("_tree", "names", "source")

    def __init__(self, source: str) -> None:
        if len(source) > 2000:
            raise ExprSyntaxError("expression longer than 2000 characters")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExprSyntaxError(f"not a valid expression: {exc.msg}") from None
        names: set[str] = set()
        _check(tree, names)
        self._tree = tree.body
        self.names = frozenset(names)
        self.source = source

    def evaluate(self, lookup: Callable[[str], Value]) -> Value:
        try:
            return _eval(self._tree, lookup)
        except (Skip, EvalError):
            raise
        except ZeroDivisionError:
            raise EvalError(f"division by zero in {self.source!r}") from None
        except (TypeError, ValueError) as exc:
            raise EvalError(f"{exc} in {self.source!r}") from None


def _eval(node: ast.expr, lookup: Callable[[str], Value]) -> Value:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Name, ast.Attribute)):
        return lookup(dotted_name(node) or "")
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Value = True
            for v in node.values:
                result = _eval(v, lookup)
                if not result:
                    return result
            return result
        for v in node.values:
            result = _eval(v, lookup)
            if result:
                return result
        return result
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, lookup)
        if isinstance(node.op, ast.Not):
            return not operand
        if isinstance(node.op, ast.USub):
            return -operand
        return +operand
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, lookup), _eval(node.right, lookup)
        strings = isinstance(left, str), isinstance(right, str)
        if any(strings) and not (all(strings) and isinstance(node.op, ast.Add)):
            raise EvalError("arithmetic on a string")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, lookup)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, lookup)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, lookup) else node.orelse, lookup)
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_eval(e, lookup) for e in node.elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return _FUNCS[node.func.id](*(_eval(a, lookup) for a in node.args))
    raise EvalError(f"unexpected {type(node).__name__}")  # unreachable after _check


def table_lookup(table: Mapping[str, Value]) -> Callable[[str], Value]:
    """A lookup over a flat table that turns `Missing` entries into `Skip`."""

    def lookup(name: str) -> Value:
        try:
            value = table[name]
        except KeyError:
            raise Skip(f"{name} is not known on this host") from None
        if isinstance(value, Missing):
            raise Skip(value.reason)
        return value

    return lookup
