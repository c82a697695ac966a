"""The flat name table rules read, built from `Facts`, and the catalogue of valid names.

Rules never see `Facts` objects: they see `sysctl.net.ipv4.tcp_tw_reuse -> 2`,
`dest.used -> 97`, ... A fact that could not be collected appears as `Missing(reason)`, so a
rule reading it is skipped with that reason. The catalogue (`is_known`) lets the loader reject
a misspelt name at load time, with file:line, instead of skipping silently at run time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from auditor.config import Config
from auditor.engine.expr import Missing, Value
from auditor.engine.portnames import PORT_USE_NAMES, port_use_names
from auditor.facts.model import Facts, PersistedSysctl, PortRange, SocketTable, Unavailable
from auditor.facts.owners import pressured
from auditor.facts.persisted import effective, effective_all
from auditor.facts.sockets import is_loopback
from auditor.facts.sysctl import RUNTIME_KEYS
from auditor.hostfs import is_absent
from auditor.sysctlfile import is_glob

FACT_GROUPS = frozenset(
    {"ports", "sockets", "sockstat", "counters", "files", "persisted", "rates", "port_use"}
)


def sysctl_name(key: str) -> str:
    return "sysctl." + key.replace("-", "_")


_SYSCTL_NAMES = {sysctl_name(k): k for k in RUNTIME_KEYS}
_STATIC_NAMES = frozenset(
    {
        "ports.low",
        "ports.high",
        "ports.usable",
        "ports.size",
        "ports.reserved",
        "ports.reserved_count",
        "files.allocated",
        "files.max",
        "files.free",
        "files.nr_open",
        "sockets.time_wait",
        "sockets.max_dest_used",
        "sockets.max_dest_ratio",
        "sockets.pressured",
        "sockets.source",
        "config.public_ports",
        "rates.available",
        "rates.reason",
        *_SYSCTL_NAMES,
        *("boot." + n[len("sysctl.") :] for n in _SYSCTL_NAMES),
        *("boot_where." + n[len("sysctl.") :] for n in _SYSCTL_NAMES),
        *("sysctl_present." + n[len("sysctl.") :] for n in _SYSCTL_NAMES),
        *PORT_USE_NAMES,
    }
)
_PATTERNS = (
    re.compile(r"^sockstat\.[A-Za-z0-9]+\.[a-z_]+$"),
    re.compile(r"^counters\.[A-Za-z0-9]+\.[A-Za-z0-9_]+$"),
    re.compile(r"^rates\.[A-Za-z0-9]+\.[A-Za-z0-9_]+$"),
    re.compile(r"^sockets\.total\.[A-Z_0-9]+$"),
)

Row = dict[str, Value]


@dataclass(frozen=True, slots=True)
class SubjectKind:
    """A `for_each` kind: the names each row defines and how rows come from the facts."""

    prefix: str
    names: frozenset[str]
    requires: tuple[str, ...]
    rows: Callable[[Facts, Config], Iterator[Row]]


def is_known(name: str, kind: SubjectKind | None) -> bool:
    if name in _STATIC_NAMES or any(p.match(name) for p in _PATTERNS):
        return True
    return kind is not None and name in kind.names


def _int_or_str(text: str) -> Value:
    try:
        return int(text)
    except ValueError:
        return text


def _group(value: object, prefix: str, into: dict[str, Value]) -> None:
    """Flatten {"A": {"b": 1}} into `prefix.A.b`; an Unavailable group stays lazily Missing."""
    if isinstance(value, dict):
        for group, row in value.items():
            for field, num in row.items():
                into[f"{prefix}.{group}.{field}"] = num


class NameTable(dict[str, Value]):
    """The host-wide names; pattern names absent from it resolve to a `Missing` with a reason."""

    def __init__(self, facts: Facts) -> None:
        super().__init__()
        self._facts = facts

    def __missing__(self, name: str) -> Value:
        group = name.split(".", 1)[0]
        value = getattr(self._facts, group, None) if group in FACT_GROUPS else None
        if isinstance(value, Unavailable):
            return Missing(f"{group}: {value.reason}")
        if group in ("counters", "rates", "sockstat"):
            return Missing(f"{name[len(group) + 1 :]} is not reported by this kernel")
        if group == "sockets" and name.startswith("sockets.total."):
            return 0
        raise KeyError(name)


def global_table(facts: Facts, config: Config) -> NameTable:
    t = NameTable(facts)
    for name, key in _SYSCTL_NAMES.items():
        present = "sysctl_present." + name[len("sysctl.") :]
        if key in facts.sysctl:
            t[name] = _int_or_str(facts.sysctl[key])
            t[present] = True
        else:
            reason = facts.sysctl_missing.get(key, "not read")
            t[name] = Missing(f"{key}: {reason}")
            t[present] = False if is_absent(reason) else Missing(f"{key}: {reason}")
    ports = facts.ports
    if isinstance(ports, PortRange):
        t["ports.low"], t["ports.high"], t["ports.usable"] = ports.low, ports.high, ports.usable
        t["ports.size"] = ports.high - ports.low + 1
        t["ports.reserved"] = ports.reserved
        t["ports.reserved_count"] = ports.high - ports.low + 1 - ports.usable
    _group(facts.sockstat, "sockstat", t)
    _group(facts.counters, "counters", t)
    _group(facts.rates, "rates", t)
    # Rules that read counters prefer rates and fall back to totals since boot (issue 6):
    # `rates.X if rates.available else counters.X` (the conditional is lazy).
    t["rates.available"] = isinstance(facts.rates, dict)
    t["rates.reason"] = facts.rates.reason if isinstance(facts.rates, Unavailable) else ""
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
        busiest = max((d.used for d in sockets.destinations), default=0)
        t["sockets.max_dest_used"] = busiest
        if isinstance(ports, PortRange) and ports.usable > 0:
            t["sockets.max_dest_ratio"] = busiest / ports.usable
            t["sockets.pressured"] = len(pressured(sockets, ports))
    t["config.public_ports"] = tuple(sorted(config.public_ports))
    t.update(port_use_names(facts))
    _boot_names(facts, t)
    return t


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
        t[f"boot.{suffix}"] = None if a is None else _int_or_str(" ".join(a.value.split()))
        t[f"boot_where.{suffix}"] = "" if a is None else f"{a.file}:{a.line}"


def owners_text(sockets: SocketTable, src: str, dst: str, dport: int) -> str:
    """ "php-fpm (pid 812) holds 412 connections" for the processes behind one destination."""
    owners = [o for o in sockets.owners if (o.src, o.dst, o.dport) == (src, dst, dport)]
    owners.sort(key=lambda o: -o.count)
    return "; ".join(
        f"{o.command} (pid {o.pid}) holds {o.count} connection{'s' if o.count != 1 else ''}"
        for o in owners[:5]
    )


def _destination_rows(facts: Facts, config: Config) -> Iterator[Row]:
    sockets, ports = facts.sockets, facts.ports
    assert isinstance(sockets, SocketTable) and isinstance(ports, PortRange)
    for d in sockets.destinations:
        used = d.used
        yield {
            "dest.src": d.src,
            "dest.dst": d.dst,
            "dest.dport": d.dport,
            "dest.used": used,
            "dest.by_state": dict(d.by_state),
            "dest.time_wait": d.by_state.get("TIME_WAIT", 0),
            "dest.established": d.by_state.get("ESTABLISHED", 0),
            "dest.loopback": is_loopback(d.dst),
            "dest.ratio": used / ports.usable if ports.usable else 1.0,
            "dest.owners": owners_text(sockets, d.src, d.dst, d.dport),
        }


def _in_ranges(port: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= port <= hi for lo, hi in ranges)


def _listener_rows(facts: Facts, config: Config) -> Iterator[Row]:
    sockets, ports = facts.sockets, facts.ports
    assert isinstance(sockets, SocketTable)
    seen: set[tuple[str, int]] = set()
    for li in sockets.listeners:
        if (li.addr, li.port) in seen:
            continue
        seen.add((li.addr, li.port))
        in_range = isinstance(ports, PortRange) and ports.low <= li.port <= ports.high
        yield {
            "listener.addr": li.addr,
            "listener.port": li.port,
            "listener.family": li.family,
            "listener.loopback": is_loopback(li.addr),
            "listener.wildcard": li.addr in ("0.0.0.0", "::"),
            "listener.in_ephemeral": in_range,
            "listener.reserved": isinstance(ports, PortRange)
            and _in_ranges(li.port, ports.reserved),
            "listener.public": li.port in config.public_ports,
            "listener.queued": li.queued,
            "listener.backlog": li.backlog,
        }


def _same_setting(a: str, b: str) -> bool:
    """Whether two sysctl values mean the same to the kernel: per whitespace-separated token,
    equal text or equal integers (`0x10` and `16`; the kernel parses integers with base 0)."""
    ta, tb = a.split(), b.split()
    if len(ta) != len(tb):
        return False
    return all(x == y or _as_int(x) == _as_int(y) is not None for x, y in zip(ta, tb, strict=True))


def _as_int(token: str) -> int | None:
    try:
        if re.fullmatch(r"[+-]?0[0-7]+", token):
            return int(token, 8)
        return int(token, 0)
    except ValueError:
        return None


RELEVANT_PREFIXES = ("net.ipv4.", "net.ipv6.", "net.core.", "net.netfilter.", "net.unix.")


def is_relevant_key(key: str) -> bool:
    """Keys that bear on connection failures: the network stack and the descriptor budget.

    portaudit is not a general sysctl drift checker; `kernel.pid_max` differing from its boot
    value is somebody else's finding.
    """
    return key.startswith(RELEVANT_PREFIXES) or key in RUNTIME_KEYS


def _setting_rows(facts: Facts, config: Config) -> Iterator[Row]:
    persisted = facts.persisted
    assert isinstance(persisted, PersistedSysctl)
    for key, a in sorted(effective_all(persisted).items()):
        boot = " ".join(a.value.split())
        runtime = persisted.runtime.get(key)
        yield {
            "setting.key": key,
            "setting.boot": boot,
            "setting.runtime": Missing(f"{key}: runtime value not readable")
            if runtime is None
            else runtime,
            "setting.differs": Missing(f"{key}: runtime value not readable")
            if runtime is None
            else not _same_setting(runtime, boot),
            "setting.file": a.file,
            "setting.line": a.line,
            "setting.where": f"{a.file}:{a.line}",
            "setting.problem": a.problem or "",
            "setting.ignore_errors": a.ignore_errors,
            "setting.procps": persisted.procps_differences.get(key, ""),
            "setting.relevant": is_relevant_key(key),
        }


_VENDOR_DIRS = ("/usr/lib/", "/lib/")


def _shadow_rows(facts: Facts, config: Config) -> Iterator[Row]:
    persisted = facts.persisted
    assert isinstance(persisted, PersistedSysctl)
    for key in sorted({a.key for a in persisted.assignments if not is_glob(a.key)}):
        winner = effective(persisted, key)
        if winner is None:
            continue
        for a in persisted.assignments:
            if a.key != key or a.exclude or a.file == winner.file:
                continue
            if _same_setting(a.value, winner.value):
                continue
            yield {
                "shadow.key": key,
                "shadow.value": " ".join(a.value.split()),
                "shadow.file": a.file,
                "shadow.line": a.line,
                "shadow.where": f"{a.file}:{a.line}",
                "shadow.vendor": a.file.startswith(_VENDOR_DIRS),
                "shadow.by_value": " ".join(winner.value.split()),
                "shadow.by_file": winner.file,
                "shadow.by_line": winner.line,
                "shadow.by_where": f"{winner.file}:{winner.line}",
            }


def _line_rows(facts: Facts, config: Config) -> Iterator[Row]:
    persisted = facts.persisted
    assert isinstance(persisted, PersistedSysctl)
    at = {(a.file, a.line): a for a in persisted.assignments}
    for p in persisted.problems:
        a = at.get((p.file, p.line))
        yield {
            "line.file": p.file,
            "line.line": p.line,
            "line.where": f"{p.file}:{p.line}" if p.line else p.file,
            "line.kind": p.kind,
            "line.text": p.text,
            "line.key": a.key if a is not None else "",
            "line.ignore_errors": a.ignore_errors if a is not None else False,
        }


def _kind(
    prefix: str,
    fields: str,
    requires: tuple[str, ...],
    rows: Callable[[Facts, Config], Iterator[Row]],
) -> SubjectKind:
    """A subject kind whose rows define `prefix.field` for each of the space-separated fields."""
    names = frozenset(f"{prefix}.{field}" for field in fields.split())
    return SubjectKind(prefix=prefix, names=names, requires=requires, rows=rows)


SUBJECT_KINDS: dict[str, SubjectKind] = {
    "destinations": _kind(
        "dest",
        "src dst dport used by_state time_wait established loopback ratio owners",
        requires=("sockets", "ports"),
        rows=_destination_rows,
    ),
    "listeners": _kind(
        "listener",
        "addr port family loopback wildcard in_ephemeral reserved public queued backlog",
        requires=("sockets",),
        rows=_listener_rows,
    ),
    "persisted_settings": _kind(
        "setting",
        "key boot runtime differs file line where problem ignore_errors procps relevant",
        requires=("persisted",),
        rows=_setting_rows,
    ),
    "persisted_shadows": _kind(
        "shadow",
        "key value file line where vendor by_value by_file by_line by_where",
        requires=("persisted",),
        rows=_shadow_rows,
    ),
    "persisted_lines": _kind(
        "line",
        "file line where kind text key ignore_errors",
        requires=("persisted",),
        rows=_line_rows,
    ),
}
