"""The rule vocabulary: every name a rule may read, with its type and meaning, declared once.

Rules never see `Facts` objects: they see `sysctl.net.ipv4.tcp_tw_reuse -> 2`,
`dest.used -> 97`, ... A fact that could not be collected appears as `Missing(reason)`, so a
rule that needs it is skipped with that reason. The declarations below are the one source for
what the loader accepts (`is_known`, with file:line for a misspelt name), how the values are
built (`global_table`, and the lazily computed rows of each `for_each` kind), and the names
section of docs/rules.md (`auditor/engine/docgen.py`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from auditor.config import Config
from auditor.engine.expr import Missing, Value
from auditor.engine.portnames import port_use_names
from auditor.facts.model import (
    PORT_MAX,
    Destination,
    DestinationRows,
    Facts,
    Listener,
    PersistedSysctl,
    PortRange,
    SocketTable,
    SysctlAssignment,
    SysctlLineProblem,
    Unavailable,
    endpoint,
    unprivileged_start,
)
from auditor.facts.persisted import effective, effective_all
from auditor.facts.sockets import is_loopback
from auditor.facts.sysctl import RUNTIME_KEYS
from auditor.facts.sysctlvalue import fold, held_integers, kernel_int, same_value
from auditor.hostfs import is_absent
from auditor.record import dataclass, field
from auditor.sysctlfile import is_glob

FACT_GROUPS = frozenset(
    {
        "ports",
        "sockets",
        "sockstat",
        "counters",
        "files",
        "persisted",
        "rates",
        "rp_filter",
        "port_use",
    }
)

RATE_BASIS = "per minute since the last run"


def sysctl_name(key: str) -> str:
    return "sysctl." + key.replace("-", "_")


_SYSCTL_NAMES = {sysctl_name(k): k for k in RUNTIME_KEYS}


@dataclass(frozen=True, slots=True)
class Name:
    """One host-wide name, or a family of them (`pattern`), as the docs list it."""

    shown: str
    """How the docs write it: `ports.usable`, `sysctl.<key>`, `counters.<Group>.<Field>`."""
    type: str
    doc: str
    regex: str | None = None
    """For a family: the names it admits; None for one literal name (`shown`)."""

    @property
    def pattern(self) -> re.Pattern[str] | None:
        """`regex`, compiled when first asked for: only loading rule files from YAML and the
        docs match names against families, so a run from the rule cache compiles none."""
        return None if self.regex is None else re.compile(self.regex)


def _literal(shown: str, type_: str, doc: str) -> Name:
    return Name(shown, type_, doc)


def _family(shown: str, type_: str, doc: str, pattern: str) -> Name:
    return Name(shown, type_, doc, pattern)


_KEY_SUFFIXES = "|".join(re.escape(n[len("sysctl.") :]) for n in _SYSCTL_NAMES)

HOST_NAMES: tuple[Name, ...] = (
    _family(
        "sysctl.<key>",
        "int | str",
        "the runtime value of a key in `auditor/facts/sysctl.py:RUNTIME_KEYS`, `-` written as `_`"
        " (`sysctl.fs.file_max`): an integer when the value is one integer, else the text",
        rf"^sysctl\.({_KEY_SUFFIXES})$",
    ),
    _family(
        "sysctl_present.<key>",
        "bool",
        "True when the value was read, False when this kernel has no such key (no /proc/sys"
        " entry) or a snapshot does not record it; unavailable when it exists but could not be"
        " read. Guard a read with it to judge a removed key instead of skipping:"
        " `sysctl.X if sysctl_present.X else None`",
        rf"^sysctl_present\.({_KEY_SUFFIXES})$",
    ),
    _family(
        "boot.<key>",
        "int | str | None",
        "the value boot applies (systemd-sysctl's view of the sysctl.d files), None when no file"
        " sets it; unavailable when the files cannot be read. For a one-integer key, the"
        " integer the kernel reads from the text (base 0, anything after the number and a"
        " space ignored: `20000 # low` is 20000); else, or when the kernel refuses it, the"
        " text, whitespace folded",
        rf"^boot\.({_KEY_SUFFIXES})$",
    ),
    _family(
        "boot_where.<key>",
        "str",
        '`file:line` of the assignment that decides `boot.<key>` ("" when unset)',
        rf"^boot_where\.({_KEY_SUFFIXES})$",
    ),
    _literal("persisted.available", "bool", "the sysctl files could be read (`boot.*` is known)"),
    _literal("ports.low", "int", "low end of `ip_local_port_range`"),
    _literal("ports.high", "int", "high end of `ip_local_port_range`"),
    _literal(
        "ports.usable",
        "int",
        "ports in the range that are not reserved: what one destination can use",
    ),
    _literal("ports.size", "int", "high - low + 1"),
    _literal("ports.reserved", "tuple", "`ip_local_reserved_ports` as (first, last) ranges"),
    _literal("ports.reserved_count", "int", "reserved ports inside the range"),
    _literal(
        "ports.floor",
        "int",
        "`ip_unprivileged_port_start`, the lowest low end the kernel accepts (1024 where there"
        " is no such key, before Linux 4.11)",
    ),
    _literal(
        "ports.widened_low",
        "int",
        "the low end of the widest range `fix` proposes: even, at most 10000 unless the range"
        " starts lower, not below `ports.floor` (the one computation `fix` uses too)",
    ),
    _literal("ports.widened_size", "int", "ports in `ports.widened_low`-65535"),
    _literal(
        "ports.can_widen", "bool", "`ports.widened_low`-65535 holds more ports than the range"
    ),
    _literal(
        "defaults.tcp_max_tw_buckets",
        "int",
        "the kernel's own default of `tcp_max_tw_buckets`, |`tcp_ehash_entries`| / 2 (negative"
        " in a namespace sharing the host's table); unavailable before Linux 6.1",
    ),
    _family(
        "sockstat.<PROTO>.<field>",
        "int",
        "`/proc/net/sockstat{,6}` (`sockstat.TCP.tw`, `sockstat.TCP.inuse`)",
        r"^sockstat\.[A-Za-z0-9]+\.[a-z_]+$",
    ),
    _family(
        "counters.<Group>.<Field>",
        "int",
        "`/proc/net/netstat` and `/proc/net/snmp` (`counters.TcpExt.ListenOverflows`); a"
        " counter this kernel does not report is unavailable",
        r"^counters\.[A-Za-z0-9]+\.[A-Za-z0-9_]+$",
    ),
    _family(
        "rates.<Group>.<Field>",
        "float",
        "increase per minute since the last run (unavailable on the first run)",
        r"^rates\.[A-Za-z0-9]+\.[A-Za-z0-9_]+$",
    ),
    _literal(
        "rates.available",
        "bool",
        "rates are known; lets a rule fall back to totals since boot without being skipped:"
        " `rates.X.Y if rates.available else counters.X.Y` (only the branch taken is read)",
    ),
    _literal("rates.reason", "str", 'why rates are not known ("" when they are)'),
    _literal(
        "rates.basis",
        "str",
        '"per minute since the last run", or "since boot" without rates: what a counter'
        " value in a message is",
    ),
    _literal("files.allocated", "int", "allocated file handles (`fs.file-nr`)"),
    _literal("files.max", "int", "`fs.file-max`"),
    _literal("files.free", "int", "allocated but unused handles"),
    _literal("files.nr_open", "int | None", "`fs.nr_open`"),
    _literal(
        "rp_filter.interfaces",
        "int",
        "network interfaces besides lo (entries of /proc/sys/net/ipv4/conf but all and default)",
    ),
    _literal(
        "rp_filter.strict",
        "int",
        "those filtering strictly: max(`conf.all.rp_filter`, `conf.<if>.rp_filter`) is 1",
    ),
    _literal("rp_filter.strict_names", "str", "their names, comma-separated"),
    _literal("rp_filter.all", "int", "`net.ipv4.conf.all.rp_filter`"),
    _literal("sockets.time_wait", "int", "all TIME_WAIT sockets"),
    _family(
        "sockets.total.<STATE>",
        "int",
        "every TCP socket in that state (0 when none)",
        r"^sockets\.total\.[A-Z_0-9]+$",
    ),
    _literal("sockets.max_dest_used", "int", "the busiest destination's socket count"),
    _literal("sockets.max_dest_ratio", "float", "the busiest destination's count / `ports.usable`"),
    _literal(
        "sockets.max_dest_effective_ratio",
        "float",
        "the highest `dest.effective_ratio`: use after TIME_WAIT ports connect() may reuse",
    ),
    _literal("sockets.source", "str", '"netlink" (sock_diag) or "proc" (/proc/net/tcp*)'),
    _family(
        "params.<name>",
        "int | float | str",
        "this rule's params, after config overrides",
        r"^params\.[a-z][a-z0-9_]*$",
    ),
    _literal("config.public_ports", "tuple", "ports declared reachable from other hosts (config)"),
    _literal(
        "port_use.source",
        "str",
        '"netlink" or "proc": how host-wide port use was read (fact group `port_use`)',
    ),
    _literal("port_use.tcp", "int", "distinct local TCP ports inside the usable range in use"),
    _literal("port_use.udp", "int", "distinct local UDP ports inside the usable range in use"),
    _literal("port_use.tcp_ratio", "float", "`port_use.tcp` / `ports.usable`"),
    _literal("port_use.udp_ratio", "float", "`port_use.udp` / `ports.usable`"),
    _literal("port_use.ratio", "float", "the larger of the two ratios"),
    _literal("port_use.used", "int", "the larger of `port_use.tcp` and `port_use.udp`"),
    _literal("port_use.protocol", "str", '"TCP" or "UDP": the protocol `port_use.used` counts'),
    _literal("port_use.by_state", "mapping", "distinct TCP ports by state (BOUND included)"),
    _literal("port_use.states", "str", '`port_use.by_state` as text ("TIME_WAIT 120, ...")'),
    _literal(
        "port_use.bound",
        "int",
        "TCP sockets bound to a port but neither listening nor connected (Linux 6.7+ can dump"
        " them; unavailable with the reason elsewhere)",
    ),
    _literal(
        "port_use.holders",
        "str",
        'the processes holding the most ports ("" when none were looked up)',
    ),
)

_LITERALS = frozenset(n.shown for n in HOST_NAMES if n.regex is None)


@functools.cache
def _patterns() -> tuple[re.Pattern[str], ...]:
    """Families the loader admits; `params.<name>` is checked against the rule's own params."""
    return tuple(
        p for n in HOST_NAMES if (p := n.pattern) is not None and not n.shown.startswith("params.")
    )


