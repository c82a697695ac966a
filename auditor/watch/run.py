"""`portaudit watch`: pick the terminal view or the JSON lines, and keep the refresh pace."""

from __future__ import annotations

import json
import os
import sys
import time

from auditor.errors import UsageError
from auditor.hostfs import HostRoot
from auditor.watch.sample import Sampler, Snapshot
from auditor.watch.view import frame, frame_json


def watch(
    host: HostRoot, *, interval: float, top: int, fmt: str, once: bool, count: int | None
) -> int:
    """Run the view; returns the exit code. `fmt` is "table" (the live view) or "json"."""
    if not interval > 0 or interval > 3600:
        raise UsageError(f"--interval: expected seconds between 0 and 3600, got {interval}")
    if top < 1:
        raise UsageError(f"--top: expected 1 or more, got {top}")
    sampler = Sampler(host, top=top)
    if fmt == "json" or once:
        return _json_lines(sampler, interval, top, 1 if once else count)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("watch needs a terminal; use --format json for plain output")
    from auditor.watch.tui import run_tui

    return run_tui(sampler.sample, interval, top)


def _json_lines(sampler: Sampler, interval: float, top: int, count: int | None) -> int:
    """One JSON line per interval, each with the rates since the previous sample (the first
    line comes after one interval). A closed pipe or Ctrl-C ends it quietly."""
    prev: Snapshot = sampler.sample()
    printed = 0
    try:
        while count is None or printed < count:
            time.sleep(max(0.0, prev.at + interval - time.monotonic()))
            cur = sampler.sample()
            line = json.dumps(frame_json(frame(prev, cur, top=top)), separators=(",", ":"))
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            printed += 1
            prev = cur
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # stdout is gone: point it at /dev/null so the interpreter's final flush is quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0
