"""Numbers and paths as the operator types them: ASCII only, nothing Python's int() and
float() would read that a person did not mean.

`int("١٢")` is 12 and `int("1_000")` is 1000, and `Path("")` is the current directory: a port,
a count or a file name typed wrongly must be refused naming the value, not read as something
else. Each reader raises ValueError with a message that quotes the value (escaped); callers
add which option or file it came from.
"""

from __future__ import annotations

import re

from auditor.errors import quote

MAX_DIGITS = 20
"""Longer whole numbers are refused before int() sees them (no count or port needs more)."""


def whole_number(text: str) -> int:
    """A whole number in ASCII digits, with an optional leading `-` (ranges are the caller's)."""
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"{quote(text)} is not a whole number in ASCII digits")
    if len(digits) > MAX_DIGITS:
        raise ValueError(f"{quote(text[:24] + '...')} has more than {MAX_DIGITS} digits")
    return int(text)


def decimal_number(text: str) -> float:
    """A number such as `3`, `0.5` or `1e-3` in ASCII, as float() reads it otherwise (so
    `nan` and `inf` reach the caller's range check), without digit separators or spaces."""
    if not text.isascii() or "_" in text or text != text.strip() or len(text) > 64:
        raise ValueError(f"{quote(text)} is not a number in ASCII digits")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{quote(text)} is not a number") from None


def path_text(text: str) -> str:
    """A path as typed, refused when empty (`Path("")` would be the current directory)."""
    if not text:
        raise ValueError("'' is an empty path")
    return text


_YAML_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_YAML_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)?\.[0-9]*(?:[eE][-+]?[0-9]+)?")


def plain_yaml_number(text: str, is_float: bool) -> int | float:
    """A YAML number written in plain ASCII decimal (`8080`, `-1`, `0.7`, `1.5e3`); the other
    forms YAML 1.1 reads as numbers (`1_000`, `0x10`, `010` as 8, `1:30` as 90, `.inf`,
    `.nan`) raise ValueError."""
    if len(text) <= 64 and (_YAML_FLOAT if is_float else _YAML_INT).fullmatch(text):
        if not is_float:
            return int(text)
        if any(c.isdigit() for c in text):
            return float(text)
    kind = "a number" if is_float else "a whole number"
    raise ValueError(f"{quote(text)} is not {kind} in plain decimal ASCII digits")
