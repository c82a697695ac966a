"""Message templates: `{dotted.name}` and `{dotted.name:spec}`, nothing else.

`str.format` would let a rule reach `{x.__class__}` or index objects; here the field is a key of
the flat name table and the spec is applied with `format(value, spec)`, so a template can only
print values the rule could already read.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from auditor.engine.expr import ExprSyntaxError, Value

_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9][A-Za-z0-9_-]*)*$")


class Template:
    __slots__ = ("_parts", "names", "source")

    def __init__(self, source: str) -> None:
        self._parse(source)

    @classmethod
    def checked(cls, source: str, names: frozenset[str]) -> Template:
        """A template that `Template(source)` accepted before, with the names it found then
        (the rule cache's): parsed the first time it is rendered (most never are)."""
        t = cls.__new__(cls)
        t._parts, t.names, t.source = None, names, source
        return t

    def _parse(self, source: str) -> None:
        import string

        parts: list[tuple[str, str | None, str]] = []
        names: set[str] = set()
        try:
            parsed = list(string.Formatter().parse(source))
        except ValueError as exc:
            raise ExprSyntaxError(f"bad template: {exc}") from None
        for literal, field, spec, conversion in parsed:
            if field is None:
                parts.append((literal, None, ""))
                continue
            if conversion:
                raise ExprSyntaxError(f"template field {{{field}!{conversion}}}: no conversions")
            if not _FIELD.match(field):
                raise ExprSyntaxError(f"template field {{{field}}}: only dotted names are allowed")
            if spec and ("{" in spec or "}" in spec):
                raise ExprSyntaxError(f"template field {{{field}}}: nested fields are not allowed")
            names.add(field)
            parts.append((literal, field, spec or ""))
        self._parts: tuple[tuple[str, str | None, str], ...] | None = tuple(parts)
        self.names = frozenset(names)
        self.source = source

    def render(self, lookup: Callable[[str], Value]) -> str:
        if self._parts is None:
            self._parse(self.source)
        assert self._parts is not None
        out: list[str] = []
        for literal, field, spec in self._parts:
            out.append(literal)
            if field is not None:
                value = lookup(field)
                try:
                    out.append(format(value, spec))
                except (TypeError, ValueError):
                    out.append(str(value))
        return "".join(out)
