"""When two sysctl values are the same, and which integers the kernel reads from a text.

The kernel prints multi-value sysctls with tabs (`32768\t60999`) and parses integers with base
0 (`proc_get_long` -> `strtoul_lenient(.., 0)`: `0x10` and `16` are the same number, `010` is
8), so a config rule comparing a runtime value with a file's, and `fix` deciding whether a value
is already in force, must fold and compare alike, or one reports a drift the other will not fix.
`kernel_ints` is the one reading of "the integers the kernel holds after this text is written";
every judgement of a file's number goes through it.
"""

from __future__ import annotations

_SKIPPED = frozenset(b" \t\n\v\f\r\xa0")
"""Bytes `proc_skip_spaces` passes over (the kernel's isspace, Latin-1 NBSP included)."""
_SEPARATORS = frozenset(b" \t\n")
"""Bytes that may end a number (`proc_wspace_sep`); anything else after it is EINVAL."""
_TMPBUF = 22
"""`proc_get_long`'s TMPBUFLEN: a number (sign included) of 21 characters or more is EINVAL."""
_ULONG_MAX = 2**64 - 1
_DIGITS = {b: i for i, b in enumerate(b"0123456789abcdef")} | {
    b: 10 + i for i, b in enumerate(b"ABCDEF")
}


def fold(value: str) -> str:
    """Whitespace folded to single spaces, ends trimmed: the text as the kernel prints it."""
    return " ".join(value.split())


def _number(data: bytes, pos: int) -> tuple[int, int] | None:
    """`proc_get_long` at `pos`: (value, position after it), or None for EINVAL/ERANGE."""
    window = data[pos : pos + _TMPBUF - 1]
    i, neg = 0, False
    if window[:1] == b"-" and len(data) - pos > 1:
        neg, i = True, 1
    if i >= len(window) or not 0x30 <= window[i] <= 0x39:
        return None
    base = 10
    if window[i] == 0x30:  # _parse_integer_fixup_radix
        nxt = window[i + 1 : i + 3]
        if len(nxt) == 2 and nxt[0] in b"xX" and nxt[1] in _DIGITS:
            base, i = 16, i + 2
        else:
            base = 8
    value = 0
    while i < len(window):
        digit = _DIGITS.get(window[i])
        if digit is None or digit >= base:
            break
        value = value * base + digit
        i += 1
    if value > _ULONG_MAX or i == _TMPBUF - 1:
        return None
    end = pos + i
    if end < len(data) and data[end] not in _SEPARATORS:
        return None
    return (-value if neg else value), end


def kernel_ints(text: str, count: int = 1) -> tuple[int, ...] | None:
    """The integers a key holding `count` of them takes when `text` is written to it, or None
    when the kernel refuses the write (EINVAL).

    `__do_proc_dointvec` (kernel/sysctl.c): leading spaces skipped, each number read by
    `proc_get_long` (ASCII digits, an optional `-` and no `+`, base 0, ended by a space, tab,
    newline or the end), and once `count` numbers are read the rest is ignored: writing
    `1 # fast reuse` to a one-integer key sets 1. Unlike Python's int(), `1_000`, `١٢` and
    `+5` are refused. A key's own range (and int versus long) is the key's to check.
    """
    data = text.encode("utf-8", "surrogateescape")
    values: list[int] = []
    pos = 0
    while pos < len(data) and len(values) < count:
        while pos < len(data) and data[pos] in _SKIPPED:
            pos += 1
        if pos == len(data):
            break
        got = _number(data, pos)
        if got is None:
            return None
        value, pos = got
        values.append(value)
    return tuple(values) if values else None


def kernel_int(text: str) -> int | None:
    """The integer a one-integer key holds after `text` is written, or None (refused)."""
    got = kernel_ints(text, 1)
    return None if got is None else got[0]


def _as_int(token: str) -> int | None:
    """One whitespace-free token as the kernel reads it, or None when it is not a number."""
    return kernel_int(token) if token and not token[0].isspace() else None


def held_integers(runtime: str) -> tuple[int, ...] | None:
    """The integers a key holds, read from its value as the kernel prints it; None when it is
    not a key of integers (a word, a list the kernel prints otherwise, nothing)."""
    tokens = runtime.split()
    now = kernel_ints(runtime, len(tokens)) if tokens else None
    return now if now is not None and len(now) == len(tokens) else None


def holds_after_write(text: str, runtime: str) -> bool:
    """Whether a key that now reads `runtime` (as the kernel prints it) would read the same
    after `text` is written to it: the same value, or, for a key of integers (`runtime` is
    one or more of them), the same integers read from `text` the kernel's way, the rest of
    the line ignored (`1 # fast reuse` leaves a key reading `1` as it is) and the integers
    `text` does not give left as they are. A write the kernel refuses counts as not the
    same: what the key then holds is whatever it held before boot, not `runtime`."""
    if same_value(text, runtime):
        return True
    now = held_integers(runtime)
    if now is None:
        return False
    written = kernel_ints(text, len(now))
    return written is not None and written + now[len(written) :] == now


def same_value(a: str, b: str) -> bool:
    """Whether two values mean the same to the kernel: per whitespace-separated token, equal
    text or equal integers as the kernel reads them (`kernel_ints`)."""
    ta, tb = a.split(), b.split()
    if len(ta) != len(tb):
        return False
    for x, y in zip(ta, tb, strict=True):
        if x != y and (_as_int(x) is None or _as_int(x) != _as_int(y)):
            return False
    return True
