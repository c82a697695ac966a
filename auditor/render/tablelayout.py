"""The findings table laid out as `tabulate(rows, headers, tablefmt="simple")` lays it out.

Importing tabulate loads `dataclasses`, `inspect`, `csv` and more: on a host with findings,
drawing five text columns cost more than judging them. The table's cells are text that
`render/table.py` has already wrapped, which tabulate handles in one way: each column is as wide
as its widest line (and at least its header plus two), cells are stripped and padded on the
right, a multi-line cell's lines go on consecutive output lines with the rest of the row padded
below, columns are joined by two spaces, a dashed line follows the header, and trailing spaces
are dropped. `simple_table` does exactly that, and hands anything outside it to tabulate
itself: a column tabulate would read as numbers (aligned on the decimal point), or text with a
character whose width `len` may not give (control characters, tabs, anything non-ASCII except
the ellipsis the wrapper adds). A property test holds the two to the same output.
"""

from __future__ import annotations

from collections.abc import Sequence

_PLAIN = frozenset(map(chr, range(0x20, 0x7F))) | {"\n", "…"}
"""Characters whose display width is `len`'s and that tabulate treats as text."""
_NUMERIC = frozenset("0123456789+-.,_ eE\n")


def _is_text(cell: str) -> bool:
    """True when tabulate would type `cell` as a string (not empty, bool, int or float)."""
    if not cell or cell in ("True", "False") or not set(cell) - _NUMERIC:
        return False
    try:
        float(cell)
    except ValueError:
        return True
    return False


def _lines(text: str, multiline: bool) -> list[str]:
    if not text and multiline:
        return []
    return text.split("\n")


def simple_table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """`tabulate(rows, headers=headers, tablefmt="simple")` for rows of text cells."""
    columns = list(zip(*rows, strict=True)) if rows else []
    plain = all(set(h) <= _PLAIN and "\n" not in h for h in headers) and all(
        set(cell) <= _PLAIN for row in rows for cell in row
    )
    if (
        not rows
        or len(columns) != len(headers)
        or not plain
        or not all(any(_is_text(cell) for cell in col) for col in columns)
    ):
        from tabulate import tabulate

        return tabulate(rows, headers=list(headers), tablefmt="simple")
    # Once any cell has a line break, an empty cell has no lines (a row of them none at all);
    # before that, every cell is one line.
    multiline = any("\n" in cell for row in rows for cell in row)
    cells = [[_lines(cell.strip(), multiline) for cell in col] for col in columns]
    widths = [
        max(len(h) + 2, *(len(line) for cell in col for line in cell))
        for h, col in zip(headers, cells, strict=True)
    ]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths).rstrip(),
    ]
    for r in range(len(rows)):
        row = [col[r] for col in cells]
        for i in range(max(len(cell) for cell in row)):
            lines.append(
                "  ".join(
                    (cell[i] if i < len(cell) else "").ljust(w)
                    for cell, w in zip(row, widths, strict=True)
                ).rstrip()
            )
    return "\n".join(lines)
