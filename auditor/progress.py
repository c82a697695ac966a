"""A one-line progress bar on stderr for long socket scans.

Only when stderr is a terminal (a timer's journal or a pipe gets nothing) and only once the scan
has run for a second, so the idle host and every script see no output at all. Drawing is rate
limited: the hot loop pays one clock read per receive buffer, not per socket.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`update(done)` as work proceeds; `close()` erases the line if one was drawn."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        delay: float = 1.0,
        interval: float = 0.1,
        width: int = 30,
    ) -> None:
        self.label = label
        self.total = total if total and total > 0 else None
        self.stream = stream if stream is not None else sys.stderr
        self.delay = delay
        self.interval = interval
        self.width = width
        self.start = time.monotonic()
        self.last = 0.0
        self.drawn = False
        try:
            self.enabled = self.stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False

    def render(self, done: int) -> str:
        """The line for `done` units of work (pure: tests call it directly)."""
        if self.total is None:
            return f"{self.label}: {done:,} sockets"
        frac = min(done / self.total, 1.0)
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        return f"{self.label} [{bar}] {frac:4.0%} ({done:,}/~{self.total:,} sockets)"

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < self.delay or now - self.last < self.interval:
            return
        self.last = now
        self.stream.write("\r" + self.render(done) + "\x1b[K")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
