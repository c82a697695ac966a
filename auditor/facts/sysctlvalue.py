"""When two sysctl values are the same: one fold and one equality for every comparison.

The kernel prints multi-value sysctls with tabs (`32768\t60999`) and parses integers with base
0 (`proc_get_long` -> `kstrtoul(.., 0)`: `0x10` and `16` are the same number, `010` is 8), so a
config rule comparing a runtime value with a file's, and `fix` deciding whether a value is
already in force, must fold and compare alike, or one reports a drift the other will not fix.
"""

from __future__ import annotations

import re

_OCTAL = re.compile(r"[+-]?0[0-7]+")


def fold(value: str) -> str:
    """Whitespace folded to single spaces, ends trimmed: the text as the kernel prints it."""
    return " ".join(value.split())


def _as_int(token: str) -> int | None:
    try:
        if _OCTAL.fullmatch(token):
            return int(token, 8)
        return int(token, 0)
    except ValueError:
        return None


def same_value(a: str, b: str) -> bool:
    """Whether two values mean the same to the kernel: per whitespace-separated token, equal
    text or equal integers read with base 0."""
    ta, tb = a.split(), b.split()
    if len(ta) != len(tb):
        return False
    for x, y in zip(ta, tb, strict=True):
        if x != y and (_as_int(x) is None or _as_int(x) != _as_int(y)):
            return False
    return True
