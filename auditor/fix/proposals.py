"""The one place that decides which value `fix` writes for each key, and why.

Rules say *that* a key should change (their `fix.sysctl`); for the port keys the value is
computed here from the facts, not parsed back from the rule's rendered text, because the
right value depends on more than one finding:

- widening `ip_local_port_range` (EPH-001, EPH-004) brings new ports into automatic
  assignment, so the same change set reserves, in `ip_local_reserved_ports`, every port of
  the new range that a listener holds (TCP, or UDP bound outside the range in force) and every
  port the config declares (`public_ports`, `reserve_ports`), merged with the ports reserved
  now. That makes widening safe: no server port can be handed to an outgoing connection.
  Reserved ports may lie anywhere (the kernel does not check them against the range), so the
  order is free; the reservation is written first, at runtime and in the file, so no moment
  exists where the wider range is exposed.
- the parity fix (EPH-005) drops the top port; a widened range already has an even low end
  and 65535 on top, so it settles parity too.
- a listener inside the range (EPH-006) is reserved, merged into the same list.

Every other key takes the rule's value, checked against the typed table in `keys.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from auditor.engine.report import Applicability, Finding
from auditor.errors import RefusedError
from auditor.facts.model import (
    PORT_MAX,
    Facts,
    PortRange,
    PortUse,
    SocketTable,
    Unavailable,
    endpoint,
    unprivileged_start,
)
from auditor.fix import keys
from auditor.fix.keys import PORT_RANGE, RESERVED, UNPRIV_START

WIDEN_RULES = frozenset({"EPH-001", "EPH-002", "EPH-004"})
"""Rules whose fix is the widest range the kernel accepts (listeners in it are reserved)."""
PARITY_RULES = frozenset({"EPH-005"})
"""Rules whose fix gives the range's ends different parity."""
RESERVE_RULES = frozenset({"EPH-006"})
"""Rules whose fix reserves the finding's listening port (evidence `port`)."""


@dataclass(frozen=True, slots=True)
class Proposal:
    """One key, the value `fix` proposes, the rules that want it and why that value."""

    key: str
    value: str
    rules: tuple[str, ...]
    reasons: tuple[str, ...] = ()
    applicability: Applicability = Applicability.SAFE


@dataclass(frozen=True, slots=True)
class Proposals:
    items: tuple[Proposal, ...]
    notes: tuple[str, ...] = field(default=())

    def get(self, key: str) -> Proposal | None:
        return next((p for p in self.items if p.key == key), None)


@dataclass(frozen=True, slots=True)
class Declared:
    """Ports the operator's config declares as servers' (`public_ports`, `reserve_ports`)."""

    public_ports: frozenset[int] = frozenset()
    reserve_ports: frozenset[int] = frozenset()


NO_PORTS = Declared()


def widened_range(ports: PortRange, unpriv_start: int) -> tuple[int, int] | None:
    """The widest range the kernel accepts (`PortRange.widened_low` to 65535); None when that
    would not give more ports than the range in force."""
    if not ports.widens(unpriv_start):
        return None
    return ports.widened_low(unpriv_start), PORT_MAX


def parity_range(ports: PortRange) -> tuple[int, int] | None:
    """The range without its top port when both ends have the same parity, else None."""
    if ports.low % 2 == ports.high % 2 and ports.high > ports.low:
        return ports.low, ports.high - 1
    return None


def _listener_ports(sockets: SocketTable | object) -> dict[int, str]:
    """port -> `addr:port` of the listeners in the snapshot (IPv6 in brackets)."""
    out: dict[int, str] = {}
    if isinstance(sockets, SocketTable):
        for li in sockets.listeners:
            out.setdefault(li.port, endpoint(li.addr, li.port))
    return out


def _udp_ports(facts: Facts | None) -> dict[int, str]:
    """port -> `addr:port` of the UDP sockets bound outside the range when facts were read."""
    use = facts.port_use if facts is not None else None
    out: dict[int, str] = {}
    if isinstance(use, PortUse):
        for li in use.udp_listeners:
            out.setdefault(li.port, endpoint(li.addr, li.port))
    return out


def _udp_cut(facts: Facts | None) -> int:
    """How many UDP sockets outside the range the facts left out of `udp_listeners`."""
    use = facts.port_use if facts is not None else None
    return use.udp_listeners_omitted if isinstance(use, PortUse) else 0


def _strictest(findings: Iterable[Finding]) -> Applicability:
    got = {f.fix.applicability for f in findings}
    return Applicability.UNSAFE if Applicability.UNSAFE in got else Applicability.SAFE


