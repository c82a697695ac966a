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
from collections.abc import Callable
from typing import Any

from auditor.record import dataclass

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


Lookup = Callable[[str], Value]
Compiled = Callable[[Lookup], Value]


def _parse(source: str) -> ast.Expression:
    if len(source) > 2000:
        raise ExprSyntaxError("expression longer than 2000 characters")
    try:
        return ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprSyntaxError(f"not a valid expression: {exc.msg}") from None


class Expr:
    """A checked expression: `names` lists what it reads; `evaluate(lookup)` computes it.

    The checked tree is compiled once into nested closures, with every name and operator
    resolved at load time: a rule runs once per destination, and a busy proxy host has tens of
    thousands of those.
    """

    __slots__ = ("_fn", "names", "source")

    def __init__(self, source: str) -> None:
        tree = _parse(source)
        names: set[str] = set()
        _check(tree, names)
        self._fn: Compiled = _compile(tree.body)
        self.names = frozenset(names)
        self.source = source

    @classmethod
    def checked(cls, source: str, names: frozenset[str]) -> Expr:
        """An expression that `Expr(source)` accepted before, with the names it found then
        (the rule cache's): compiled the first time it is evaluated, since most of a catalog's
        expressions never are on a given host (rules skipped, no rows to judge)."""
        e = cls.__new__(cls)
        e.names, e.source = names, source

        def first(lookup: Lookup) -> Value:
            e._fn = _compile(_parse(source).body)
            return e._fn(lookup)

        e._fn = first
        return e

    def evaluate(self, lookup: Lookup) -> Value:
        try:
            return self._fn(lookup)
        except (Skip, EvalError):
            raise
        except ZeroDivisionError:
            raise EvalError(f"division by zero in {self.source!r}") from None
        except (TypeError, ValueError) as exc:
            raise EvalError(f"{exc} in {self.source!r}") from None


def _compile(node: ast.expr) -> Compiled:
    """A closure computing `node`; only the node types `_check` admits reach here."""
    if isinstance(node, ast.Constant):
        value = node.value
        return lambda lookup: value
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = dotted_name(node) or ""
        return lambda lookup: lookup(name)
    if isinstance(node, ast.BoolOp):
        return _compile_boolop(isinstance(node.op, ast.And), [_compile(v) for v in node.values])
    if isinstance(node, ast.UnaryOp):
        return _compile_unary(node.op, _compile(node.operand))
    if isinstance(node, ast.BinOp):
        return _compile_binop(node.op, _compile(node.left), _compile(node.right))
    if isinstance(node, ast.Compare):
        pairs = [
            (_CMPOPS[type(op)], _compile(c))
            for op, c in zip(node.ops, node.comparators, strict=True)
        ]
        return _compile_compare(_compile(node.left), pairs)
    if isinstance(node, ast.IfExp):
        test, body, orelse = _compile(node.test), _compile(node.body), _compile(node.orelse)
        return lambda lookup: body(lookup) if test(lookup) else orelse(lookup)
    if isinstance(node, (ast.Tuple, ast.List)):
        elts = [_compile(e) for e in node.elts]
        return lambda lookup: tuple(e(lookup) for e in elts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        func, args = _FUNCS[node.func.id], [_compile(a) for a in node.args]
        return lambda lookup: func(*(a(lookup) for a in args))
    raise ExprSyntaxError(f"unexpected {type(node).__name__}")  # unreachable after _check


def _compile_boolop(is_and: bool, values: list[Compiled]) -> Compiled:
    def boolop(lookup: Lookup) -> Value:
        result: Value = is_and
        for v in values:
            result = v(lookup)
            if bool(result) != is_and:  # `and` stops at the first falsy, `or` at the first truthy
                return result
        return result

    return boolop


def _compile_unary(op: ast.unaryop, operand: Compiled) -> Compiled:
    if isinstance(op, ast.Not):
        return lambda lookup: not operand(lookup)
    if isinstance(op, ast.USub):
        return lambda lookup: -operand(lookup)
    return lambda lookup: +operand(lookup)


def _compile_binop(op: ast.operator, left: Compiled, right: Compiled) -> Compiled:
    func, joins = _BINOPS[type(op)], isinstance(op, ast.Add)

    def binop(lookup: Lookup) -> Value:
        a, b = left(lookup), right(lookup)
        sa, sb = isinstance(a, str), isinstance(b, str)
        if (sa or sb) and not (sa and sb and joins):
            raise EvalError("arithmetic on a string")
        return func(a, b)

    return binop


def _compile_compare(
    left: Compiled, pairs: list[tuple[Callable[[Any, Any], bool], Compiled]]
) -> Compiled:
    def compare(lookup: Lookup) -> Value:
        a = left(lookup)
        for op, comp in pairs:
            b = comp(lookup)
            if not op(a, b):
                return False
            a = b
        return True

    return compare
