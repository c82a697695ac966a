"""`portaudit diagnose`: try the connection as the client would, then explain the outcome.

Order of work: resolve the name (every address), read the route for each, connect to each with
the timeout, speak the protocol on the first connection that succeeds; then gather what the
host can add (its listeners and firewall when the target is this host, the destination's port
use after EADDRNOTAVAIL, the proxy the client's environment selects) and let `causes.judge`
rate the source document's causes. Only the probe touches the network, and only the target.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

from auditor.config import load_config
from auditor.diagnose.causes import Evidence, judge
from auditor.diagnose.firewall import decisive
from auditor.diagnose.local import (
    client_rules,
    forwarding_rules,
    local_view,
    nat_destination,
    rule_counters,
    with_deltas,
)
from auditor.diagnose.model import (
    CUT_SHORT,
    AddressAttempt,
    CauseStatus,
    ConnectResult,
    Diagnosis,
    FirewallHit,
    LocalView,
    NatHit,
    OwnPath,
    PortUse,
    Protocol,
    ProxyUse,
    Resolution,
    RouteInfo,
    Target,
    Verdict,
    flaps,
)
from auditor.diagnose.probe import connect
from auditor.diagnose.protocol import check_protocol
from auditor.diagnose.proxy import proxies_for
from auditor.diagnose.resolve import resolve
from auditor.diagnose.route import neighbour_state, route_to
from auditor.diagnose.server import ServerSample, conntrack, listen_counters, listeners_on
from auditor.diagnose.target import parse_target
from auditor.engine.evaluate import check_config, evaluate
from auditor.engine.load import load_rules
from auditor.engine.report import Outcome, Report
from auditor.errors import UsageError
from auditor.facts.collect import collect_facts
from auditor.facts.model import (
    DestinationRows,
    Facts,
    PortRange,
    SocketTable,
    Unavailable,
    endpoint,
)
from auditor.hostfs import HostRoot

MAX_ADDRESSES = 8
"""A name with more addresses than this is cut short: each may cost a full timeout."""

_VERDICT_OF = {
    "refused": Verdict.REFUSED,
    "timeout": Verdict.TIMEOUT,
    "addr-not-available": Verdict.ADDR_NOT_AVAILABLE,
    "unreachable": Verdict.UNREACHABLE,
    "descriptor-limit": Verdict.DESCRIPTOR_LIMIT,
    "reset": Verdict.RESET,
}


@dataclass(frozen=True, slots=True)
class Options:
    target: str
    protocol: Protocol | None = None
    timeout: float = 3.0
    expect_ip: str | None = None
    local: bool = False
    insecure: bool = False
    """Skip TLS certificate verification, as `curl -k` does."""
    attempts: int = 3
    """Tries per address (connect and protocol), ATTEMPT_GAP apart: differing results flap."""


ATTEMPT_GAP = 0.3
"""Seconds between attempts: long enough for a crash-looping server to change state."""
ATTEMPT_ALLOWANCE = 1.0
"""Each attempt may add this much to --timeout: the whole run ends within
timeout + attempts x ATTEMPT_ALLOWANCE seconds (host checks included)."""
HOST_CHECK_RESERVE = 1.2
"""Kept back from the probe's budget for start-up and the host checks that follow it."""


def _check_options(opts: Options) -> None:
    if not 0 < opts.timeout <= 300:
        raise UsageError(f"--timeout {opts.timeout}: expected seconds in (0, 300]")
    if not 1 <= opts.attempts <= 10:
        raise UsageError(f"--attempts {opts.attempts}: expected 1 to 10")
    if opts.expect_ip is not None:
        try:
            ipaddress.ip_address(opts.expect_ip)
        except ValueError:
            raise UsageError(f"--expect-ip {opts.expect_ip!r}: not an IP address") from None


def _failed(result: ConnectResult, route: RouteInfo | Unavailable, address: str) -> ConnectResult:
    if result.outcome in ("timeout", "unreachable") and not isinstance(route, Unavailable):
        hop = route.gateway or address
        if route.kind == "unicast":
            return dataclasses.replace(result, neighbour=neighbour_state(hop))
    return result