Row = Mapping[str, Value]


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a `for_each` row: its type, meaning, and how it is computed."""

    type: str
    doc: str
    get: Callable[[Any, Any], Value]
    """(item, context) -> value; computed the first time a rule reads it, once per row."""


class LazyRow(dict[str, Value]):
    """One subject's row: a field is computed on first read and kept, so a rule that only
    compares `dest.ratio` never pays for `dest.owners` text."""

    __slots__ = ("_ctx", "_fields", "_item")

    def __init__(self, item: Any, ctx: Any, fields: Mapping[str, Field]) -> None:
        super().__init__()
        self._item, self._ctx, self._fields = item, ctx, fields

    def __missing__(self, name: str) -> Value:
        value = self[name] = self._fields[name].get(self._item, self._ctx)
        return value


@dataclass(frozen=True, slots=True)
class SubjectKind:
    """A `for_each` kind: the rows it makes from the facts and the names each row defines."""

    kind: str
    prefix: str
    doc: str
    requires: tuple[str, ...]
    items: Callable[[Facts, Config], tuple[Iterable[Any], Any]]
    """(the subjects, a context shared by their rows)"""
    fields: Mapping[str, Field]
    ceilings: Callable[[Sequence[Any], Any], list[float]] | None = None
    """(items, context) -> per item, a value no field in `bounded` exceeds, computed without
    building rows: rows whose ceiling is below what a rule demands of those fields are never
    built (prefilter.py)."""
    bounded: frozenset[str] = frozenset()
    names: frozenset[str] = field(init=False)
    by_name: Mapping[str, Field] = field(init=False)

    def __post_init__(self) -> None:
        by_name = {f"{self.prefix}.{k}": f for k, f in self.fields.items()}
        object.__setattr__(self, "by_name", by_name)
        object.__setattr__(self, "names", frozenset(by_name))

    def rows(self, facts: Facts, config: Config) -> Iterator[LazyRow]:
        items, ctx = self.items(facts, config)
        by_name = self.by_name
        for item in items:
            yield LazyRow(item, ctx, by_name)


def is_known(name: str, kind: SubjectKind | None) -> bool:
    if name in _LITERALS or any(p.match(name) for p in _patterns()):
        return True
    return kind is not None and name in kind.names


def _int_or_str(text: str) -> Value:
    """A value the kernel printed: the integer when it is one, else the text."""
    tokens = text.split()
    number = kernel_int(tokens[0]) if len(tokens) == 1 else None
    return text if number is None else number


def boot_number(text: str, runtime: str | None) -> Value:
    """What a one-integer key holds after boot writes `text` (`kernel_ints`: base 0, the
    rest after the number ignored, so `20000 # low` is 20000), else the folded text.

    Whether the key holds one integer is read from its runtime value, as the kernel prints
    it; with none, only a text that is one token is read as a number (and stays text when it
    is not one). On a key known to hold one integer, a text the kernel refuses (`262_144`)
    is None: the write fails at boot and the key keeps its value, as when no file sets it
    (CFG-005 reports the line as refused-value).
    """
    shown = fold(text)
    if runtime is None:
        number = kernel_int(text) if len(shown.split()) == 1 else None
        return shown if number is None else number
    if len(held_integers(runtime) or ()) != 1:
        return shown
    return kernel_int(text)


def _group(value: object, prefix: str, into: dict[str, Value]) -> None:
    """Flatten {"A": {"b": 1}} into `prefix.A.b`; an Unavailable group stays lazily Missing."""
    if isinstance(value, dict):
        for group, row in value.items():
            for name, num in row.items():
                into[f"{prefix}.{group}.{name}"] = num


class NameTable(dict[str, Value]):
    """The host-wide names; a declared name absent from it resolves to a `Missing` with the
    reason (`lookup` below), never to a silent default."""

    def __init__(self, facts: Facts) -> None:
        super().__init__()
        self._facts = facts

    def missing(self, name: str) -> Value:
        """What a name that is not in the table means on this host."""
        group = name.split(".", 1)[0]
        value = getattr(self._facts, group, None) if group in FACT_GROUPS else None
        if isinstance(value, Unavailable):
            return Missing(f"{group}: {value.reason}")
        if group in ("counters", "rates", "sockstat"):
            return Missing(f"{name[len(group) + 1 :]} is not reported by this kernel")
        if group == "sockets" and name.startswith("sockets.total."):
            return 0
        return Missing(f"{name} is not known on this host")


def global_table(facts: Facts, config: Config) -> NameTable:
    t = NameTable(facts)
    for name, key in _SYSCTL_NAMES.items():
        present = "sysctl_present." + name[len("sysctl.") :]
        if key in facts.sysctl:
            t[name] = _int_or_str(facts.sysctl[key])
            t[present] = True
        elif key not in facts.sysctl_missing:
            # A snapshot that never recorded the key says nothing of it, like a kernel without it.
            t[name] = Missing(f"{key}: not in this snapshot")
            t[present] = False
        else:
            reason = facts.sysctl_missing[key]
            t[name] = Missing(f"{key}: {reason}")
            t[present] = False if is_absent(reason) else Missing(f"{key}: {reason}")
    ehash = t.get("sysctl.net.ipv4.tcp_ehash_entries")
    if isinstance(ehash, int):
        t["defaults.tcp_max_tw_buckets"] = abs(ehash) // 2
    else:
        t["defaults.tcp_max_tw_buckets"] = Missing(
            "net.ipv4.tcp_ehash_entries: not present (the kernel shows it since Linux 6.1)"
        )
    ports = facts.ports
    if isinstance(ports, PortRange):
        t["ports.low"], t["ports.high"], t["ports.usable"] = ports.low, ports.high, ports.usable
        t["ports.size"] = ports.width
        t["ports.reserved"] = ports.reserved
        t["ports.reserved_count"] = ports.reserved_count
        floor = unprivileged_start(facts.sysctl)
        t["ports.floor"] = floor
        t["ports.widened_low"] = ports.widened_low(floor)
        t["ports.widened_size"] = PORT_MAX + 1 - ports.widened_low(floor)
        t["ports.can_widen"] = ports.widens(floor)
    _group(facts.sockstat, "sockstat", t)
    _group(facts.counters, "counters", t)
    _group(facts.rates, "rates", t)
    t["rates.available"] = isinstance(facts.rates, dict)
    t["rates.reason"] = facts.rates.reason if isinstance(facts.rates, Unavailable) else ""
    t["rates.basis"] = "since boot" if isinstance(facts.rates, Unavailable) else RATE_BASIS
    files = facts.files
    if not isinstance(files, Unavailable):
        t["files.allocated"], t["files.max"], t["files.free"] = (
            files.allocated,
            files.max,
            files.free,
        )
        t["files.nr_open"] = files.nr_open
    sockets = facts.sockets
    if isinstance(sockets, SocketTable):
        t["sockets.source"] = sockets.source
        t["sockets.time_wait"] = sockets.total_by_state.get("TIME_WAIT", 0)
        for state, n in sockets.total_by_state.items():
            t[f"sockets.total.{state}"] = n
        busiest = max(sockets.rows.uses(), default=0)
        t["sockets.max_dest_used"] = busiest
        if isinstance(ports, PortRange) and ports.usable > 0:
            t["sockets.max_dest_ratio"] = ports.share(busiest)
            items, ctx = _dest_items(facts, config)
            effective = busiest
            if ctx.reuse in (1, 2):  # some TIME_WAIT may be reusable: look at each
                reusing, rest = items.split_reusable()
                effective = max((_effective_used(d, ctx) for d in reusing), default=rest)
                effective = max(effective, rest)
            t["sockets.max_dest_effective_ratio"] = ports.share(effective)
    t["config.public_ports"] = tuple(sorted(config.public_ports))
    t["persisted.available"] = isinstance(facts.persisted, PersistedSysctl)
    _rp_filter_names(facts, t)
    t.update(port_use_names(facts))
    _boot_names(facts, t)
    return t


def _rp_filter_names(facts: Facts, t: NameTable) -> None:
    """The kernel filters an interface's packets by max(all, the interface's own value)."""
    conf = facts.rp_filter
    if isinstance(conf, Unavailable):
        return
    every = conf.get("all", 0)
    interfaces = sorted(k for k in conf if k not in ("all", "default", "lo"))
    strict = [k for k in interfaces if max(every, conf[k]) == 1]
    t["rp_filter.interfaces"] = len(interfaces)
    t["rp_filter.strict"] = len(strict)
    t["rp_filter.strict_names"] = ", ".join(strict)
    t["rp_filter.all"] = every


def _boot_names(facts: Facts, t: NameTable) -> None:
    """`boot.<key>` (value boot applies, None when no file sets it) and `boot_where.<key>`."""
    persisted = facts.persisted
    for name, key in _SYSCTL_NAMES.items():
        suffix = name[len("sysctl.") :]
        if isinstance(persisted, Unavailable):
            t[f"boot.{suffix}"] = Missing(f"persisted: {persisted.reason}")
            t[f"boot_where.{suffix}"] = Missing(f"persisted: {persisted.reason}")
            continue
        a = effective(persisted, key)
        runtime = facts.sysctl.get(key)
        t[f"boot.{suffix}"] = None if a is None else boot_number(a.value, runtime)
        t[f"boot_where.{suffix}"] = "" if a is None else f"{a.file}:{a.line}"


def owners_text(sockets: SocketTable, src: str, dst: str, dport: int) -> str:
    """ "php-fpm (pid 812) holds 412 connections" for the processes behind one destination."""
    owners = [o for o in sockets.owners if (o.src, o.dst, o.dport) == (src, dst, dport)]
    if not owners and sockets.owners_unavailable:
        return f"unknown ({sockets.owners_unavailable})"
    owners.sort(key=lambda o: -o.count)
    return "; ".join(
        f"{o.command} (pid {o.pid}) holds {o.count} connection{'s' if o.count != 1 else ''}"
        for o in owners[:5]
    )


# --- destinations ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _DestContext:
    sockets: SocketTable
    ports: PortRange
    reuse: int | None
    """tcp_tw_reuse when TIME_WAIT reuse can work at all (timestamps on), else None."""


def _dest_items(facts: Facts, config: Config) -> tuple[DestinationRows, _DestContext]:
    sockets, ports = facts.sockets, facts.ports
    assert isinstance(sockets, SocketTable) and isinstance(ports, PortRange)
    reuse = _int_or_str(facts.sysctl.get("net.ipv4.tcp_tw_reuse", "0"))
    stamps = _int_or_str(facts.sysctl.get("net.ipv4.tcp_timestamps", "0"))
    on = isinstance(reuse, int) and isinstance(stamps, int) and stamps != 0
    return sockets.rows, _DestContext(sockets, ports, reuse if on else None)


def _reuse_in_effect(d: Destination, ctx: _DestContext) -> bool:
    """tcp_tw_reuse lets connect() take this destination's TIME_WAIT ports: 1 everywhere, 2 for
    loopback (either end, as tcp_twsk_unique checks), and only with timestamps on."""
    if ctx.reuse == 1:
        return True
    return ctx.reuse == 2 and (is_loopback(d.dst) or is_loopback(d.src))


def _reusable(d: Destination, ctx: _DestContext) -> int:
    if d.time_wait_reusable is None or not _reuse_in_effect(d, ctx):
        return 0
    return d.time_wait_reusable


def _effective_used(d: Destination, ctx: _DestContext) -> int:
    return d.used - _reusable(d, ctx)


def _owners(d: Destination, ctx: _DestContext) -> str:
    return owners_text(ctx.sockets, d.src, d.dst, d.dport)


def _reuse_note(d: Destination, ctx: _DestContext) -> str:
    n = _reusable(d, ctx)
    if not n:
        return ""
    note = f"; {n} more in TIME_WAIT are older than tcp_tw_reuse_delay, so connect() may reuse them"
    if is_loopback(d.dst) or is_loopback(d.src):
        return note  # both ends are this host, and its tcp_timestamps is on
    return note + " if their connections used TCP timestamps"


def _dest_ceilings(items: Sequence[Any], ctx: _DestContext) -> list[float]:
    """Each row's `dest.ratio` from its count alone (one float per distinct count)."""
    assert isinstance(items, DestinationRows)
    share = {u: ctx.ports.share(u) for u in set(items.uses())}
    return [share[u] for u in items.uses()]


