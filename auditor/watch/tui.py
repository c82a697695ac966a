"""The terminal view of `portaudit watch`, drawn with rich; keys read in cbreak mode.

rich is imported here only, and this module only by the watch command, so `portaudit audit`
never pays for it. The loop waits for a key or the next refresh with select(), so a key acts
at once and refreshes keep their pace. Ctrl-C, `q`, and a closed terminal (SIGHUP, or EIO on
the terminal) all end it with the terminal restored.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from auditor.facts.model import PortUse
from auditor.watch.sample import Snapshot
from auditor.watch.view import Frame, SortKey, frame

BAR = 20
SORTS = list(SortKey)


def bar(ratio: float, width: int = BAR) -> Text:
    """A used/usable bar, coloured by how close it is to full."""
    filled = min(width, round(ratio * width))
    colour = "red" if ratio > 0.9 else "yellow" if ratio > 0.5 else "green"
    return Text("█" * filled, style=colour) + Text("·" * (width - filled), style="dim")


def eta_text(eta: float | None) -> str:
    if eta is None:
        return "-"
    if eta <= 0:
        return "FULL"
    if eta < 120:
        return f"{eta:.0f}s"
    if eta < 7200:
        return f"{eta / 60:.0f}m"
    return f"{eta / 3600:.0f}h"


def _port_use_line(f: Frame) -> Text:
    use = f.snapshot.port_use
    if not isinstance(use, PortUse):
        return Text(f"host-wide ports: unavailable ({getattr(use, 'reason', '')})", style="dim")
    udp = use.udp if isinstance(use.udp, int) else None
    ratio = max(use.tcp, udp or 0) / f.usable if f.usable else 0.0
    states = ", ".join(f"{k} {v}" for k, v in use.tcp_by_state.items()) or "none"
    out = Text("host-wide ports  ") + bar(ratio)
    out += Text(
        f" TCP {use.tcp}/{f.usable} ({states})  UDP {'?' if udp is None else udp}"
        f"  bound-inactive {use.tcp_bound if isinstance(use.tcp_bound, int) else '?'}"
    )
    return out


def _overflow_line(f: Frame) -> Text:
    total = f.snapshot.listen_overflows
    if total is None:
        return Text("listen overflows: unavailable", style="dim")
    rate = f.listen_overflow_rate
    style = "red" if rate else ""
    shown = "-" if rate is None else f"{rate:.1f}/s"
    return Text(f"listen overflows {shown} (total {total})", style=style)


def _conntrack_line(f: Frame) -> Text:
    ct = f.snapshot.conntrack
    if ct is None:
        return Text("conntrack: not loaded", style="dim")
    count, limit = ct
    ratio = count / limit if limit else 0.0
    return Text("conntrack        ") + bar(ratio) + Text(f" {count}/{limit} ({ratio:.0%})")


def render(f: Frame, sort: SortKey, filter_text: str, editing: str | None) -> Group:
    """The whole screen for one frame (pure: no terminal access)."""
    snap = f.snapshot
    head = Text(
        f"portaudit watch  #{snap.seq}  {time.strftime('%H:%M:%S', time.localtime(snap.wall))}"
        f"  refresh {snap.cost * 1000:.0f} ms  TIME_WAIT {snap.time_wait}"
        f"  destinations {f.destinations}  ({snap.source})",
        style="bold",
    )
    table = Table(expand=True, box=None, header_style="bold")
    for name, justify in (
        ("destination", "left"),
        ("used/usable", "left"),
        ("used", "right"),
        ("TW%", "right"),
        ("Δ", "right"),
        ("new/s", "right"),
        ("full in", "right"),
        ("held by", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name != "held by")  # type: ignore[arg-type]
    for r in f.rows:
        tw = f"{r.time_wait / r.used:.0%}" if r.used else "-"
        change = "-" if r.change is None else f"{r.change:+d}"
        rate = "-" if r.rate is None else f"{r.rate:.0f}"
        owners = ", ".join(f"{c}[{p}] {n}" for c, p, n in r.owners[:3])
        table.add_row(
            r.label,
            bar(r.ratio),
            f"{r.used}/{r.usable}",
            tw,
            change,
            rate,
            eta_text(r.eta),
            owners,
        )
    if not f.rows:
        table.add_row(Text("no client connections in the range", style="dim"))
    keys = (
        f"keys: q quit  s sort ({sort.value})  f filter"
        f" ({'typing: ' + editing if editing is not None else filter_text or 'none'})"
        "  c clear filter  +/- rows"
    )
    return Group(
        head,
        _port_use_line(f),
        _overflow_line(f),
        _conntrack_line(f),
        table,
        Text(keys, style="dim"),
    )


class _Closed(Exception):
    """The terminal went away (SIGHUP, or EIO writing to it)."""


def run_tui(sample: Callable[[], Snapshot], interval: float, top: int) -> int:
    """Draw and refresh until `q`, Ctrl-C or a closed terminal; returns the exit code."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    console = Console()

    def hangup(_sig: int, _frame: Any) -> None:
        raise _Closed

    old_hup = signal.signal(signal.SIGHUP, hangup)
    sort, filter_text, editing = SortKey.USED, "", None
    prev: Snapshot | None = None
    cur = sample()
    code = 0
    try:
        tty.setcbreak(fd)
        with Live(console=console, screen=True, auto_refresh=False, transient=True) as live:
            next_at = cur.at + interval
            while True:
                f = frame(prev, cur, top=top, sort=sort, filter_text=filter_text)
                live.update(render(f, sort, filter_text, editing), refresh=True)
                timeout = max(0.0, next_at - time.monotonic())
                ready, _, _ = select.select([fd], [], [], timeout)
                if ready:
                    data = os.read(fd, 32)
                    if not data:
                        raise _Closed
                    for ch in data.decode(errors="replace"):
                        if editing is not None:
                            if ch in "\r\n":
                                filter_text, editing = editing, None
                            elif ch == "\x1b":
                                editing = None
                            elif ch in "\x7f\b":
                                editing = editing[:-1]
                            elif ch.isprintable():
                                editing += ch
                        elif ch == "q":
                            return 0
                        elif ch == "s":
                            sort = SORTS[(SORTS.index(sort) + 1) % len(SORTS)]
                        elif ch == "f":
                            editing = ""
                        elif ch == "c":
                            filter_text = ""
                        elif ch == "+":
                            top += 1
                        elif ch == "-":
                            top = max(1, top - 1)
                    continue
                # a refresh that took longer than the interval is followed by the next at
                # once, never by a backlog of missed ones
                prev, cur = cur, sample()
                next_at = max(cur.at + interval, time.monotonic())
    except KeyboardInterrupt:
        code = 0
    except (_Closed, OSError):
        code = 0
    finally:
        signal.signal(signal.SIGHUP, old_hup)
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return code