def _attempt(
    address: str, target: Target, timeout: float, check: bool, verify: bool
) -> AddressAttempt:
    """One attempt: connect, then (when `check`) speak the protocol; `tries` holds its whole
    outcome as a verdict (`ok`, `refused`, `reset`, `no-reply`...)."""
    route = route_to(address)
    result, sock = connect(address, target.port, timeout)
    if sock is None:
        result = _failed(result, route, address)
        once = AddressAttempt(address=address, route=route, connect=result)
        return dataclasses.replace(once, tries=(str(_one_verdict(once)),))
    try:
        proto = None
        if check:

            def reconnect() -> socket.socket | None:
                return connect(address, target.port, timeout)[1]

            proto = check_protocol(sock, target, timeout, reconnect, verify=verify)
    finally:
        sock.close()
    once = AddressAttempt(address=address, route=route, connect=result, protocol=proto)
    outcome = str(_one_verdict(once)) if check else "connected"
    return dataclasses.replace(once, tries=(outcome,))


def _again(first: AddressAttempt, later: AddressAttempt, cut: bool) -> AddressAttempt:
    """`first` with one more try: the try's whole outcome is added to `tries` (or `cut-short`
    when the time budget, not the server, ended it); the first try that did not go well keeps
    its details as the attempt's connect and protocol results."""
    outcome = later.tries[0]
    if cut and outcome in ("timeout", "no-reply"):
        outcome = CUT_SHORT
    tries = (*first.tries, outcome)
    if first.tries[0] == "ok" and outcome not in ("ok", CUT_SHORT):
        return dataclasses.replace(later, tries=tries)
    return dataclasses.replace(first, tries=tries)


def _probe(
    addresses: tuple[str, ...], target: Target, opts: Options, deadline: float
) -> list[AddressAttempt]:
    """Every address once, then further rounds over every address ATTEMPT_GAP apart while
    the budget lasts; each try is a whole attempt (connect and protocol), so a server that
    accepts and then answers differently flaps as surely as one that refuses now and then."""
    verify = not opts.insecure
    attempts: list[AddressAttempt] = []
    for address in addresses:
        left = deadline - time.monotonic()
        wait = min(opts.timeout, max(left, 0.2))
        attempts.append(_attempt(address, target, wait, check=left > 0.4, verify=verify))
    for _ in range(opts.attempts - 1):
        if deadline - time.monotonic() - ATTEMPT_GAP < 0.2:
            break
        time.sleep(ATTEMPT_GAP)
        for i, first in enumerate(attempts):
            left = deadline - time.monotonic()
            if left < 0.2:
                break
            wait = min(opts.timeout, left)
            check = first.protocol is not None or first.connect.outcome != "connected"
            later = _attempt(first.address, target, wait, check=check, verify=verify)
            attempts[i] = _again(first, later, cut=wait < opts.timeout)
    return attempts


_AFTER_VERDICT = {
    "reset": Verdict.RESET,
    "closed": Verdict.CLOSED,
    "silent": Verdict.NO_REPLY,
    "unfinished": Verdict.NO_REPLY,
}


def _one_verdict(attempt: AddressAttempt) -> Verdict:
    """What one attempt amounts to, repeated attempts aside."""
    outcome = attempt.connect.outcome
    if outcome == "connected":
        proto = attempt.protocol
        if proto is not None and proto.after:
            return _AFTER_VERDICT[proto.after]
        if proto is not None and not proto.ok:
            return Verdict.PROTOCOL_MISMATCH
        if proto is not None and proto.tls_untrusted:
            return Verdict.TLS_UNTRUSTED
        return Verdict.OK
    return _VERDICT_OF.get(outcome, Verdict.UNREACHABLE)


def _verdict(primary: AddressAttempt | None, resolution: Resolution) -> Verdict:
    if primary is None:
        return Verdict.UNRESOLVED
    if flaps(primary.tries):
        return Verdict.FLAPPING
    return _one_verdict(primary)