DESTINATIONS = SubjectKind(
    kind="destinations",
    prefix="dest",
    doc=(
        "one row per destination: a (local address, remote address, remote port) with sockets"
        " whose local port is in the ephemeral range and is not a listening port, the client side"
        " of outgoing connections. A server's accepted sockets and its TIME_WAIT share its"
        " listening port, so they never count against a destination, even where it listens"
        " inside the range (EPH-006)."
    ),
    requires=("sockets", "ports"),
    items=_dest_items,
    ceilings=_dest_ceilings,
    bounded=frozenset({"dest.ratio", "dest.effective_ratio"}),
    fields={
        "src": Field("str", "local address", lambda d, c: d.src),
        "dst": Field("str", "remote address", lambda d, c: d.dst),
        "dport": Field("int", "remote port", lambda d, c: d.dport),
        "endpoint": Field(
            "str",
            "`dst:dport`, an IPv6 address in brackets (`[2001:db8::5]:443`)",
            lambda d, c: d.endpoint,
        ),
        "used": Field("int", "sockets to it holding an ephemeral port", lambda d, c: d.used),
        "by_state": Field("mapping", "those sockets by TCP state", lambda d, c: dict(d.by_state)),
        "time_wait": Field(
            "int", "those in TIME_WAIT", lambda d, c: d.by_state.get("TIME_WAIT", 0)
        ),
        "established": Field(
            "int", "those in ESTABLISHED", lambda d, c: d.by_state.get("ESTABLISHED", 0)
        ),
        "loopback": Field("bool", "dst is a loopback address", lambda d, c: is_loopback(d.dst)),
        "ratio": Field("float", "used / ports.usable", lambda d, c: d.ratio(c.ports)),
        "reuse": Field(
            "bool",
            "connect() may reuse its TIME_WAIT ports: `tcp_tw_reuse` 1, or 2 with a loopback"
            " end, and `tcp_timestamps` on",
            _reuse_in_effect,
        ),
        "time_wait_reusable": Field(
            "int",
            "TIME_WAIT sockets older than `tcp_tw_reuse_delay` (1000 ms where the kernel has no"
            " such key) where `dest.reuse`, else 0: ports connect() can take over now",
            _reusable,
        ),
        "effective_used": Field(
            "int", "used - time_wait_reusable: ports connect() cannot have", _effective_used
        ),
        "effective_ratio": Field(
            "float",
            "effective_used / ports.usable",
            lambda d, c: c.ports.share(_effective_used(d, c)),
        ),
        "reuse_note": Field(
            "str",
            '"", or a clause saying how many TIME_WAIT ports are reusable',
            _reuse_note,
        ),
        "owners_note": Field(
            "str",
            '"Connections held by: ..." naming those processes, or ""',
            lambda d, c: f"Connections held by: {o}." if (o := _owners(d, c)) else "",
        ),
        "owners": Field(
            "str",
            'the processes holding live connections to it ("" when unknown)',
            _owners,
        ),
    },
)


