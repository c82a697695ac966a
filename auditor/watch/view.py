"""Two samples -> what `portaudit watch` shows: rows, rates, time to exhaustion (pure).

The rate of new connections to a destination comes from its counts alone: closed
connections stay in TIME_WAIT for a fixed 60 s (TCP_TIMEWAIT_LEN), so about TIME_WAIT / 60
of them expire each second, and used(t) = live + TIME_WAIT grows by new connections less
those expiries. New connections per second are thus the growth of `used` plus TIME_WAIT / 60;
the range runs out in (usable - used) / growth while `used` grows.
"""

from __future__ import annotations

import enum
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
        src, dst, dport = self.dest
        return f"{src} -> {endpoint(dst, dport)}"


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


def rows(prev: Snapshot | None, cur: Snapshot) -> list[Row]:
    usable = _usable(cur)
    dt = cur.at - prev.at if prev is not None else 0.0
    out = []
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
        out.append(Row(dest, used, tw, usable, change, rate, eta, cur.owners.get(dest, ())))
    return out


def _sort_value(row: Row, key: SortKey) -> tuple[float, str]:
    if key is SortKey.RATE:
        return (-(row.rate or 0.0), row.label)
    if key is SortKey.ETA:
        return (row.eta if row.eta is not None else float("inf"), row.label)
    if key is SortKey.CHANGE:
        return (-(row.change or 0), row.label)
    return (-row.used, row.label)


def frame(
    prev: Snapshot | None,
    cur: Snapshot,
    *,
    top: int = 10,
    sort: SortKey = SortKey.USED,
    filter_text: str = "",
) -> Frame:
    """The rows to show: filtered by a substring of "src -> dst:port", sorted, cut to `top`."""
    all_rows = rows(prev, cur)
    shown = [r for r in all_rows if filter_text in r.label] if filter_text else all_rows
    shown.sort(key=lambda r: _sort_value(r, sort))
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
        rows=tuple(shown[:top]),
        destinations=len(all_rows),
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