def eph001_outcome(host: HostRoot, facts: Facts, src: str | None, dst: str, dport: int) -> str:
    """EPH-001's outcome for the destination, from the engine over `facts` with the
    operator's config (checked as the audit checks it, so a bad file is the same one-line
    error): diagnose calls the ports exhausted exactly where the audit does. The worst
    outcome among the destination's sources when `src` is not one of them."""
    rules = [r for r in load_rules() if r.id == "EPH-001"]
    config = load_config(host, None)
    check_config(rules, config)
    report = evaluate(rules, facts, config)
    tail = f" -> {endpoint(dst, dport)}"
    mine = [o for o in report.outcomes if o.subject.endswith(tail)]
    exact = [o for o in mine if src is not None and o.subject == f"{src}{tail}"]
    texts = [_outcome_text(report, o) for o in exact or mine]
    if not texts:
        return "pass: no socket to this destination"
    return min(texts, key=lambda t: _TEXT_ORDER.get(t.partition(":")[0], 9))


_TEXT_ORDER = {"fail crit": 0, "fail warn": 1, "fail info": 2, "error": 3, "skipped": 4, "pass": 5}


def _outcome_text(report: Report, o: Outcome) -> str:
    """`fail crit: <message>`, `pass`, `skipped: <reason>`: one outcome as causes read it."""
    for f in report.findings:
        if f.id == o.rule_id and f.subject == o.subject:
            return f"fail {f.severity}: {f.message}"
    return str(o.status) + (f": {o.reason}" if o.reason else "")


def _port_use(
    facts: Facts, src: str | None, dst: str, dport: int, eph001: str
) -> PortUse | Unavailable:
    if isinstance(facts.ports, Unavailable):
        return facts.ports
    if isinstance(facts.sockets, Unavailable):
        return facts.sockets
    ports: PortRange = facts.ports
    table: SocketTable = facts.sockets
    rows = table.destinations
    if isinstance(rows, DestinationRows):
        mine = rows.to(dst, dport)
    else:
        mine = [d for d in rows if d.dst == dst and d.dport == dport]
    exact = [d for d in mine if d.src == src]
    chosen = exact or mine
    by_state: dict[str, int] = {}
    for d in chosen:
        for state, n in d.by_state.items():
            by_state[state] = by_state.get(state, 0) + n
    return PortUse(
        src=(src or "") if exact or not mine else ",".join(sorted({d.src for d in mine})),
        dst=dst,
        dport=dport,
        used=sum(by_state.values()),
        usable=ports.usable,
        by_state=dict(sorted(by_state.items())),
        port_range=f"{ports.low}-{ports.high}",
        tw_reuse=facts.sysctl.get("net.ipv4.tcp_tw_reuse"),
        eph001=eph001,
    )


def _nat_answers(
    hits: tuple[NatHit, ...] | Unavailable | None,
    addr: str,
    port: int,
    timeout: float,
    deadline: float,
) -> tuple[NatHit, ...] | Unavailable | None:
    """Try the destination of the NAT rule that applies unconditionally: a REDIRECT to a
    proxy that is down answers `refused` whatever the real server does."""
    if not isinstance(hits, tuple) or not hits or hits[-1].conditions:
        return hits
    last = hits[-1]
    to_addr, to_port = nat_destination(last, addr, port)
    wait = min(timeout, max(deadline - time.monotonic(), 0.2))
    result, sock = connect(to_addr, to_port, wait)
    if sock is not None:
        sock.close()
    return (*hits[:-1], dataclasses.replace(last, answers=result.outcome))


def _server_sample(host: HostRoot, port: int) -> ServerSample:
    return ServerSample(listeners=listeners_on(port), counters=listen_counters(host))


CITED_RULES = ("LSN-001", "LSN-002", "CT-001", "RCH-001", "FD-002", "FD-003")
"""Audit rules that judge conditions diagnose also names as causes."""


def rule_outcomes(host: HostRoot, facts: Facts, local: LocalView) -> dict[str, str]:
    """The audit's own verdict on the cited rules, from the engine over the same facts, so
    `diagnose` and `audit` cannot disagree on one host. RCH-001 is per listener: the
    listeners on the target port are the subjects that matter."""
    rules = [r for r in load_rules() if r.id in CITED_RULES]
    report = evaluate(rules, facts, load_config(host, None))
    ports = {f":{v.port}" for v in local.listeners} if isinstance(local.listeners, tuple) else set()
    out: dict[str, str] = {}
    for o in report.outcomes:
        if o.subject and not any(o.subject.endswith(p) for p in ports):
            continue
        out[f"{o.rule_id} {o.subject}".strip()] = _outcome_text(report, o)
    return out