# --- listeners ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ListenContext:
    ports: PortRange | None
    public: frozenset[int]
    ipv4_ports: frozenset[int] = frozenset()
    """Ports some listener accepts IPv4 clients of other hosts on (a non-loopback IPv4
    listener, or `::` without IPV6_V6ONLY)."""


def _listener_items(facts: Facts, config: Config) -> tuple[Iterable[Listener], _ListenContext]:
    sockets, ports = facts.sockets, facts.ports
    assert isinstance(sockets, SocketTable)
    seen: set[tuple[str, int]] = set()
    unique: list[Listener] = []
    for li in sockets.listeners:
        if (li.addr, li.port) not in seen:
            seen.add((li.addr, li.port))
            unique.append(li)
    ipv4 = frozenset(li.port for li in sockets.listeners if _takes_ipv4(li))
    ctx = _ListenContext(
        ports if isinstance(ports, PortRange) else None, frozenset(config.public_ports), ipv4
    )
    return unique, ctx


def _takes_ipv4(li: Listener) -> bool:
    """Accepts IPv4 clients from other hosts: a non-loopback IPv4 address, or `::` unless
    IPV6_V6ONLY (unknown counts as accepting: nothing then says it does not)."""
    if li.family == 4:
        return not is_loopback(li.addr)
    return li.addr == "::" and li.v6only is not True


