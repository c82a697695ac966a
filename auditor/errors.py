"""One exception hierarchy; `cli.py` catches it once and prints one line.

Every error carries the exit code the CLI must return (`auditor.exitcodes.ExitCode`, listed in
docs/design.md: 2 for bad input or usage, 3 when `fix` failed and was rolled back), so no
command maps errors on its own.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: netlink.py must not import typing (tcp.py)
if TYPE_CHECKING:
    from pathlib import Path


def printable(text: str) -> str:
    """`text` with every non-printable character escaped as Python writes it (`\\x01`, `\\n`,
    `\\u200b`, an undecodable argv byte as `\\udcff`): a value the operator typed or a file
    held, echoed in an error, can neither break the one line nor drive the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def quote(value: object) -> str:
    """A value as an error quotes it: in quotes, non-printable characters escaped."""
    return repr(str(value))


class AuditorError(Exception):
    """Base of every error portaudit reports to the operator as one line (its text made
    `printable`, whichever caller built it)."""

    exit_code: int = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        message = printable(message)
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(AuditorError):
    """A bad flag or argument (exit 2)."""

    exit_code = 2


class InputError(AuditorError):
    """Bad input: a rule file, a config file, `/proc` content, a snapshot (exit 2).

    The message names the file and, where known, the line, as `path:line: what is wrong`,
    so an operator can open the exact spot.
    """

    exit_code = 2

    def __init__(self, path: str | Path | None, line: int | None, message: str) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path = None if path is None else str(path)
        self.line = line
        self.detail = message


class RefusedError(AuditorError):
    """A write portaudit will not make (no terminal and no --yes, unsafe target): exit 2."""

    exit_code = 2


class FixError(AuditorError):
    """`fix` failed after it started changing things, and what it changed was restored (exit 3)."""

    exit_code = 3