def _probe_proxy(p: ProxyUse, timeout: float) -> ProxyUse:
    if p.reachable:  # known unusable without a probe (a port that is no port)
        return p
    try:
        infos = socket.getaddrinfo(p.host, p.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return ProxyUse(p.variable, p.url, p.host, p.port, reachable=f"unresolvable ({exc})")
    addr = str(infos[0][4][0])
    result, sock = connect(addr, p.port, timeout)
    if sock is not None:
        sock.close()
    return ProxyUse(p.variable, p.url, p.host, p.port, reachable=result.outcome)


def diagnose(
    opts: Options,
    host: HostRoot | None = None,
    env: Mapping[str, str] | None = None,
) -> Diagnosis:
    """Probe the target and explain the outcome; raises UsageError for bad input."""
    _check_options(opts)
    target = parse_target(opts.target, opts.protocol)
    host = host or HostRoot()
    env = os.environ if env is None else env
    started = time.monotonic()
    deadline = started + opts.timeout + opts.attempts * ATTEMPT_ALLOWANCE - HOST_CHECK_RESERVE
    resolution = resolve(target, host, opts.expect_ip)
    addresses = resolution.addresses[:MAX_ADDRESSES]
    first_route = route_to(addresses[0]) if addresses else None
    local_addr = (
        addresses[0] if isinstance(first_route, RouteInfo) and first_route.kind == "local" else None
    )
    is_local = bool(addresses) and (local_addr is not None or opts.local)
    outside = (
        _outside_rewrite(addresses[0], target.port, local_addr is not None)
        if is_local and opts.local
        else None
    )
    served = (
        _outside_destination(outside, addresses[0], target.port)[1]
        if outside is not None and outside.kind == "redirect"
        else target.port
    )
    before = _server_sample(host, served) if is_local else None
    counted = rule_counters() if is_local else {}

    own: OwnPath | None = None
    judged_port: int | None = None
    if outside is not None:
        to_addr, to_port = _outside_destination(outside, addresses[0], target.port)
        reserve = min(opts.timeout, OWN_PATH_RESERVE)
        attempts = _probe((to_addr,), dataclasses.replace(target, port=to_port), opts,
                          deadline - reserve)  # fmt: skip
        mine = _probe(addresses, target, dataclasses.replace(opts, attempts=1), deadline)
        own = OwnPath(verdict=_verdict(_primary(mine), resolution), attempts=tuple(mine))
        judged_port = to_port
    else:
        attempts = _probe(addresses, target, opts, deadline)
    primary = _primary(attempts)
    verdict = _verdict(primary, resolution)

    facts: Facts | None = None
    local: LocalView | None = None
    if is_local:
        facts = collect_facts(host)
        addr = local_addr or addresses[0]
        reason = f"{addr} is an address of this host" if local_addr else "--local"
        bindv6only = facts.sysctl.get("net.ipv6.bindv6only", "0") == "1"
        after = _server_sample(host, served)
        local = local_view(
            host, reason, addr, target.port, facts.sockets, bindv6only, before, after,
            forwarding=local_addr is None, served_port=served,
        )  # fmt: skip
        nat = (
            _judged_nat(local.nat, primary)
            if outside is not None
            else _nat_answers(local.nat, addresses[0], target.port, opts.timeout, deadline)
        )
        local = dataclasses.replace(
            local,
            firewall=with_deltas(local.firewall, counted) or (),
            forward=with_deltas(local.forward, counted),
            conntrack=conntrack(host),
            rules=rule_outcomes(host, facts, local),
            nat=nat,
        )
    blocked = _forward_block(local, outside)
    if blocked is not None:
        own = own or OwnPath(verdict=verdict, attempts=tuple(attempts))
        verdict = _BLOCK_VERDICT.get(blocked.action.split()[0], Verdict.UNREACHABLE)
        if "tcp reset" in blocked.action or "port-unreachable" in blocked.action:
            verdict = Verdict.REFUSED
    client_fw: tuple[FirewallHit, ...] | Unavailable | None = None
    client_nat: tuple[NatHit, ...] | Unavailable | None = None
    client_ct: tuple[int, int] | Unavailable | None = None
    if addresses:
        # The probe leaves through this host's output hook even when the target is local.
        client_fw, client_nat = client_rules(addresses[0], target.port, local_addr is not None)
        client_nat = _nat_answers(client_nat, addresses[0], target.port, opts.timeout, deadline)
        if not is_local:
            client_ct = conntrack(host)

    port_use: PortUse | Unavailable | None = None
    if verdict is Verdict.ADDR_NOT_AVAILABLE and primary is not None:
        facts = facts or collect_facts(host)
        src = None if isinstance(primary.route, Unavailable) else primary.route.source
        outcome = eph001_outcome(host, facts, src, primary.address, target.port)
        port_use = _port_use(facts, src, primary.address, target.port, outcome)

    proxies = tuple(
        _probe_proxy(p, min(opts.timeout, max(deadline - time.monotonic(), 0.2)))
        for p in proxies_for(target, env)
    )
    ev = Evidence(
        target=target,
        verdict=verdict,
        resolution=resolution,
        attempts=tuple(attempts),
        primary=primary,
        local=local,
        proxies=proxies,
        port_use=port_use,
        client_firewall=client_fw,
        client_nat=client_nat,
        client_conntrack=client_ct,
        outside=outside,
        port=judged_port,
    )
    causes, steps = judge(ev)
    summary = summary_line(ev)
    likely = [c for c in causes if c.status is CauseStatus.LIKELY]
    if verdict is Verdict.OK and likely:
        summary = f"{summary}, but {likely[0].id} is likely: {likely[0].why}"
    evidence = evidence_lines(ev)
    path = judged_path(outside, target.port) if outside is not None else ""
    if blocked is not None and own is not None:
        rule = f"{blocked.where}: `{blocked.rule}` ({blocked.action})"
        summary = (
            f"forwarded clients get {verdict}: {rule} in this host's forward chain (judged "
            f"from the rule: this host's own connections never cross it); this host's own "
            f"connection: {own.verdict}"
        )
        path = (path + "; then " if path else "a forwarded client's: ") + (
            f"this host's forward chain, where {rule} stops it"
        )
    elif own is not None:
        summary = (
            f"outside clients (prerouting {outside.kind if outside else ''}): {summary}; "
            f"this host's own connection: {own.verdict}"
        )
    if own is not None:
        evidence += own_path_lines(own, target)
    return Diagnosis(
        target=target,
        verdict=verdict,
        summary=summary,
        resolution=resolution,
        attempts=tuple(attempts),
        evidence=evidence,
        causes=causes,
        next_steps=steps,
        local=local,
        proxies=proxies,
        port_use=port_use,
        client_firewall=client_fw,
        client_nat=client_nat,
        path=path,
        own_path=own,
    )


OWN_PATH_RESERVE = 0.5
"""Seconds of the probe budget kept for this host's own connection when the verdict judges
an outside client's path through a prerouting DNAT/REDIRECT."""


_BLOCK_VERDICT = {"drop": Verdict.TIMEOUT, "reject": Verdict.UNREACHABLE}
"""What a forwarded client gets from a forward rule (a reject with tcp reset or icmp
port-unreachable is a refusal)."""


def _forward_block(local: LocalView | None, outside: NatHit | None) -> FirewallHit | None:
    """The forward-chain rule that stops every forwarded client's connection, when this
    host forwards it (a router, or the DNAT of a published port): this host's own probe
    leaves through output and cannot see it, so the rule decides the outside verdict."""
    if local is None or not isinstance(local.forward, tuple):
        return None
    if not local.forwarding and (outside is None or outside.kind != "dnat"):
        return None
    return decisive(local.forward)


def _primary(attempts: list[AddressAttempt]) -> AddressAttempt | None:
    """The attempt the verdict describes: one that flaps, else one that connected, else the
    first."""
    found = next((a for a in attempts if flaps(a.tries)), None)
    found = found or next((a for a in attempts if a.connect.outcome == "connected"), None)
    return found or (attempts[0] if attempts else None)


def _outside_rewrite(addr: str, port: int, dst_local: bool) -> NatHit | None:
    """The prerouting REDIRECT/DNAT that rewrites every new connection an outside client
    makes to (addr, port); None when there is none (or it has conditions portaudit cannot
    decide). This host's own connections never traverse prerouting."""
    nat, _ = forwarding_rules(addr, port, dst_local)
    if isinstance(nat, tuple) and nat and not nat[-1].conditions:
        return nat[-1]
    return None


def _outside_destination(hit: NatHit, addr: str, port: int) -> tuple[str, int]:
    """Where an outside client's connection goes: a REDIRECT keeps the address it arrived
    on (this host's), a DNAT takes the rule's."""
    if hit.kind == "redirect":
        return addr, hit.to_port or port
    return nat_destination(hit, addr, port)


def _judged_nat(
    hits: tuple[NatHit, ...] | Unavailable | None, primary: AddressAttempt | None
) -> tuple[NatHit, ...] | Unavailable | None:
    """The prerouting hits, the decisive one with what the probe of its destination gave."""
    if not isinstance(hits, tuple) or not hits or primary is None:
        return hits
    return (*hits[:-1], dataclasses.replace(hits[-1], answers=primary.connect.outcome))


def judged_path(hit: NatHit, port: int) -> str:
    to = (hit.to_addr or "this host") + (f":{hit.to_port}" if hit.to_port else "")
    return (
        f"an outside client's: {hit.where}: `{hit.rule}` sends tcp dport {port} to {to} "
        "(prerouting; this host's own connections take nat output and never meet it)"
    )


def own_path_lines(own: OwnPath, target: Target) -> tuple[str, ...]:
    """This host's own connection, shown beside the outside path the verdict judges."""
    out = []
    for a in own.attempts:
        c = a.connect
        how = f" ({c.errno_name}: {c.message})" if c.errno_name else ""
        proto = f"; {a.protocol.summary}" if a.protocol is not None else ""
        out.append(
            f"this host's own connection {a.address}:{target.port} (nat output path): "
            f"{c.outcome}{how}{proto} -> {own.verdict}"
        )
    return tuple(out)


def summary_line(ev: Evidence) -> str:
    t = ev.target
    p = ev.primary
    if ev.verdict is Verdict.UNRESOLVED:
        return f"{t.host} does not resolve: {ev.resolution.error}"
    assert p is not None
    where = f"{p.address}:{ev.port or t.port}"
    if ev.verdict is Verdict.FLAPPING:
        return f"attempts to {where} ended differently: {', '.join(p.tries)}"
    if ev.verdict is Verdict.OK:
        proto = f" ({p.protocol.summary})" if p.protocol else ""
        return f"connected to {where}{proto}"
    if p.connect.outcome == "connected" and p.protocol is not None:
        return f"connected to {where}, but {p.protocol.summary}"
    errno_text = f" ({p.connect.errno_name}: {p.connect.message})" if p.connect.errno_name else ""
    icmp = p.connect.icmp
    said = f"; ICMP {icmp.name} from {icmp.sender}" if icmp is not None else ""
    return f"connect to {where}: {ev.verdict}{errno_text}{said}"


def evidence_lines(ev: Evidence) -> tuple[str, ...]:
    """What was observed, one fact per line, for the table and the JSON `evidence` list."""
    out: list[str] = []
    res = ev.resolution
    t = ev.target
    if ev.outside is not None:
        out.append(f"judged path: {judged_path(ev.outside, t.port)}")
    if not t.is_literal:
        if res.error:
            out.append(f"resolve {t.host}: {res.error}")
        else:
            src = (
                ", ".join(f"{e.file} line {e.line}: {e.address}" for e in res.hosts_entries)
                if res.hosts_entries
                else "DNS (not in /etc/hosts)"
            )
            out.append(f"resolve {t.host}: {', '.join(res.addresses)} (from {src})")
        if res.expect_mismatch:
            out.append(f"expected {res.expect_ip}, which is not among the addresses")
    for a in ev.attempts:
        r = a.route
        if isinstance(r, Unavailable):
            out.append(f"route to {a.address}: unknown ({r.reason})")
        elif r.kind in ("unicast", "local"):
            dev = f"dev {r.interface}" + (f" ({r.interface_kind})" if r.interface_kind else "")
            via = (
                f" via {r.gateway}" + (" (default route)" if r.via_default else "")
                if r.gateway
                else " (connected)"
            )
            if r.kind == "local":
                via = " (an address of this host)"
            out.append(f"route to {a.address}: {dev} src {r.source}{via}")
        else:
            out.append(f"route to {a.address}: {r.kind} ({r.error})")
        c = a.connect
        line = f"connect {a.address}:{ev.port or t.port}: {c.outcome}"
        if c.errno_name:
            line += f" ({c.errno_name}: {c.message})"
        elif c.message:
            line += f" ({c.message})"
        if c.local:
            line += f" from {c.local}"
        if c.neighbour:
            line += f"; next hop ARP/ND state {c.neighbour}"
        if c.icmp is not None:
            line += (
                f"; ICMP {c.icmp.name} (type {c.icmp.type} code {c.icmp.code}) from {c.icmp.sender}"
            )
        elif c.outcome == "refused":
            line += "; a TCP reset answered the SYN"
        out.append(line)
        if len(a.tries) > 1:
            out.append(f"attempts to {a.address}: {', '.join(a.tries)}")
        if a.protocol is not None:
            out.append(f"{t.protocol}{'+tls' if t.tls else ''} check: {a.protocol.summary}")
            if a.protocol.first_bytes:
                out.append(f"reply began: {a.protocol.first_bytes}")
            for f in a.protocol.front:
                out.append(f"in front: {f}")
    for p in ev.proxies:
        state = f" ({p.reachable})" if p.reachable else ""
        out.append(f"proxy from ${p.variable}: {p.url}{state}")
    if ev.local is not None:
        lv = ev.local
        out.append(f"host checks: {lv.reason}")
        if isinstance(lv.listeners, Unavailable):
            out.append(f"listeners: unknown ({lv.listeners.reason})")
        elif not lv.listeners:
            out.append(f"listeners on port {ev.port or t.port}: none")
        else:
            shown = ", ".join(v.described for v in lv.listeners)
            out.append(f"listeners on port {ev.port or t.port}: {shown}")
            for v in lv.listeners:
                if v.queued is not None:
                    out.append(
                        f"accept queue of {v.address}:{v.port}: {v.queued_before} before, "
                        f"{v.queued} after the probe, backlog {v.backlog}"
                    )
                if v.pid is not None:
                    fds = f", {v.descriptors}" if v.descriptors else ""
                    out.append(f"held by pid {v.pid} ({v.process}, {v.state}{fds})")
        if isinstance(lv.firewall, Unavailable):
            out.append(f"firewall: unknown ({lv.firewall.reason})")
        elif not lv.firewall:
            out.append(
                f"firewall ({lv.firewall_source}): nothing drops or rejects tcp dport "
                f"{ev.port or t.port}"
            )
        for h in () if isinstance(lv.firewall, Unavailable) else lv.firewall:
            cond = f" when {' and '.join(h.conditions)}" if h.conditions else ""
            out.append(f"firewall: {h.where}: {h.rule} ({h.action}{cond})")
        if lv.panels:
            out.append(f"hosting panels installed: {', '.join(lv.panels)}")
        if isinstance(lv.drops, dict):
            moved = ", ".join(f"{k} +{v}" for k, v in lv.drops.items() if v)
            out.append(f"listen drops during the probe: {moved or 'none'}")
        if isinstance(lv.conntrack, tuple):
            out.append(f"conntrack: {lv.conntrack[0]} of {lv.conntrack[1]} entries")
        for h in lv.forward if isinstance(lv.forward, tuple) else ():
            out.append(f"forward: {h.where}: {h.rule} ({h.action})")
    for hits in (ev.client_nat, ev.local.nat if ev.local else None):
        for n in hits if isinstance(hits, tuple) else ():
            state = f" (destination {n.answers})" if n.answers else ""
            out.append(f"nat: {n.where}: {n.rule}{state}")
    fw = ev.client_firewall
    for h in fw if isinstance(fw, tuple) else ():
        out.append(f"this host's output rule: {h.where}: {h.rule} ({h.action})")
    u = ev.port_use
    if isinstance(u, Unavailable):
        out.append(f"port use: unknown ({u.reason})")
    elif u is not None:
        states = ", ".join(f"{k} {v}" for k, v in u.by_state.items()) or "none"
        out.append(
            f"port use {u.src} -> {u.dst}:{u.dport}: {u.used} of {u.usable} usable "
            f"({u.port_range}; {states}); tcp_tw_reuse={u.tw_reuse}"
        )
    return tuple(out)