def _v6only_only(li: Listener, c: _ListenContext) -> bool:
    """`::` with IPV6_V6ONLY and no other listener taking IPv4 on the port."""
    return li.addr == "::" and li.v6only is True and li.port not in c.ipv4_ports


def _queue_full(li: Listener, c: _ListenContext) -> Value:
    if li.queued is None or li.backlog is None:
        return Missing(
            f"{endpoint(li.addr, li.port)}: the accept queue's limit is not known (the /proc"
            " reader does not show a listener's backlog; sock_diag does)"
        )
    return li.queued >= max(li.backlog, 1)


def _process_fact(name: str) -> Callable[[Listener, _ListenContext], Value]:
    def get(li: Listener, c: _ListenContext) -> Value:
        value = getattr(li, name)
        if value is None:
            why = li.process_note or "read on the live host only (not in this snapshot or tree)"
            return Missing(f"{endpoint(li.addr, li.port)}: holding process unknown: {why}")
        return value

    return get


def _fd_ratio(li: Listener, c: _ListenContext) -> Value:
    """The share of the descriptor numbers below the limit taken: a new descriptor needs a
    free one (`fds_free`); a snapshot without it counts every open descriptor."""
    if li.fds is None or not li.fd_limit:
        return _process_fact("fds")(li, c)
    if li.fds_free is not None:
        return (li.fd_limit - li.fds_free) / li.fd_limit
    return li.fds / li.fd_limit


