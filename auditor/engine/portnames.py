"""The `port_use.*` names rules read: host-wide distinct port use (auditor/facts/portuse.py).

Kept apart from names.py so the table's main module only merges these in.
"""

from __future__ import annotations

from auditor.engine.expr import Missing, Value
from auditor.facts.model import Facts, PortRange, PortUse, Unavailable


def holders_text(use: PortUse) -> str:
    """ "haproxy (pid 812) holds 27000 TCP sockets" for the biggest holders ("" when none)."""
    return "; ".join(
        f"{h.command} (pid {h.pid}) holds {h.count} {h.protocol.upper()}"
        f" socket{'s' if h.count != 1 else ''}"
        for h in use.holders
    )


def port_use_names(facts: Facts) -> dict[str, Value]:
    """The names, or nothing when the fact is unavailable (the table then says why)."""
    use, ports = facts.port_use, facts.ports
    if isinstance(use, Unavailable) or not isinstance(ports, PortRange):
        return {}
    usable = max(ports.usable, 1)
    udp: Value = (
        Missing(f"UDP ports: {use.udp.reason}") if isinstance(use.udp, Unavailable) else use.udp
    )
    bound: Value = (
        Missing(f"bound TCP sockets: {use.tcp_bound.reason}")
        if isinstance(use.tcp_bound, Unavailable)
        else use.tcp_bound
    )
    udp_count = use.udp if isinstance(use.udp, int) else 0
    return {
        "port_use.protocol": "UDP" if udp_count > use.tcp else "TCP",
        "port_use.used": max(use.tcp, udp_count),
        "port_use.source": use.source,
        "port_use.tcp": use.tcp,
        "port_use.udp": udp,
        "port_use.tcp_ratio": use.tcp / usable,
        "port_use.udp_ratio": udp if isinstance(udp, Missing) else udp_count / usable,
        "port_use.ratio": max(use.tcp, udp_count) / usable,
        "port_use.by_state": dict(use.tcp_by_state),
        "port_use.states": ", ".join(f"{k} {v}" for k, v in use.tcp_by_state.items()) or "none",
        "port_use.bound": bound,
        "port_use.holders": holders_text(use),
    }
