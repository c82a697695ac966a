"""Numbers and paths as the operator types them: ASCII only, nothing Python's int() and
float() would read that a person did not mean.

`int("١٢")` is 12 and `int("1_000")` is 1000, and `Path("")` is the current directory: a port,
a count or a file name typed wrongly must be refused naming the value, not read as something
else. Each reader raises ValueError with a message that quotes the value (escaped); callers
add which option or file it came from.
"""

from __future__ import annotations


def path_text(text: str) -> str:
    """A path as typed, refused when empty (`Path("")` would be the current directory)."""
    if not text:
        raise ValueError("'' is an empty path")
    return text