LISTENERS = SubjectKind(
    kind="listeners",
    prefix="listener",
    doc="one row per listening address and port",
    requires=("sockets",),
    items=_listener_items,
    fields={
        "addr": Field("str", "bound address", lambda li, c: li.addr),
        "port": Field("int", "listening port", lambda li, c: li.port),
        "endpoint": Field(
            "str",
            "`addr:port`, an IPv6 address in brackets",
            lambda li, c: endpoint(li.addr, li.port),
        ),
        "family": Field("int", "4 or 6", lambda li, c: li.family),
        "loopback": Field(
            "bool", "bound to 127.0.0.0/8 or ::1 only", lambda li, c: is_loopback(li.addr)
        ),
        "wildcard": Field(
            "bool", "bound to 0.0.0.0 or ::", lambda li, c: li.addr in ("0.0.0.0", "::")
        ),
        "in_ephemeral": Field(
            "bool",
            "port inside [ports.low, ports.high] (False when the range is unknown)",
            lambda li, c: c.ports is not None and c.ports.low <= li.port <= c.ports.high,
        ),
        "reserved": Field(
            "bool",
            "port in `ip_local_reserved_ports`",
            lambda li, c: c.ports is not None and c.ports.is_reserved(li.port),
        ),
        "public": Field(
            "bool", "port declared in config `public_ports`", lambda li, c: li.port in c.public
        ),
        "queued": Field(
            "int | None", "accept queue now (None when unknown)", lambda li, c: li.queued
        ),
        "backlog": Field(
            "int | None", "accept queue limit (None when unknown)", lambda li, c: li.backlog
        ),
        "queue_full": Field(
            "bool",
            "`queued >= backlog` (at least 1): the kernel drops the next handshake; unavailable"
            " when the backlog is unknown (the /proc reader)",
            _queue_full,
        ),
        "v6only": Field(
            "bool | None",
            "IPV6_V6ONLY of an IPv6 listener (None for IPv4 or unknown)",
            lambda li, c: li.v6only,
        ),
        "v6only_source": Field(
            "str",
            '"sock_diag" (the socket\'s flag) or "estimate: net.ipv6.bindv6only" (/proc)',
            lambda li, c: li.v6only_source,
        ),
        "ipv6_only": Field(
            "bool",
            "`::` with IPV6_V6ONLY and no other listener taking IPv4 on the port: IPv4 clients"
            " get refused",
            _v6only_only,
        ),
        "pid": Field("int", "the process holding the socket", _process_fact("pid")),
        "command": Field(
            "str", "that process's name", lambda li, c: li.command or _process_fact("pid")(li, c)
        ),
        "holder": Field(
            "str",
            '" (held by pid 4242, app)" when the holding process is known, else ""',
            lambda li, c: f" (held by pid {li.pid}, {li.command or '?'})" if li.pid else "",
        ),
        "fds": Field("int", "its open descriptors", _process_fact("fds")),
        "fd_limit": Field("int", "its soft RLIMIT_NOFILE", _process_fact("fd_limit")),
        "fds_free": Field(
            "int",
            "descriptor numbers free below fd_limit (accept() fails with EMFILE at 0)",
            _process_fact("fds_free"),
        ),
        "fd_ratio": Field(
            "float",
            "share of the descriptor numbers below fd_limit taken (fds / fd_limit unless"
            " the limit was lowered below open descriptors)",
            _fd_ratio,
        ),
    },
)


