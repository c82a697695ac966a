"""Parse what the operator typed: `HOST:PORT`, `[v6]:PORT`, or a ws/wss/http/https URL.

The scheme decides what the probe speaks after TCP connects, as a browser or client library
would; `--protocol` overrides it. Anything unparseable is a UsageError naming the value (exit 2).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote

from auditor.diagnose.model import Protocol, Target
from auditor.errors import UsageError

_SCHEMES: dict[str, tuple[Protocol, bool, int]] = {
    "ws": (Protocol.WS, False, 80),
    "wss": (Protocol.WS, True, 443),
    "http": (Protocol.HTTP, False, 80),
    "https": (Protocol.HTTP, True, 443),
    "tcp": (Protocol.TCP, False, 0),
    "tls": (Protocol.TLS, True, 0),
}
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})$")
MAX_LABEL = 63
"""The longest label of a DNS name (RFC 1035 2.3.4); the whole name is at most 253."""
_FORMS = "expected HOST:PORT, [IPv6]:PORT or a ws://, wss://, http://, https:// URL"


_CREDENTIALS_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#@]*)@")
_PATH_SAFE = "/?&=%:@!$'()*+,;~-._[]"
"""Characters a request target keeps as they are; anything else (non-ASCII) is
percent-encoded as UTF-8, as browsers and curl do."""


def redact(text: str) -> str:
    """The target with any `user:pass@` replaced, so credentials are never echoed."""
    return _CREDENTIALS_RE.sub(r"\1***@", text)


def _bad(text: str, why: str) -> UsageError:
    return UsageError(f"bad target {redact(text)!r}: {why}")


def _control(text: str) -> str | None:
    """The first control character (CR, LF, NUL, DEL...) in `text`, shown escaped."""
    for ch in text:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return repr(ch)
    return None


def _port(text: str, value: str) -> int:
    """A port in ASCII digits: str.isdigit() and int() also take `١٢` (12) and `²`."""
    if not (value.isascii() and value.isdigit()):
        raise _bad(text, f"port {value!r} is not a number in ASCII digits")
    if len(value.lstrip("0")) > 5:
        raise _bad(text, f"port {value[:12]}... is outside 1-65535")
    port = int(value)
    if not 1 <= port <= 65535:
        raise _bad(text, f"port {port} is outside 1-65535")
    return port


def _host(text: str, host: str, bracketed: bool) -> str:
    if bracketed:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise _bad(text, f"{host!r} in brackets is not an IPv6 address") from None
    if not host:
        raise _bad(text, "no host")
    if ":" in host:
        raise _bad(text, "an IPv6 address needs brackets, as [::1]:8080")
    if not _HOSTNAME_RE.match(host) or ".." in host:
        raise _bad(text, f"{host!r} is not a host name or address")
    label = max(host.split("."), key=len)
    if len(label) > MAX_LABEL:
        # No resolver can look the name up: DNS carries a label's length in 6 bits.
        raise _bad(text, f"the label {label[:16]}... is {len(label)} characters, over {MAX_LABEL}")
    return host


def split_host_port(text: str, netloc: str, default_port: int) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, or a bare host when the scheme gives a default port."""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise _bad(text, "'[' without a closing ']'")
        host = _host(text, netloc[1:end], bracketed=True)
        rest = netloc[end + 1 :]
        if not rest:
            if default_port:
                return host, default_port
            raise _bad(text, f"missing port ({_FORMS})")
        if not rest.startswith(":"):
            raise _bad(text, f"unexpected {rest!r} after ']'")
        return host, _port(text, rest[1:])
    if "]" in netloc:
        raise _bad(text, "']' without an opening '['")
    if netloc.count(":") > 1:
        raise _bad(text, "an IPv6 address needs brackets, as [::1]:8080")
    host, sep, port = netloc.partition(":")
    if not sep:
        if default_port:
            return _host(text, host, bracketed=False), default_port
        raise _bad(text, f"missing port ({_FORMS})")
    return _host(text, host, bracketed=False), _port(text, port)


def parse_target(text: str, protocol: Protocol | None = None) -> Target:
    """A Target from the command line; `protocol` (--protocol) overrides the URL scheme's."""
    raw = text.strip()
    if not raw:
        raise UsageError(f"bad target {text!r}: empty ({_FORMS})")
    bad_char = _control(raw)
    if bad_char is not None:
        # Sent as-is, a CR/LF in the host or path would become request headers of its own.
        raise _bad(text, f"contains the control character {bad_char}")
    scheme = ""
    path = "/"
    netloc = raw
    if "://" in raw:
        scheme, _, rest = raw.partition("://")
        scheme = scheme.lower()
        if scheme not in _SCHEMES:
            raise _bad(text, f"unknown scheme {scheme + '://'!r} ({_FORMS})")
        netloc, slash, tail = rest.partition("/")
        path = slash + tail if slash else "/"
        path = path.split("#", 1)[0] or "/"
        if "@" in netloc:
            netloc = netloc.rsplit("@", 1)[1]
        if "?" in netloc:
            netloc, _, query = netloc.partition("?")
            path = "/?" + query
        if any(c.isspace() for c in path):
            raise _bad(text, "the path contains whitespace (percent-encode it as %20)")
        path = quote(path, safe=_PATH_SAFE)
    if any(c.isspace() for c in netloc):
        raise _bad(text, "contains whitespace")
    proto, tls, default_port = _SCHEMES.get(scheme, (Protocol.TCP, False, 0))
    host, port = split_host_port(text, netloc, default_port)
    if protocol is not None:
        proto = protocol
        tls = tls or protocol is Protocol.TLS
        if protocol is Protocol.TCP:
            tls = False
    return Target(
        text=redact(text), host=host, port=port, protocol=proto, tls=tls, path=path, scheme=scheme
    )