def propose(
    findings: Iterable[Finding],
    facts: Facts | None,
    runtime: Mapping[str, str],
    declared: Declared = NO_PORTS,
) -> Proposals:
    """The values for the keys the (already selected) findings want changed.

    `runtime` holds the current values of the keys involved (and of the port keys); `facts`
    supplies the listeners. Values are validated against `keys.KEYS` before they are returned.
    """
    findings = [f for f in findings if f.fix.sysctl]
    notes: list[str] = []
    generic: dict[str, tuple[str, list[Finding]]] = {}
    widen: list[Finding] = []
    parity: list[Finding] = []
    reserve: list[Finding] = []
    for f in findings:
        for key, value in f.fix.sysctl.items():
            if key == PORT_RANGE and f.id in WIDEN_RULES:
                widen.append(f)
            elif key == PORT_RANGE and f.id in PARITY_RULES:
                parity.append(f)
            elif key == RESERVED and f.id in RESERVE_RULES:
                reserve.append(f)
            else:
                have = generic.get(key)
                if have is not None and not keys.same(key, have[0], value):
                    other = ",".join(dict.fromkeys(x.id for x in have[1]))
                    raise RefusedError(
                        f"{f.id} wants {key} = {value!r} but {other} wants {have[0]!r};"
                        " choose one with --only"
                    )
                generic.setdefault(key, (value, []))[1].append(f)

    context = dict(runtime)
    items: list[Proposal] = []
    ports = facts.ports if facts is not None and isinstance(facts.ports, PortRange) else None
    if ports is None and (widen or parity or reserve):
        ports = _ports_from(runtime)
    new_range: tuple[int, int] | None = None
    range_rules: list[Finding] = []
    if ports is not None and (widen or parity):
        unpriv = unprivileged_start(runtime)
        sockets = facts.sockets if facts is not None else None
        if widen and isinstance(sockets, Unavailable):
            ids = ",".join(dict.fromkeys(f.id for f in widen))
            why = sockets.reason
            notes.append(
                f"{ids}: not widening {PORT_RANGE}: the listening ports it would have to"
                f" reserve could not be read ({why})"
            )
        elif widen and _udp_cut(facts):
            ids = ",".join(dict.fromkeys(f.id for f in widen))
            notes.append(
                f"{ids}: not widening {PORT_RANGE}: the facts list the UDP sockets bound"
                f" outside it on the lowest {len(_udp_ports(facts))} ports and leave"
                f" {_udp_cut(facts)} sockets out, so the ports it would have to reserve are not"
                " all known"
            )
        elif widen:
            new_range = widened_range(ports, unpriv)
            if new_range is None:
                ids = ",".join(dict.fromkeys(f.id for f in widen))
                notes.append(
                    f"{ids}: {PORT_RANGE} {ports.low} {ports.high} cannot usefully get wider;"
                    " see the rule's advice (portaudit rules show ID)"
                )
            else:
                range_rules = widen + parity
        if new_range is None and parity:
            new_range = parity_range(ports)
            range_rules = parity

    reserve_rules: list[Finding] = []
    reasons: list[str] = []
    if ports is not None:
        try:
            current_reserved = list(PortRange.parse_reserved(runtime[RESERVED]))
        except (KeyError, ValueError):
            current_reserved = list(ports.reserved)
        added: dict[int, str] = {}
        if new_range is not None and (new_range[0] < ports.low or new_range[1] > ports.high):
            lo, hi = new_range
            listeners = _listener_ports(facts.sockets if facts is not None else None)
            inside = f"inside the new range {lo}-{hi}"
            servers = [
                *((p, f"listener {w} {inside}") for p, w in sorted(listeners.items())),
                *((p, f"UDP listener {w} {inside}") for p, w in sorted(_udp_ports(facts).items())),
                *((p, f"config public_ports, {inside}") for p in sorted(declared.public_ports)),
            ]
            for port, why in servers:
                if lo <= port <= hi and not PortRange.in_ranges(port, current_reserved):
                    added.setdefault(port, why)
            for port in sorted(declared.reserve_ports):
                if not PortRange.in_ranges(port, current_reserved):
                    added.setdefault(port, "config reserve_ports")
            if added:
                reserve_rules.extend(range_rules)
        for f in reserve:
            held = f.evidence.get("port")
            if isinstance(held, int) and not isinstance(held, bool) and 1 <= held <= 65535:
                reserve_rules.append(f)
                if not PortRange.in_ranges(held, current_reserved):
                    added.setdefault(held, f"listener {f.subject} inside the ephemeral range")
        if added:
            value = keys.format_ports([*current_reserved, *((p, p) for p in added)])
            context[RESERVED] = value
            reasons = [f"reserve {p}: {why}" for p, why in sorted(added.items())]
            items.append(
                Proposal(
                    RESERVED,
                    keys.validate(RESERVED, value, context, _ids(reserve_rules)),
                    _id_tuple(reserve_rules),
                    tuple(reasons),
                    _strictest(reserve_rules),
                )
            )
    if new_range is not None and ports is not None:
        text = f"{new_range[0]} {new_range[1]}"
        why = (
            f"widen {ports.low}-{ports.high} to {new_range[0]}-{new_range[1]}"
            if new_range[1] - new_range[0] > ports.high - ports.low
            else f"drop the top port {ports.high} so the ends differ in parity"
        )
        items.append(
            Proposal(
                PORT_RANGE,
                keys.validate(PORT_RANGE, text, context, _ids(range_rules)),
                _id_tuple(range_rules),
                (why,),
                _strictest(range_rules),
            )
        )
    for key, (value, fs) in generic.items():
        items.append(
            Proposal(
                key,
                keys.validate(key, value, context, _ids(fs)),
                _id_tuple(fs),
                (),
                _strictest(fs),
            )
        )
    return Proposals(tuple(_ordered(items)), tuple(notes))


def _ordered(items: list[Proposal]) -> list[Proposal]:
    """Reserved ports first, then the unprivileged start, then the range, then the rest:
    the order runtime writes and a new drop-in's lines follow, so no step exposes a port."""
    rank = {RESERVED: 0, UNPRIV_START: 1, PORT_RANGE: 2}
    return sorted(items, key=lambda p: rank.get(p.key, 3))


def _ports_from(runtime: Mapping[str, str]) -> PortRange | None:
    try:
        return PortRange.parse(runtime.get(PORT_RANGE, ""), runtime.get(RESERVED, ""))
    except ValueError:
        return None


def _id_tuple(fs: Iterable[Finding]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.id for f in fs))


def _ids(fs: Iterable[Finding]) -> str:
    return ",".join(_id_tuple(fs))
