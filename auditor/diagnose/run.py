"""`portaudit diagnose`: try the connection as the client would, then explain the outcome.

Order of work: resolve the name (every address), read the route for each, connect to each with
the timeout, speak the protocol on the first connection that succeeds; then gather what the
host can add (its listeners and firewall when the target is this host, the destination's port
use after EADDRNOTAVAIL, the proxy the client's environment selects) and let `causes.judge`
rate the source document's causes. Only the probe touches the network, and only the target.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from auditor.config import load_config
from auditor.diagnose.causes import Evidence, judge
from auditor.diagnose.local import local_view
from auditor.diagnose.model import (
    AddressAttempt,
    ConnectResult,
    Diagnosis,
    LocalView,
    PortUse,
    Protocol,
    ProxyUse,
    Resolution,
    Target,
    Verdict,
)
from auditor.diagnose.probe import connect
from auditor.diagnose.protocol import check_protocol
from auditor.diagnose.proxy import proxies_for
from auditor.diagnose.resolve import resolve
from auditor.diagnose.route import neighbour_state, route_to
from auditor.diagnose.target import parse_target
from auditor.engine.evaluate import check_config, effective_params
from auditor.engine.load import load_rules
from auditor.errors import UsageError
from auditor.facts.collect import collect_facts
from auditor.facts.model import Facts, PortRange, SocketTable, Unavailable
from auditor.hostfs import HostRoot

MAX_ADDRESSES = 8
"""A name with more addresses than this is cut short: each may cost a full timeout."""

_VERDICT_OF = {
    "refused": Verdict.REFUSED,
    "timeout": Verdict.TIMEOUT,
    "addr-not-available": Verdict.ADDR_NOT_AVAILABLE,
    "unreachable": Verdict.UNREACHABLE,
    "descriptor-limit": Verdict.DESCRIPTOR_LIMIT,
}


@dataclass(frozen=True, slots=True)
class Options:
    target: str
    protocol: Protocol | None = None
    timeout: float = 3.0
    expect_ip: str | None = None
    local: bool = False


def _check_options(opts: Options) -> None:
    if not 0 < opts.timeout <= 300:
        raise UsageError(f"--timeout {opts.timeout}: expected seconds in (0, 300]")
    if opts.expect_ip is not None:
        try:
            ipaddress.ip_address(opts.expect_ip)
        except ValueError:
            raise UsageError(f"--expect-ip {opts.expect_ip!r}: not an IP address") from None


def _attempt(address: str, target: Target, timeout: float, check: bool) -> AddressAttempt:
    route = route_to(address)
    result, sock = connect(address, target.port, timeout)
    if sock is None:
        if result.outcome in ("timeout", "unreachable") and not isinstance(route, Unavailable):
            hop = route.gateway or address
            result = ConnectResult(
                outcome=result.outcome,
                errno_name=result.errno_name,
                message=result.message,
                neighbour=neighbour_state(hop) if route.kind == "unicast" else None,
            )
        return AddressAttempt(address=address, route=route, connect=result)
    try:
        proto = None
        if check:

            def reconnect() -> socket.socket | None:
                return connect(address, target.port, timeout)[1]

            proto = check_protocol(sock, target, timeout, reconnect)
    finally:
        sock.close()
    return AddressAttempt(address=address, route=route, connect=result, protocol=proto)


def _verdict(primary: AddressAttempt | None, resolution: Resolution) -> Verdict:
    if primary is None:
        return Verdict.UNRESOLVED
    outcome = primary.connect.outcome
    if outcome == "connected":
        if primary.protocol is not None and not primary.protocol.ok:
            return Verdict.PROTOCOL_MISMATCH
        return Verdict.OK
    return _VERDICT_OF.get(outcome, Verdict.UNREACHABLE)


def eph001_crit_ratio(host: HostRoot) -> float:
    """EPH-001's crit ratio in effect, so diagnose calls the ports exhausted where the audit
    would: the rule's param, or the operator's override in the config file (checked as the
    audit checks it, so a bad file is the same one-line error)."""
    rules = load_rules()
    config = load_config(host, None)
    check_config(rules, config)
    rule = next(r for r in rules if r.id == "EPH-001")
    return float(effective_params(rule, config)["crit_ratio"])


def _port_use(
    facts: Facts, src: str | None, dst: str, dport: int, crit_ratio: float
) -> PortUse | Unavailable:
    if isinstance(facts.ports, Unavailable):
        return facts.ports
    if isinstance(facts.sockets, Unavailable):
        return facts.sockets
    ports: PortRange = facts.ports
    table: SocketTable = facts.sockets
    mine = [d for d in table.destinations if d.dst == dst and d.dport == dport]
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
        crit_ratio=crit_ratio,
    )


def _probe_proxy(p: ProxyUse, timeout: float) -> ProxyUse:
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
    resolution = resolve(target, host, opts.expect_ip)
    attempts: list[AddressAttempt] = []
    checked = False
    for address in resolution.addresses[:MAX_ADDRESSES]:
        attempt = _attempt(address, target, opts.timeout, check=not checked)
        checked = checked or attempt.protocol is not None
        attempts.append(attempt)
    primary = next((a for a in attempts if a.connect.outcome == "connected"), None)
    primary = primary or (attempts[0] if attempts else None)
    verdict = _verdict(primary, resolution)

    facts: Facts | None = None
    local: LocalView | None = None
    local_addr = next(
        (
            a.address
            for a in attempts
            if not isinstance(a.route, Unavailable) and a.route.kind == "local"
        ),
        None,
    )
    if (local_addr or opts.local) and attempts:
        facts = collect_facts(host)
        addr = local_addr or attempts[0].address
        reason = f"{addr} is an address of this host" if local_addr else "--local"
        bindv6only = facts.sysctl.get("net.ipv6.bindv6only", "0") == "1"
        local = local_view(host, reason, addr, target.port, facts.sockets, bindv6only)

    port_use: PortUse | Unavailable | None = None
    if verdict is Verdict.ADDR_NOT_AVAILABLE and primary is not None:
        facts = facts or collect_facts(host)
        src = None if isinstance(primary.route, Unavailable) else primary.route.source
        port_use = _port_use(facts, src, primary.address, target.port, eph001_crit_ratio(host))

    proxies = tuple(_probe_proxy(p, opts.timeout) for p in proxies_for(target, env))
    ev = Evidence(
        target=target,
        verdict=verdict,
        resolution=resolution,
        attempts=tuple(attempts),
        primary=primary,
        local=local,
        proxies=proxies,
        port_use=port_use,
    )
    causes, steps = judge(ev)
    return Diagnosis(
        target=target,
        verdict=verdict,
        summary=summary_line(ev),
        resolution=resolution,
        attempts=tuple(attempts),
        evidence=evidence_lines(ev),
        causes=causes,
        next_steps=steps,
        local=local,
        proxies=proxies,
        port_use=port_use,
    )


def summary_line(ev: Evidence) -> str:
    t = ev.target
    p = ev.primary
    if ev.verdict is Verdict.UNRESOLVED:
        return f"{t.host} does not resolve: {ev.resolution.error}"
    assert p is not None
    where = f"{p.address}:{t.port}"
    if ev.verdict is Verdict.OK:
        proto = f" ({p.protocol.summary})" if p.protocol else ""
        return f"connected to {where}{proto}"
    if ev.verdict is Verdict.PROTOCOL_MISMATCH and p.protocol is not None:
        return f"connected to {where}, but {p.protocol.summary}"
    errno_text = f" ({p.connect.errno_name}: {p.connect.message})" if p.connect.errno_name else ""
    return f"connect to {where}: {ev.verdict}{errno_text}"


def evidence_lines(ev: Evidence) -> tuple[str, ...]:
    """What was observed, one fact per line, for the table and the JSON `evidence` list."""
    out: list[str] = []
    res = ev.resolution
    t = ev.target
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
        line = f"connect {a.address}:{t.port}: {c.outcome}"
        if c.errno_name:
            line += f" ({c.errno_name}: {c.message})"
        elif c.message:
            line += f" ({c.message})"
        if c.local:
            line += f" from {c.local}"
        if c.neighbour:
            line += f"; next hop ARP/ND state {c.neighbour}"
        out.append(line)
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
            out.append(f"listeners on port {t.port}: none")
        else:
            shown = ", ".join(
                f"{'[' + v.address + ']' if v.family == 6 else v.address}:{v.port}"
                + ("" if v.reaches_target else " (does not accept the target address)")
                for v in lv.listeners
            )
            out.append(f"listeners on port {t.port}: {shown}")
        if isinstance(lv.firewall, Unavailable):
            out.append(f"firewall: unknown ({lv.firewall.reason})")
        elif not lv.firewall:
            out.append(
                f"firewall ({lv.firewall_source}): nothing drops or rejects tcp dport {t.port}"
            )
        for h in () if isinstance(lv.firewall, Unavailable) else lv.firewall:
            cond = f" when {' and '.join(h.conditions)}" if h.conditions else ""
            out.append(f"firewall: {h.where}: {h.rule} ({h.action}{cond})")
        if lv.panels:
            out.append(f"hosting panels installed: {', '.join(lv.panels)}")
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
