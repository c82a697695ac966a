"""Counter increases per minute between two runs, from a small state file.

`/proc/net/netstat` and `/proc/net/snmp` count since boot, so a host that overflowed its accept
queue once last month shows `ListenOverflows 1` forever. What matters to an operator is whether
it is happening now: the increase since the previous run, per minute. Each run that may save
state leaves its counters in `/var/lib/portaudit/counters/net-<inode>.json` (under `--root`),
one file per network namespace, so `ip netns exec X portaudit audit` never replaces the host's
base; the next run in the same namespace subtracts. Files older than a rate can use are pruned,
and there are never more than MAX_STATES of them. A reboot resets the counters, and so does a
network namespace that was recreated: both show up as a different boot id / namespace or as a
counter that went down, and the run reports the rates as unavailable (with the reason) rather
than as a huge or negative change.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import stat
import time
from pathlib import Path, PurePosixPath
from typing import Any

from auditor import record
from auditor.facts.model import Facts, Unavailable
from auditor.hostfs import STATE_DIR, HostRoot, shown
from auditor.record import dataclass
from auditor.safepath import Dir, LinkRefused, under

COUNTERS_DIR = f"{STATE_DIR}/counters"
LEGACY_STATE_FILE = f"{STATE_DIR}/counters.json"
"""Where every namespace's runs used to share one file; removed by the next save."""
STATE_SCHEMA = 1
MAX_AGE_SECONDS = 3600.0
"""An earlier run older than this is too old for a rate to say anything about "now"."""
MAX_STATES = 256
"""At most this many namespaces keep a base (the most recently saved ones)."""
MAX_STATE_BYTES = 1 << 20
_STATE_NAME = re.compile(r"^net-([0-9]+|unknown)\.json$")

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


def state_name(netns: str) -> str:
    """The state file of one network namespace, named by its inode (`net:[4026531840]`)."""
    m = re.fullmatch(r"net:\[([0-9]+)\]", netns)
    return f"net-{m[1]}.json" if m else "net-unknown.json"


def state_path(host: HostRoot, netns: str) -> Path:
    """Where the state of `netns` lives (for messages and tests; I/O goes through a Dir)."""
    return host.path(f"{COUNTERS_DIR}/{state_name(netns)}")


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
    """The previous run's counters in `path`, or why there are none."""
    try:
        with Dir.open(path.parent) as d:
            raw = d.read(path.name, MAX_STATE_BYTES)
    except FileNotFoundError:
        raw = None
    except OSError as exc:
        return Unavailable(f"{exc.filename or path}: {exc.strerror or exc}")
    return parse_state(path, raw)


def parse_state(path: Path, raw: bytes | None) -> CounterState | Unavailable:
    """The state file's content as a CounterState, or why it cannot be used.

    The file is portaudit's own cache, not operator input: a damaged one is reported as the
    reason rates are missing this time and is simply replaced by the next save.
    """
    if raw is None:
        return Unavailable("no earlier run to compare with")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
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


def _load(host: HostRoot, netns: str) -> CounterState | Unavailable:
    path = state_path(host, netns)
    try:
        with under(host.root, COUNTERS_DIR) as d:
            raw = d.read(state_name(netns), MAX_STATE_BYTES)
    except FileNotFoundError:
        raw = None
    except OSError as exc:
        return Unavailable(f"{exc.filename or path}: {exc.strerror or exc}")
    return parse_state(path, raw)


def save_state(host: HostRoot, state: CounterState) -> None:
    """Write the state atomically (a crash leaves the old run or the new one, never half).

    The directories are walked from the root without following a link, so a planted
    `var/lib/portaudit` link cannot send the file elsewhere; older namespaces' files are pruned.
    """
    doc = {
        "schema": STATE_SCHEMA,
        "collected_at": state.collected_at,
        "boot_id": state.boot_id,
        "netns": state.netns,
        "counters": state.counters,
    }
    data = (json.dumps(doc, sort_keys=True) + "\n").encode()
    with under(host.root, COUNTERS_DIR, create=True, mode=0o755) as d:
        d.replace(state_name(state.netns), data, mode=0o644)
        prune(d, keep=state_name(state.netns))
    with contextlib.suppress(OSError), under(host.root, STATE_DIR) as top:
        st = top.lstat("counters.json")
        if st is not None and stat.S_ISREG(st.st_mode):
            top.remove("counters.json")


def prune(d: Dir, keep: str, now: float | None = None) -> list[str]:
    """Remove states too old for a rate, and the oldest beyond MAX_STATES; return their names."""
    now = time.time() if now is None else now
    found: list[tuple[float, str]] = []
    for name in d.listdir():
        st = d.lstat(name)
        if _STATE_NAME.match(name) and st is not None and stat.S_ISREG(st.st_mode):
            found.append((st.st_mtime, name))
    found.sort(reverse=True)
    gone = [
        name
        for i, (mtime, name) in enumerate(found)
        if name != keep and (i >= MAX_STATES or now - mtime > MAX_AGE_SECONDS)
    ]
    for name in gone:
        d.remove(name)
    return gone


def remove_state(top: Dir, root: Path) -> list[str]:
    """`systemd uninstall`: every namespace's counters and the state directory, if then empty.

    `top` is `root` opened; the lines name each path under `root`, as the operator finds it."""
    done: list[str] = []
    try:
        state = top.subdir(STATE_DIR.lstrip("/"))
    except OSError:
        return done
    with state:
        if state.remove("counters.json"):
            done.append(f"removed {shown(root, LEGACY_STATE_FILE)}")
        try:
            counters = state.subdir("counters")
        except OSError:
            counters = None
        if counters is not None:
            with counters:
                for name in counters.listdir():
                    if _STATE_NAME.match(name) and counters.remove(name):
                        done.append(f"removed {shown(root, f'{COUNTERS_DIR}/{name}')}")
            with contextlib.suppress(OSError):
                state.rmdir("counters")
        empty = not state.listdir()
    if empty:
        parent = PurePosixPath(STATE_DIR)
        with contextlib.suppress(OSError), top.subdir(str(parent.parent).lstrip("/")) as lib:
            lib.rmdir(parent.name)
            done.append(f"removed {shown(root, STATE_DIR)}")
    return done


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
        return record.replace(facts, rates=Unavailable(facts.counters.reason)), None
    path = state_path(host, facts.host.netns)
    current = CounterState(
        collected_at=facts.collected_at,
        boot_id=read_boot_id(host),
        netns=facts.host.netns,
        counters=facts.counters,
    )
    rates = compute_rates(_load(host, facts.host.netns), current)
    warning = None
    if save:
        try:
            save_state(host, current)
        except LinkRefused as exc:
            warning = (
                f"cannot save counter state: {exc.filename}: a symbolic link; not following it"
            )
        except OSError as exc:
            why = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror or str(exc)
            if isinstance(exc, PermissionError):
                why += " (run as root)"
            warning = f"cannot save counter state to {path}: {why}"
        if warning and isinstance(rates, Unavailable):
            rates = Unavailable(f"{rates.reason}; {warning}: the next run has none either")
    return record.replace(facts, rates=rates), warning
