"""A small, safe expression language for rule conditions.

Conditions are Python syntax parsed with `ast.parse(mode="eval")`, then checked against an
allow-list of node types and evaluated by this module's own walker. Names are string keys into a
flat table of plain values (numbers, strings, booleans, tuples, str->int mappings): no Python
object is reachable, so there is no attribute, subscript or call escape of the kind that hit
simpleeval (#138) and asteval (#86). Unknown names are rejected at load time, with file:line.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ast

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


class _Mismatch(EvalError):
    """Values of kinds an operation cannot take, said in words; `Expr.evaluate` adds where."""


_SHOWN = 60
"""Longest value text quoted in an error; longer ones end in `...`."""


def describe(value: Value) -> str:
    """A value as an operator reads it in an error: `'20000 # low' (text)`, `131072 (a
    number)`; non-printable characters escaped, as repr does."""
    if isinstance(value, bool):
        kind = "yes/no"
    elif isinstance(value, (int, float)):
        kind = "a number"
    elif isinstance(value, str):
        kind = "text"
    elif value is None:
        return "None (no value)"
    elif isinstance(value, tuple):
        kind = "a list"
    else:
        kind = "a table"
    shown = repr(value)
    if len(shown) > _SHOWN:
        shown = shown[: _SHOWN - 3] + "..."
    return f"{shown} ({kind})"


_SYMBOLS = {
    "Add": "+",
    "Sub": "-",
    "Mult": "*",
    "Div": "/",
    "FloorDiv": "//",
    "Mod": "%",
    "Lt": "<",
    "LtE": "<=",
    "Gt": ">",
    "GtE": ">=",
    "Eq": "==",
    "NotEq": "!=",
    "In": "in",
    "NotIn": "not in",
}


@dataclass(frozen=True, slots=True)
class Missing:
    """A table entry for a name whose fact could not be collected."""

    reason: str


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "Add": operator.add,
    "Sub": operator.sub,
    "Mult": operator.mul,
    "Div": operator.truediv,
    "FloorDiv": operator.floordiv,
    "Mod": operator.mod,
}
"""By the name of the `ast` operator node: the module is imported only to parse."""
_CMPOPS: dict[str, Callable[[Any, Any], bool]] = {
    "Lt": operator.lt,
    "LtE": operator.le,
    "Gt": operator.gt,
    "GtE": operator.ge,
    "Eq": operator.eq,
    "NotEq": operator.ne,
    "In": lambda a, b: a in b,
    "NotIn": lambda a, b: a not in b,
}
_FUNCS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "abs": abs, "len": len}


def dotted_name(node: ast.expr) -> str | None:
    """`a.b.c` as the string "a.b.c", or None when the node is not a plain dotted name."""
    import ast

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
    import ast

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
        if type(node.op).__name__ not in _BINOPS:
            raise ExprSyntaxError(f"operator {type(node.op).__name__} is not allowed")
        _check(node.left, names)
        _check(node.right, names)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op).__name__ not in _CMPOPS:
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


Tree = tuple[Any, ...]
"""A checked expression as plain tuples (what the rule cache stores; see `_encode`)."""


def _parse(source: str) -> ast.Expression:
    import ast

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
    thousands of those. `tree` is that tree as plain tuples, which the rule cache keeps, so a
    cached catalog needs neither the parser nor the `ast` module.
    """

    __slots__ = ("_fn", "names", "source", "tree")

    def __init__(self, source: str) -> None:
        parsed = _parse(source)
        names: set[str] = set()
        _check(parsed, names)
        self.tree: Tree = _encode(parsed.body)
        self._fn: Compiled = _compile(self.tree)
        self.names = frozenset(names)
        self.source = source

    @classmethod
    def checked(cls, source: str, names: frozenset[str], tree: Tree) -> Expr:
        """An expression that `Expr(source)` accepted before, with the names and tree it found
        then (the rule cache's): compiled the first time it is evaluated, since most of a
        catalog's expressions never are on a given host (rules skipped, no rows to judge)."""
        e = cls.__new__(cls)
        e.names, e.source, e.tree = names, source, tree

        def first(lookup: Lookup) -> Value:
            e._fn = _compile(tree)
            return e._fn(lookup)

        e._fn = first
        return e

    def evaluate(self, lookup: Lookup) -> Value:
        try:
            return self._fn(lookup)
        except _Mismatch as exc:
            raise EvalError(f"{exc} in {self.source!r}") from None
        except (Skip, EvalError):
            raise
        except ZeroDivisionError:
            raise EvalError(f"division by zero in {self.source!r}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise EvalError(f"cannot evaluate {self.source!r}: {exc}") from None


def _encode(node: ast.expr) -> Tree:
    """The checked `node` as tuples: ("const", v), ("name", "a.b"), ("bool", is_and, parts),
    ("unary", op, x), ("bin", op, l, r), ("cmp", l, ((op, r), ...)), ("if", test, a, b),
    ("tuple", items), ("call", func, args); operators by their `ast` class name."""
    import ast

    if isinstance(node, ast.Constant):
        return ("const", node.value)
    if isinstance(node, (ast.Name, ast.Attribute)):
        return ("name", dotted_name(node) or "")
    if isinstance(node, ast.BoolOp):
        return ("bool", isinstance(node.op, ast.And), tuple(_encode(v) for v in node.values))
    if isinstance(node, ast.UnaryOp):
        return ("unary", type(node.op).__name__, _encode(node.operand))
    if isinstance(node, ast.BinOp):
        return ("bin", type(node.op).__name__, _encode(node.left), _encode(node.right))
    if isinstance(node, ast.Compare):
        pairs = zip(node.ops, node.comparators, strict=True)
        return (
            "cmp",
            _encode(node.left),
            tuple((type(op).__name__, _encode(c)) for op, c in pairs),
        )
    if isinstance(node, ast.IfExp):
        return ("if", _encode(node.test), _encode(node.body), _encode(node.orelse))
    if isinstance(node, (ast.Tuple, ast.List)):
        return ("tuple", tuple(_encode(e) for e in node.elts))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return ("call", node.func.id, tuple(_encode(a) for a in node.args))
    raise ExprSyntaxError(f"unexpected {type(node).__name__}")  # unreachable after _check


def _compile(tree: Tree) -> Compiled:
    """A closure computing `tree`; only the shapes `_encode` makes reach here."""
    kind = tree[0]
    if kind == "const":
        value = tree[1]
        return lambda lookup: value
    if kind == "name":
        name = tree[1]
        return lambda lookup: lookup(name)
    if kind == "bool":
        return _compile_boolop(tree[1], [_compile(v) for v in tree[2]])
    if kind == "unary":
        return _compile_unary(tree[1], _compile(tree[2]))
    if kind == "bin":
        return _compile_binop(tree[1], _compile(tree[2]), _compile(tree[3]))
    if kind == "cmp":
        pairs = [(op, _compile(c)) for op, c in tree[2]]
        return _compile_compare(_compile(tree[1]), pairs)
    if kind == "if":
        test, body, orelse = _compile(tree[1]), _compile(tree[2]), _compile(tree[3])
        return lambda lookup: body(lookup) if test(lookup) else orelse(lookup)
    if kind == "tuple":
        elts = [_compile(e) for e in tree[1]]
        return lambda lookup: tuple(e(lookup) for e in elts)
    if kind == "call":
        return _compile_call(tree[1], [_compile(a) for a in tree[2]])
    raise ExprSyntaxError(f"unexpected {kind!r}")


def _compile_boolop(is_and: bool, values: list[Compiled]) -> Compiled:
    def boolop(lookup: Lookup) -> Value:
        result: Value = is_and
        for v in values:
            result = v(lookup)
            if bool(result) != is_and:  # `and` stops at the first falsy, `or` at the first truthy
                return result
        return result

    return boolop


def _compile_call(name: str, args: list[Compiled]) -> Compiled:
    func = _FUNCS[name]

    def call(lookup: Lookup) -> Value:
        values = [a(lookup) for a in args]
        try:
            return func(*values)
        except TypeError:
            shown = " and ".join(describe(v) for v in values) or "nothing"
            raise _Mismatch(f"cannot take {name}() of {shown}") from None

    return call


def _compile_unary(op: str, operand: Compiled) -> Compiled:
    if op == "Not":
        return lambda lookup: not operand(lookup)

    def sign(lookup: Lookup) -> Value:
        value = operand(lookup)
        if isinstance(value, str) or not isinstance(value, (int, float)):
            raise _Mismatch(f"cannot {'negate' if op == 'USub' else 'take +'} {describe(value)}")
        return -value if op == "USub" else +value

    return sign


def _compile_binop(op: str, left: Compiled, right: Compiled) -> Compiled:
    func, joins = _BINOPS[op], op == "Add"

    def binop(lookup: Lookup) -> Value:
        a, b = left(lookup), right(lookup)
        sa, sb = isinstance(a, str), isinstance(b, str)
        if (sa or sb) and not (sa and sb and joins):
            raise _Mismatch(f"cannot compute {describe(a)} {_SYMBOLS[op]} {describe(b)}")
        try:
            return func(a, b)
        except TypeError:
            raise _Mismatch(f"cannot compute {describe(a)} {_SYMBOLS[op]} {describe(b)}") from None

    return binop


def _compile_compare(left: Compiled, pairs: list[tuple[str, Compiled]]) -> Compiled:
    ops = [(name, _CMPOPS[name], comp) for name, comp in pairs]

    def compare(lookup: Lookup) -> Value:
        a = left(lookup)
        for name, op, comp in ops:
            b = comp(lookup)
            try:
                holds = op(a, b)
            except TypeError:
                if name in ("In", "NotIn"):
                    raise _Mismatch(f"cannot look for {describe(a)} in {describe(b)}") from None
                raise _Mismatch(f"cannot compare {describe(a)} with {describe(b)}") from None
            if not holds:
                return False
            a = b
        return True

    return compare