# --- persisted settings ------------------------------------------------------------------------


RELEVANT_PREFIXES = ("net.ipv4.", "net.ipv6.", "net.core.", "net.netfilter.", "net.unix.")


def is_relevant_key(key: str) -> bool:
    """Keys that bear on connection failures: the network stack and the descriptor budget.

    portaudit is not a general sysctl drift checker; `kernel.pid_max` differing from its boot
    value is somebody else's finding.
    """
    return key.startswith(RELEVANT_PREFIXES) or key in RUNTIME_KEYS


def _setting_items(
    facts: Facts, config: Config
) -> tuple[Iterable[tuple[str, SysctlAssignment]], PersistedSysctl]:
    persisted = facts.persisted
    assert isinstance(persisted, PersistedSysctl)
    return sorted(effective_all(persisted).items()), persisted


def _runtime(item: tuple[str, SysctlAssignment], p: PersistedSysctl) -> Value:
    key = item[0]
    got = p.runtime.get(key)
    return Missing(f"{key}: runtime value not readable") if got is None else got


def _differs(item: tuple[str, SysctlAssignment], p: PersistedSysctl) -> Value:
    runtime = _runtime(item, p)
    if isinstance(runtime, Missing):
        return runtime
    # An interface line boot skips (the interface already holds its value) lets a later
    # net.ipv4.conf.default line reach the interface: either outcome is a normal boot.
    unless = getattr(p.effective.get(item[0]), "unless_value", None)
    return not (
        same_value(runtime, item[1].value) or (unless is not None and same_value(runtime, unless))
    )


SETTINGS = SubjectKind(
    kind="persisted_settings",
    prefix="setting",
    doc="one row per key a boot file sets explicitly (fact group `persisted`)",
    requires=("persisted",),
    items=_setting_items,
    fields={
        "key": Field("str", "the sysctl key", lambda it, p: it[0]),
        "boot": Field(
            "str",
            "value boot applies, whitespace folded",
            lambda it, p: fold(it[1].value),
        ),
        "runtime": Field("str", "running value (unavailable when unreadable)", _runtime),
        "differs": Field(
            "bool",
            "runtime and boot mean different values (per token: text or integer); for an"
            " interface key a later `net.ipv4.conf.default` line may override, either outcome"
            " counts as the boot value (docs/boot.md)",
            _differs,
        ),
        "file": Field("str", "the deciding file", lambda it, p: it[1].file),
        "line": Field("int", "its line", lambda it, p: it[1].line),
        "where": Field("str", "`file:line`", lambda it, p: f"{it[1].file}:{it[1].line}"),
        "problem": Field("str", '"" or a CFG-005 kind', lambda it, p: it[1].problem or ""),
        "ignore_errors": Field(
            "bool", "the line starts with `-`", lambda it, p: it[1].ignore_errors
        ),
        "procps": Field(
            "str",
            'what `sysctl --system` would set instead ("" when the same)',
            lambda it, p: p.procps_differences.get(it[0], ""),
        ),
        "relevant": Field(
            "bool",
            "a network or descriptor key, the ones that bear on connection failures",
            lambda it, p: is_relevant_key(it[0]),
        ),
    },
)


_VENDOR_DIRS = ("/usr/lib/", "/lib/")


