"""Two samples -> what `portaudit watch` shows: rows, rates, time to exhaustion (pure).

The rate of new connections to a destination comes from its counts alone: closed
connections stay in TIME_WAIT for a fixed 60 s (TCP_TIMEWAIT_LEN), so about TIME_WAIT / 60
of them expire each second, and used(t) = live + TIME_WAIT grows by new connections less
those expiries. New connections per second are thus the growth of `used` plus TIME_WAIT / 60;
the range runs out in (usable - used) / growth while `used` grows.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass

from auditor.facts.model import PortRange, PortUse, endpoint
from auditor.facts.tcp import Dest
from auditor.watch.sample import Snapshot

TIME_WAIT_SECONDS = 60.0


class SortKey(enum.StrEnum):
    USED = "used"
    RATE = "rate"
    ETA = "eta"
    CHANGE = "change"


@dataclass(frozen=True, slots=True)
class Row:
    dest: Dest
    used: int
    time_wait: int
    usable: int
    change: int | None
    """Ports used more (or fewer) than at the previous refresh; None on the first."""
    rate: float | None
    """New connections per second; None on the first refresh."""
    eta: float | None
    """Seconds until the range runs out at the current growth; None when not growing."""
    owners: tuple[tuple[str, int, int], ...]

    @property
    def ratio(self) -> float:
        return self.used / self.usable if self.usable else 1.0

    @property
    def label(self) -> str:
        return _label(self.dest)


@dataclass(frozen=True, slots=True)
class Frame:
    """Everything one screen (or one JSON line) shows."""

    snapshot: Snapshot
    interval: float | None
    rows: tuple[Row, ...]
    destinations: int
    """Destinations in the table before the filter and the top-N cut."""
    listen_overflow_rate: float | None
    usable: int


def _usable(snap: Snapshot) -> int:
    return snap.ports.usable if isinstance(snap.ports, PortRange) else 0


_Measured = tuple[Dest, int, int, int | None, float | None, float | None]
"""(dest, used, TIME_WAIT, change, rate, eta): a row's numbers, before it is a `Row`."""


def _measure(prev: Snapshot | None, cur: Snapshot) -> list[_Measured]:
    usable = _usable(cur)
    dt = cur.at - prev.at if prev is not None else 0.0
    out: list[_Measured] = []
    for dest, (used, tw) in cur.per_dest.items():
        change = rate = eta = None
        if prev is not None and dt > 0:
            before = prev.per_dest.get(dest, (0, 0))[0]
            change = used - before
            growth = change / dt
            rate = max(0.0, growth + tw / TIME_WAIT_SECONDS)
            if used >= usable > 0:
                eta = 0.0
            elif growth > 0 and usable > 0:
                eta = (usable - used) / growth
        out.append((dest, used, tw, change, rate, eta))
    return out


def _row(m: _Measured, cur: Snapshot) -> Row:
    dest, used, tw, change, rate, eta = m
    return Row(dest, used, tw, _usable(cur), change, rate, eta, cur.owners.get(dest, ()))


def rows(prev: Snapshot | None, cur: Snapshot) -> list[Row]:
    return [_row(m, cur) for m in _measure(prev, cur)]


def _number(m: _Measured, key: SortKey) -> float:
    """The sort key's number (smaller first); ties are broken by the row's label."""
    _dest, used, _tw, change, rate, eta = m
    if key is SortKey.RATE:
        return -(rate or 0.0)
    if key is SortKey.ETA:
        return eta if eta is not None else float("inf")
    if key is SortKey.CHANGE:
        return -(change or 0)
    return -used


def _label(dest: Dest) -> str:
    src, dst, dport = dest
    return f"{src} -> {endpoint(dst, dport)}"


def _first(measured: list[_Measured], key: SortKey, n: int) -> list[_Measured]:
    """The first `n` in the order (number, label): the cut is found on the numbers alone,
    so only the rows at or before it get a label (a host may have 100,000 destinations)."""
    if n <= 0 or not measured:
        return []
    numbers = [_number(m, key) for m in measured]
    cut = heapq.nsmallest(n, numbers)[-1] if len(measured) > n else max(numbers)
    kept = [m for m, x in zip(measured, numbers, strict=True) if x <= cut]
    kept.sort(key=lambda m: (_number(m, key), _label(m[0])))
    return kept[:n]


def frame(
    prev: Snapshot | None,
    cur: Snapshot,
    *,
    top: int = 10,
    sort: SortKey = SortKey.USED,
    filter_text: str = "",
) -> Frame:
    """The rows to show: filtered by a substring of "src -> dst:port", sorted, cut to `top`.
    Only the rows shown become `Row`s."""
    measured = _measure(prev, cur)
    shown = [m for m in measured if filter_text in _label(m[0])] if filter_text else measured
    interval = cur.at - prev.at if prev is not None else None
    overflow_rate = None
    if (
        prev is not None
        and interval
        and cur.listen_overflows is not None
        and prev.listen_overflows is not None
    ):
        overflow_rate = max(0, cur.listen_overflows - prev.listen_overflows) / interval
    return Frame(
        snapshot=cur,
        interval=interval,
        rows=tuple(_row(m, cur) for m in _first(shown, sort, top)),
        destinations=len(measured),
        listen_overflow_rate=overflow_rate,
        usable=_usable(cur),
    )


def _use_json(use: PortUse | object) -> dict[str, object]:
    if not isinstance(use, PortUse):
        return {"unavailable": getattr(use, "reason", "")}
    return {
        "tcp": use.tcp,
        "udp": use.udp if isinstance(use.udp, int) else None,
        "tcp_by_state": use.tcp_by_state,
        "tcp_bound": use.tcp_bound if isinstance(use.tcp_bound, int) else None,
    }


def frame_json(f: Frame) -> dict[str, object]:
    """One line of `watch --format json`: plain values, rounded, stable keys."""
    snap = f.snapshot
    ct = snap.conntrack
    return {
        "seq": snap.seq,
        "time": round(snap.wall, 3),
        "interval_s": None if f.interval is None else round(f.interval, 3),
        "cost_s": round(snap.cost, 4),
        "source": snap.source,
        "usable": f.usable,
        "time_wait": snap.time_wait,
        "destinations": f.destinations,
        "port_use": _use_json(snap.port_use),
        "listen_overflows": {
            "total": snap.listen_overflows,
            "per_s": None if f.listen_overflow_rate is None else round(f.listen_overflow_rate, 3),
        },
        "conntrack": None if ct is None else {"count": ct[0], "max": ct[1]},
        "top": [
            {
                "src": r.dest[0],
                "dst": r.dest[1],
                "dport": r.dest[2],
                "used": r.used,
                "time_wait": r.time_wait,
                "ratio": round(r.ratio, 4),
                "change": r.change,
                "new_per_s": None if r.rate is None else round(r.rate, 2),
                "eta_s": None if r.eta is None else round(r.eta, 1),
                "owners": [{"command": c, "pid": p, "connections": n} for c, p, n in r.owners],
            }
            for r in f.rows
        ],
    }
