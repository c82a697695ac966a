"""The kernel's route to each address (rtnetlink via pyroute2), and what it says about the path.

`ip route get` answers with the interface, source and gateway the client's SYN will use, or
with the error connect() will get (unreachable, blackhole and prohibit routes, no route at
all). Two document cases are read straight off it: an internal (private or CGNAT) address
reached through a default gateway instead of a connected network (timeout-6), and a tunnel
device that proxy or VPN software put in the path (refused-6).
"""

from __future__ import annotations

import errno
import ipaddress
from typing import Any

from auditor.diagnose.model import RouteInfo
from auditor.facts.model import Unavailable

_RTN_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 6: "blackhole", 7: "unreachable",
              8: "prohibit", 9: "throw"}  # fmt: skip
_ERRNO_KIND = {
    errno.EHOSTUNREACH: "unreachable",
    errno.EINVAL: "blackhole",
    errno.EACCES: "prohibit",
    errno.ENETUNREACH: "none",
}
TUNNEL_KINDS = frozenset({"tun", "tap", "wireguard", "ppp", "ipip", "gre", "sit", "vti"})
"""Link kinds proxy and VPN software creates; `tun` covers tap too (rtnetlink reports `tun`)."""

_NUD = {0x01: "INCOMPLETE", 0x02: "REACHABLE", 0x04: "STALE", 0x08: "DELAY", 0x10: "PROBE",
        0x20: "FAILED", 0x40: "NOARP", 0x80: "PERMANENT"}  # fmt: skip
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def is_internal(addr: str) -> bool:
    """A private (RFC 1918, ULA) or CGNAT address: reachable only inside some local network."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if ip.is_loopback or ip.is_link_local:
        return False
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return True
    return ip.is_private


def _family(addr: str) -> int:
    return 6 if ":" in addr else 4


def _via_default(ipr: Any, addr: str, table: int | None) -> bool:
    """True when the longest prefix covering `addr` in the route's table is /0."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    fam = 10 if ip.version == 6 else 2
    best = -1
    for r in ipr.get_routes(family=fam, table=table or 254):
        dst = r.get_attr("RTA_DST")
        plen = int(r["dst_len"])
        any_addr = "::" if ip.version == 6 else "0.0.0.0"
        net = ipaddress.ip_network(f"{dst or any_addr}/{plen}")
        if ip in net and plen > best:
            best = plen
    return best == 0


def route_to(addr: str) -> RouteInfo | Unavailable:
    """The route the kernel would use for `addr`, or the kind of route that refuses it."""
    try:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError as exc:  # pragma: no cover - pyroute2 is a dependency
        return Unavailable(f"pyroute2 not importable: {exc}")
    bare = addr.split("%", 1)[0]
    try:
        with IPRoute() as ipr:
            try:
                msg = ipr.route("get", dst=bare)[0]
            except NetlinkError as exc:
                kind = _ERRNO_KIND.get(exc.code, "none")
                return RouteInfo(kind=kind, error=f"{errno.errorcode.get(exc.code, exc.code)}: "
                                 f"{exc.args[1] if len(exc.args) > 1 else exc}")  # fmt: skip
            kind = _RTN_TYPES.get(int(msg["type"]), str(msg["type"]))
            oif = msg.get_attr("RTA_OIF")
            ifname = None
            ifkind = None
            if oif is not None:
                links = ipr.get_links(oif)
                if links:
                    ifname = links[0].get_attr("IFLA_IFNAME")
                    info = links[0].get_attr("IFLA_LINKINFO")
                    ifkind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            gateway = msg.get_attr("RTA_GATEWAY")
            via_default = False
            if gateway is not None:
                via_default = _via_default(ipr, bare, msg.get_attr("RTA_TABLE"))
            return RouteInfo(
                kind=kind,
                interface=ifname,
                interface_kind=ifkind,
                source=msg.get_attr("RTA_PREFSRC"),
                gateway=gateway,
                via_default=via_default,
            )
    except OSError as exc:
        return Unavailable(f"rtnetlink: {exc.strerror or exc}")


def neighbour_state(addr: str) -> str | None:
    """The ARP/ND state of `addr` (`FAILED` after nobody answered), None when there is none."""
    try:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            for n in ipr.get_neighbours(dst=addr.split("%", 1)[0]):
                state = int(n["state"])
                return next((name for bit, name in _NUD.items() if state & bit), str(state))
    except (ImportError, OSError):
        return None
    return None


def is_tunnel(route: RouteInfo) -> bool:
    if route.interface_kind in TUNNEL_KINDS:
        return True
    name = route.interface or ""
    return name.startswith(("tun", "tap", "wg", "ppp", "utun"))


def family_of(addr: str) -> int:
    return _family(addr)
