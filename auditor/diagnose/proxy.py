"""Proxy settings the client would honour (refused-6: "network proxy software is in the way").

curl, wget, Python requests, Go's net/http and most WebSocket libraries read `http_proxy`,
`https_proxy`, `all_proxy` (lower case first, then upper case) and skip hosts listed in
`no_proxy`. A client that goes through a proxy reaches the proxy, not the server: the proxy's
refusal or timeout is what the client reports. Credentials in a proxy URL are never shown.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from auditor.diagnose.model import Protocol, ProxyUse, Target
from auditor.errors import printable, quote
from auditor.facts.model import bracketed, endpoint


def _variables(target: Target) -> tuple[str, ...]:
    if target.protocol in (Protocol.HTTP, Protocol.WS):
        scheme = "https_proxy" if target.tls else "http_proxy"
        return (scheme, scheme.upper(), "all_proxy", "ALL_PROXY")
    return ("all_proxy", "ALL_PROXY")


def _no_proxy_match(entry: str, host: str, port: int) -> bool:
    entry = entry.strip().lower()
    if not entry:
        return False
    if entry == "*":
        return True
    if entry.startswith("[") and "]" in entry:
        entry, _, eport = entry[1:].partition("]")
        if eport.startswith(":") and _port(eport[1:]) not in (None, port):
            return False
    elif entry.count(":") == 1:
        entry, _, eport = entry.partition(":")
        if _port(eport) not in (None, port):
            return False
    host = host.lower().rstrip(".")
    try:
        net = ipaddress.ip_network(entry, strict=False)
        return ipaddress.ip_address(host.split("%", 1)[0]) in net
    except ValueError:
        pass
    entry = entry.lstrip("*").lstrip(".")
    return host == entry or host.endswith("." + entry)


def excluded(env: Mapping[str, str], host: str, port: int) -> bool:
    value = env.get("no_proxy", env.get("NO_PROXY", ""))
    return any(_no_proxy_match(e, host, port) for e in value.split(","))


def _port(text: str) -> int | None:
    """A port written in ASCII digits, 1-65535; None for anything else (`int()` would read
    `²` or `١٢` too, or a number no port has)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or not 0 < int(text) < 65536:
        return None
    return int(text)


def _parse(url: str) -> tuple[str, str, int, str] | None:
    """(display URL without credentials, host, port, why the client cannot use it or "") of
    a proxy setting: a port that is no port (clients such as curl refuse the setting)."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        scheme, rest = "http", url.strip()
    rest = rest.split("/", 1)[0]
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = rest.partition(":")
    if not host:
        return None
    if not port_text:
        return f"{scheme.lower()}://{endpoint(host, 1080)}", host, 1080, ""
    port = _port(port_text)
    if port is None:
        shown = f"{scheme.lower()}://{bracketed(host)}:{printable(port_text)}"
        return shown, host, 0, f"unusable: its port {quote(port_text)} is not a port number"
    return f"{scheme.lower()}://{endpoint(host, port)}", host, port, ""


def proxies_for(target: Target, env: Mapping[str, str]) -> tuple[ProxyUse, ...]:
    """The proxy the client would use for the target (first variable set wins), if any."""
    if excluded(env, target.host, target.port):
        return ()
    for var in _variables(target):
        value = env.get(var, "")
        if not value.strip():
            continue
        parsed = _parse(value)
        if parsed is None:
            continue
        shown, host, port, problem = parsed
        return (ProxyUse(variable=var, url=shown, host=host, port=port, reachable=problem),)
    return ()
