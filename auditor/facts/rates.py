"""Counter increases per minute between two runs, from a small state file.

`/proc/net/netstat` and `/proc/net/snmp` count since boot, so a host that overflowed its accept
queue once last month shows `ListenOverflows 1` forever. What matters to an operator is whether
it is happening now: the increase since the previous run, per minute. Each run that may save
state leaves its counters in `/var/lib/portaudit/counters.json` (under `--root`); the next run
subtracts. A reboot resets the counters, and so does a network namespace that was recreated:
both show up as a different boot id / namespace or as a counter that went down, and the run
reports the rates as unavailable (with the reason) rather than as a huge or negative change.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.atomicfile import write_atomic
from auditor.facts.model import Facts, Unavailable
from auditor.hostfs import HostRoot

STATE_FILE = "/var/lib/portaudit/counters.json"
STATE_SCHEMA = 1
MAX_AGE_SECONDS = 3600.0
"""An earlier run older than this is too old for a rate to say anything about "now"."""

GAUGES: frozenset[tuple[str, str]] = frozenset(
    {
        ("Tcp", "RtoAlgorithm"),
        ("Tcp", "RtoMin"),
        ("Tcp", "RtoMax"),
        ("Tcp", "MaxConn"),
        ("Tcp", "CurrEstab"),
        ("Ip", "Forwarding"),
        ("Ip", "DefaultTTL"),
    }
)
"""Fields of `/proc/net/snmp` that are settings or current values, not counters: no rate."""

Counters = dict[str, dict[str, int]]
Rates = dict[str, dict[str, float]]


@dataclass(frozen=True, slots=True)
class CounterState:
    """What one run leaves for the next: when, on which boot and namespace, and the counters."""

    collected_at: float
    boot_id: str | None
    netns: str
    counters: Counters


def read_boot_id(host: HostRoot) -> str | None:
    """The kernel's random id of this boot (`/proc/sys/kernel/random/boot_id`), if readable."""
    text = host.read_proc("sys/kernel/random/boot_id")
    return None if isinstance(text, Unavailable) else text.strip() or None


def state_path(host: HostRoot) -> Path:
    return host.path(STATE_FILE)


def _counters_from(data: Any) -> Counters | None:
    if not isinstance(data, dict):
        return None
    out: Counters = {}
    for group, row in data.items():
        if not isinstance(group, str) or not isinstance(row, dict):
            return None
        clean: dict[str, int] = {}
        for name, value in row.items():
            if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, int):
                return None
            clean[name] = value
        out[group] = clean
    return out


def load_state(path: Path) -> CounterState | Unavailable:
    """The previous run's counters, or why there are none.

    The file is portaudit's own cache, not operator input: a damaged one is reported as the
    reason rates are missing this time and is simply replaced by the next save.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Unavailable("no earlier run to compare with")
    except OSError as exc:
        return Unavailable(f"{path}: {exc.strerror}")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return Unavailable(f"{path}: not valid JSON ({exc}); starting over")
    if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA:
        return Unavailable(f"{path}: not a schema {STATE_SCHEMA} state file; starting over")
    counters = _counters_from(data.get("counters"))
    at = data.get("collected_at")
    boot = data.get("boot_id")
    netns = data.get("netns")
    if (
        counters is None
        or isinstance(at, bool)
        or not isinstance(at, (int, float))
        or not math.isfinite(at)
        or not (boot is None or isinstance(boot, str))
        or not isinstance(netns, str)
    ):
        return Unavailable(f"{path}: unexpected content; starting over")
    return CounterState(float(at), boot, netns, counters)


def save_state(path: Path, state: CounterState) -> None:
    """Write the state atomically (a crash leaves the old run or the new one, never half)."""
    doc = {
        "schema": STATE_SCHEMA,
        "collected_at": state.collected_at,
        "boot_id": state.boot_id,
        "netns": state.netns,
        "counters": state.counters,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(doc, sort_keys=True) + "\n").encode(), mode=0o644)


def compute_rates(
    previous: CounterState | Unavailable, current: CounterState
) -> Rates | Unavailable:
    """Per-minute increase of every counter present in both runs, or why it cannot be known.

    A counter that went down means the counters were reset (reboot, namespace recreated): no
    rate is honest for that interval, so the whole set is unavailable for this run; the next
    run compares with this one and has rates again.
    """
    if isinstance(previous, Unavailable):
        return previous
    if previous.boot_id and current.boot_id and previous.boot_id != current.boot_id:
        return Unavailable("the host rebooted since the last run; counters restarted from zero")
    if previous.netns != current.netns:
        return Unavailable(
            f"the last run read another network namespace ({previous.netns or 'unknown'})"
        )
    interval = current.collected_at - previous.collected_at
    if not interval > 0:
        return Unavailable(f"the last run is not earlier than this one ({interval:+.0f} s)")
    if interval > MAX_AGE_SECONDS:
        return Unavailable(f"the last run was {interval / 60:.0f} min ago, too long for a rate")
    out: Rates = {}
    for group, row in current.counters.items():
        before = previous.counters.get(group, {})
        rates: dict[str, float] = {}
        for name, value in row.items():
            if (group, name) in GAUGES or name not in before:
                continue
            delta = value - before[name]
            if delta < 0:
                return Unavailable(
                    f"{group} {name} went down ({before[name]} -> {value}): counters were "
                    "reset since the last run (reboot?)"
                )
            rates[name] = delta * 60.0 / interval
        if rates:
            out[group] = rates
    if not out:
        return Unavailable("the last run has none of this run's counters")
    return out


def with_rates(facts: Facts, host: HostRoot, save: bool) -> tuple[Facts, str | None]:
    """`facts` with `rates` filled in from the state file; with `save`, this run becomes the base.

    Returns a warning when the state could not be saved: the audit itself is still good, but
    without a saved base the next run has no rates, and the operator should know why.
    """
    if isinstance(facts.counters, Unavailable):
        return dataclasses.replace(facts, rates=Unavailable(facts.counters.reason)), None
    path = state_path(host)
    current = CounterState(
        collected_at=facts.collected_at,
        boot_id=read_boot_id(host),
        netns=facts.host.netns,
        counters=facts.counters,
    )
    rates = compute_rates(load_state(path), current)
    warning = None
    if save:
        try:
            save_state(path, current)
        except PermissionError:
            pass  # not root: the timer's base stays, and this run still got rates against it
        except OSError as exc:
            warning = f"cannot save counter state to {path}: {exc.strerror or exc}"
    return dataclasses.replace(facts, rates=rates), warning