def _shadow_items(
    facts: Facts, config: Config
) -> tuple[Iterable[tuple[SysctlAssignment, SysctlAssignment]], None]:
    persisted = facts.persisted
    assert isinstance(persisted, PersistedSysctl)
    out: list[tuple[SysctlAssignment, SysctlAssignment]] = []
    for key in sorted({a.key for a in persisted.assignments if not is_glob(a.key)}):
        winner = effective(persisted, key)
        if winner is None:
            continue
        for a in persisted.assignments:
            if a.key != key or a.exclude or a.file == winner.file:
                continue
            if not same_value(a.value, winner.value):
                out.append((a, winner))
    return out, None


SHADOWS = SubjectKind(
    kind="persisted_shadows",
    prefix="shadow",
    doc="one row per assignment a later file overrides with another value",
    requires=("persisted",),
    items=_shadow_items,
    fields={
        "key": Field("str", "the sysctl key", lambda s, c: s[0].key),
        "value": Field("str", "the overridden value", lambda s, c: fold(s[0].value)),
        "file": Field("str", "the overridden line's file", lambda s, c: s[0].file),
        "line": Field("int", "its line", lambda s, c: s[0].line),
        "where": Field("str", "`file:line`", lambda s, c: f"{s[0].file}:{s[0].line}"),
        "vendor": Field(
            "bool",
            "the overridden line is under /usr/lib or /lib",
            lambda s, c: s[0].file.startswith(_VENDOR_DIRS),
        ),
        "by_value": Field("str", "the value that wins", lambda s, c: fold(s[1].value)),
        "by_file": Field("str", "the winning file", lambda s, c: s[1].file),
        "by_line": Field("int", "its line", lambda s, c: s[1].line),
        "by_where": Field(
            "str", "`file:line` of the winner", lambda s, c: f"{s[1].file}:{s[1].line}"
        ),
    },
)


def _unread_items(
    facts: Facts, config: Config
) -> tuple[Iterable[tuple[str, SysctlAssignment]], PersistedSysctl]:
    persisted = facts.persisted
    assert isinstance(persisted, PersistedSysctl)
    return sorted(persisted.unread.items()), persisted


def _unread_live(item: tuple[str, SysctlAssignment], p: PersistedSysctl) -> Value:
    runtime = _runtime(item, p)
    if isinstance(runtime, Missing):
        return runtime
    return same_value(runtime, item[1].value)


UNREAD = SubjectKind(
    kind="persisted_unread",
    prefix="unread",
    doc=(
        "one row per key that only /etc/sysctl.conf sets when no sysctl.d file links to it "
        "(Debian 13), so boot never applies it"
    ),
    requires=("persisted",),
    items=_unread_items,
    fields={
        "key": Field("str", "the sysctl key", lambda it, p: it[0]),
        "value": Field(
            "str", "the file's value, whitespace folded", lambda it, p: fold(it[1].value)
        ),
        "file": Field("str", "the file", lambda it, p: it[1].file),
        "line": Field("int", "its line", lambda it, p: it[1].line),
        "where": Field("str", "`file:line`", lambda it, p: f"{it[1].file}:{it[1].line}"),
        "runtime": Field("str", "running value (unavailable when unreadable)", _runtime),
        "live": Field("bool", "the running value equals the file's", _unread_live),
        "relevant": Field(
            "bool",
            "a network or descriptor key, the ones that bear on connection failures",
            lambda it, p: is_relevant_key(it[0]),
        ),
    },
)


def _line_items(
    facts: Facts, config: Config
) -> tuple[Iterable[SysctlLineProblem], Mapping[tuple[str, int], SysctlAssignment]]:
    persisted = facts.persisted
    assert isinstance(persisted, PersistedSysctl)
    return persisted.problems, {(a.file, a.line): a for a in persisted.assignments}


def _line_key(p: SysctlLineProblem, at: Mapping[tuple[str, int], SysctlAssignment]) -> str:
    a = at.get((p.file, p.line))
    return a.key if a is not None else ""


LINES = SubjectKind(
    kind="persisted_lines",
    prefix="line",
    doc="one row per line boot reads differently from what was meant",
    requires=("persisted",),
    items=_line_items,
    fields={
        "file": Field("str", "the file", lambda p, at: p.file),
        "line": Field("int", "the line number (0 for the whole file)", lambda p, at: p.line),
        "where": Field(
            "str", "`file:line`", lambda p, at: f"{p.file}:{p.line}" if p.line else p.file
        ),
        "kind": Field(
            "str",
            "bom, quoted-value, inline-comment, no-equals, empty-key, empty-value, bad-key,"
            " bare-cr and nul-byte (the line is two lines to systemd-sysctl, both applied),"
            " bad-encoding, unreadable, unknown-key, refused-value (a key of integers that"
            " the kernel does not read from the value: the write fails at boot)",
            lambda p, at: p.kind,
        ),
        "text": Field("str", "the line as written", lambda p, at: p.text),
        "key": Field("str", 'its key ("" when the line has none)', _line_key),
        "ignore_errors": Field(
            "bool",
            "the line starts with `-`",
            lambda p, at: (a := at.get((p.file, p.line))) is not None and a.ignore_errors,
        ),
    },
)


SUBJECT_KINDS: dict[str, SubjectKind] = {
    k.kind: k for k in (DESTINATIONS, LISTENERS, SETTINGS, SHADOWS, UNREAD, LINES)
}
