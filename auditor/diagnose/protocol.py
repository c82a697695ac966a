"""Speak the client's protocol on a connected socket and name the mismatch the way clients do.

The source document's "other errors" are protocol mismatches, reported by browsers as
`Error during WebSocket handshake: Unexpected response code: NNN` (an HTTP server answered the
upgrade) and `net::ERR_INVALID_HTTP_RESPONSE` (the reply is not HTTP at all). The same check
covers TLS against plain text in either direction: a TLS record starts with a content type byte
(0x14-0x17) and major version 3, which no text protocol begins with.

TLS runs over memory BIOs so the server's first raw bytes can be inspected before OpenSSL
parses them. The certificate is verified as curl verifies it (the system trust store, the name
or IP address the client uses); a failure is reported with its reason and the exchange goes on
over a second, unverified connection so the protocol is still checked (`--insecure` skips the
verification, as `curl -k` does).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import os
import re
import socket
import ssl
import time
from collections.abc import Callable

from auditor.diagnose.model import Protocol, ProtocolResult, Target
from auditor.facts.model import bracketed

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 section 1.3: Sec-WebSocket-Accept = base64(sha1(key + GUID))."""

_STATUS_RE = re.compile(rb"^HTTP/(\d(?:\.\d)?) (\d{3})(?: ([^\r\n]*))?\r?\n")
_MAX_HEAD = 16384
CDN_HEADERS: dict[str, str] = {
    "cf-ray": "Cloudflare",
    "cf-cache-status": "Cloudflare",
    "x-amz-cf-id": "Amazon CloudFront",
    "x-amz-cf-pop": "Amazon CloudFront",
    "x-served-by": "Fastly",
    "x-fastly-request-id": "Fastly",
    "x-akamai-transformed": "Akamai",
    "akamai-grn": "Akamai",
    "x-akamai-request-id": "Akamai",
    "x-azure-ref": "Azure Front Door",
    "x-varnish": "Varnish",
    "x-cache": "a caching proxy",
    "x-sucuri-id": "Sucuri",
    "x-cdn": "a CDN",
}
_SERVER_FRONTS = ("cloudflare", "akamai", "cloudfront", "varnish", "fastly", "sucuri",
                  "envoy", "haproxy", "squid", "nginx", "caddy", "traefik", "apache")  # fmt: skip


def looks_tls(data: bytes) -> bool:
    """A TLS record header: content type 20-23 (alert 21, handshake 22), major version 3."""
    return len(data) >= 2 and data[0] in (0x14, 0x15, 0x16, 0x17) and data[1] == 0x03


def printable(data: bytes, limit: int = 60) -> str:
    out = []
    for b in data[:limit]:
        if b == 0x0D:
            out.append("\\r")
        elif b == 0x0A:
            out.append("\\n")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out) + ("..." if len(data) > limit else "")


class Channel:
    """Bytes over a connected socket, plain or through an `ssl.SSLObject` on memory BIOs."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.tls: ssl.SSLObject | None = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()

    def restart(self, sock: socket.socket, deadline: float) -> None:
        """Go on over a new connection (after a failed verification); the old one is closed."""
        self.sock.close()
        self.sock = sock
        self.deadline = deadline
        self.tls = None
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no reply before the timeout")
        return left

    def raw_recv(self) -> bytes:
        self.sock.settimeout(self._remaining())
        return self.sock.recv(65536)

    def _flush(self) -> None:
        pending = self._out.read()
        if pending:
            self.sock.settimeout(self._remaining())
            self.sock.sendall(pending)

    def start_tls(self, server_hostname: str | None, verify_name: str | None = None) -> bytes:
        """Handshake; returns the server's first raw bytes. Raises ssl.SSLError / EOFError.

        With `verify_name`, the chain is checked against the system trust store and the
        certificate against that name or address (ssl.SSLCertVerificationError on failure)."""
        ctx = ssl.create_default_context()
        if verify_name is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        obj = ctx.wrap_bio(
            self._in, self._out, server_hostname=verify_name if verify_name else server_hostname
        )
        first = b""
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                data = self.raw_recv()
                if not data:
                    raise EOFError(first) from None
                if not first:
                    first = data
                    if not looks_tls(data):
                        raise NotTlsError(data) from None
                self._in.write(data)
        self._flush()
        self.tls = obj
        return first

    def send(self, data: bytes) -> None:
        if self.tls is None:
            self.sock.settimeout(self._remaining())
            self.sock.sendall(data)
            return
        self.tls.write(data)
        self._flush()

    def recv(self) -> bytes:
        if self.tls is None:
            return self.raw_recv()
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                data = self.raw_recv()
                if not data:
                    return b""
                self._in.write(data)
            except ssl.SSLZeroReturnError:
                return b""


class NotTlsError(Exception):
    """The server's answer to a ClientHello was not a TLS record."""

    def __init__(self, data: bytes) -> None:
        super().__init__("not TLS")
        self.data = data


def read_head(ch: Channel) -> tuple[bytes, str]:
    """The reply up to the end of the HTTP head; the second value says how reading ended.

    Bounded by `_MAX_HEAD` bytes and the channel's deadline: a head that never ends is
    reported as `too-long` or `timeout`, never taken for a complete reply."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) >= _MAX_HEAD:
            return buf, "too-long"
        try:
            data = ch.recv()
        except TimeoutError:
            return buf, "timeout"
        except BrokenPipeError:
            return buf, "eof"  # the reset came after the server's FIN (CLOSE_WAIT): it closed
        except (ConnectionResetError, ssl.SSLError) as exc:
            return buf, f"reset ({exc})"
        if not data:
            return buf, "eof"
        buf += data
        if not b"HTTP/".startswith(buf[:5]) or (b"\n" in buf and not _STATUS_RE.match(buf)):
            return buf, "not-http"
    return buf, "head"


def parse_head(buf: bytes) -> tuple[int, str, dict[str, str]] | None:
    m = _STATUS_RE.match(buf)
    if m is None:
        return None
    headers: dict[str, str] = {}
    head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = (headers[key] + ", " if key in headers else "") + value.strip()
    status_line = m.group(0).decode("latin-1").strip()
    return int(m.group(2)), status_line, headers


def fronts(headers: dict[str, str]) -> tuple[str, ...]:
    """Proxies and CDNs named by the reply's headers (Via, Server, CDN-specific ones)."""
    found: list[str] = []
    for key, who in CDN_HEADERS.items():
        if key in headers:
            label = f"{who} ({key}: {headers[key][:40]})"
            if label not in found:
                found.append(label)
    if "via" in headers:
        found.append(f"Via: {headers['via'][:60]}")
    if any(key.startswith("x-akamai") for key in headers) and not any("Akamai" in f for f in found):
        found.append("Akamai (x-akamai-*)")
    server = headers.get("server", "")
    if server and any(s in server.lower() for s in _SERVER_FRONTS):
        found.append(f"Server: {server[:60]}")
    return tuple(found)


def host_header(target: Target) -> str:
    host = bracketed(target.host)
    default = 443 if target.tls else 80
    return host if target.port == default else f"{host}:{target.port}"


def _sni(target: Target) -> str | None:
    return None if target.is_literal else target.host


def ws_request(target: Target, key: str) -> bytes:
    return (
        f"GET {target.path} HTTP/1.1\r\nHost: {host_header(target)}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "User-Agent: portaudit-diagnose\r\n\r\n"
    ).encode("latin-1")


def http_request(target: Target) -> bytes:
    return (
        f"GET {target.path} HTTP/1.1\r\nHost: {host_header(target)}\r\n"
        "User-Agent: portaudit-diagnose\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()  # noqa: S324


def _no_reply(how: str, what: str) -> str:
    if how == "timeout":
        return f"no reply to the {what} before the timeout"
    if how.startswith("reset"):
        return f"the server reset the connection without replying to the {what}"
    return f"the server closed the connection without replying to the {what}"


def _after(how: str) -> str:
    """What the server did instead of answering: reset, closed or silent."""
    if how.startswith("reset"):
        return "reset"
    return "silent" if how == "timeout" else "closed"


def _unfinished(buf: bytes, how: str, what: str) -> ProtocolResult | None:
    """A reply head that began but never ended (cap reached, timeout or close): not a reply."""
    if b"\r\n\r\n" in buf or how not in ("too-long", "timeout", "eof"):
        return None
    ending = {
        "too-long": f"still unfinished after {len(buf)} bytes",
        "timeout": f"unfinished when the timeout ran out ({len(buf)} bytes)",
        "eof": f"cut off by the server closing the connection ({len(buf)} bytes)",
    }[how]
    return ProtocolResult(
        ok=False,
        summary=f"the reply to the {what} never completed its head: {ending}",
        first_bytes=printable(buf),
        after="unfinished",
    )


def _request_head(
    ch: Channel, request: bytes, what: str, silent: str, not_http: str
) -> ProtocolResult | tuple[bytes, int, str, dict[str, str]]:
    """Send `request` and read the reply head: (bytes, status, line, headers), or the result
    that ends the check when the reply is missing (`silent` prefixes the summary), unfinished
    or not HTTP (`not_http`)."""
    ch.send(request)
    buf, how = read_head(ch)
    if not buf:
        return ProtocolResult(ok=False, summary=silent + _no_reply(how, what), after=_after(how))
    parsed = parse_head(buf)
    unfinished = _unfinished(buf, how, what) if parsed else None
    if unfinished is not None:
        return unfinished
    if parsed is None:
        return ProtocolResult(
            ok=False, summary=not_http, first_bytes=printable(buf), tls_seen=looks_tls(buf)
        )
    return (buf, *parsed)


def _check_ws(ch: Channel, target: Target) -> ProtocolResult:
    key = base64.b64encode(os.urandom(16)).decode()
    got = _request_head(
        ch,
        ws_request(target, key),
        "WebSocket upgrade",
        "",
        "ERR_INVALID_HTTP_RESPONSE: the reply to the WebSocket upgrade is not HTTP",
    )
    if isinstance(got, ProtocolResult):
        return got
    _buf, status, line, headers = got
    front = fronts(headers)
    if status != 101:
        return ProtocolResult(
            ok=False,
            summary=f"Unexpected response code: {status} ({line})",
            status=status,
            headers=headers,
            front=front,
        )
    if headers.get("sec-websocket-accept", "") != ws_accept(key):
        return ProtocolResult(
            ok=False,
            summary="Incorrect 'Sec-WebSocket-Accept' header value",
            status=status,
            headers=headers,
            front=front,
        )
    # A masked close frame (1000, normal closure) so the server logs a clean goodbye.
    mask = os.urandom(4)
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"\x03\xe8"))
    with contextlib.suppress(OSError):
        ch.send(b"\x88\x82" + mask + payload)
    return ProtocolResult(
        ok=True,
        summary=f"{line}: WebSocket handshake accepted",
        status=status,
        headers=headers,
        front=front,
    )


def _check_http(ch: Channel, target: Target) -> ProtocolResult:
    got = _request_head(
        ch,
        http_request(target),
        "HTTP request",
        "ERR_EMPTY_RESPONSE: ",
        "the reply to an HTTP request is not HTTP",
    )
    if isinstance(got, ProtocolResult):
        return got
    buf, status, line, headers = got
    front = fronts(headers)
    says_ws = status == 400 and b"websocket" in buf.lower()
    if status == 426 or says_ws or "websocket" in headers.get("upgrade", "").lower():
        return ProtocolResult(
            ok=False,
            summary=f"{line}: the server wants a WebSocket client (use ws:// or wss://)",
            status=status,
            headers=headers,
            front=front,
        )
    return ProtocolResult(ok=True, summary=line, status=status, headers=headers, front=front)


def _check_tcp(ch: Channel) -> ProtocolResult:
    """Nothing to speak; a greeting the server sends unasked (SSH, SMTP, MySQL) is reported."""
    ch.deadline = min(ch.deadline, time.monotonic() + 0.3)
    try:
        data = ch.recv()
    except TimeoutError:
        return ProtocolResult(ok=True, summary="connected; the server sends nothing first")
    except OSError as exc:
        return ProtocolResult(
            ok=False,
            summary=f"the server reset the connection right after accepting it ({exc})",
            after="reset",
        )
    if not data:
        return ProtocolResult(
            ok=False,
            summary="the server closed the connection right after accepting it, sending nothing",
            after="closed",
        )
    if data:
        return ProtocolResult(
            ok=True,
            summary=f"connected; the server greets with {printable(data, 40)!r}",
            first_bytes=printable(data),
            tls_seen=looks_tls(data),
        )
    return ProtocolResult(ok=True, summary="connected")


_VERIFY_REASONS = {
    9: "certificate not yet valid",
    10: "certificate expired",
    18: "self-signed certificate",
    19: "self-signed certificate in the chain",
    20: "unknown CA: the issuer is not in the system trust store",
    21: "unknown CA: the chain cannot be verified",
    62: "wrong name: the certificate is not for this host name",
    64: "wrong name: the certificate is not for this IP address",
}


def verify_reason(exc: ssl.SSLCertVerificationError, target: Target) -> str:
    """The verification failure as curl's users know it, with OpenSSL's words after it."""
    code = exc.verify_code
    reason = _VERIFY_REASONS.get(code, "certificate rejected")
    if code in (62, 64):
        reason = reason.replace("this host name", target.host).replace(
            "this IP address", target.host
        )
    return f"{reason} ({exc.verify_message or exc.reason})"


def tls_reachable(sock: socket.socket, target: Target, timeout: float) -> bool:
    """True when the server completes a TLS handshake on `sock` (a second, separate connection)."""
    ch = Channel(sock, time.monotonic() + timeout)
    try:
        ch.start_tls(_sni(target))
    except (ssl.SSLError, NotTlsError, EOFError, OSError):
        return False
    return True


def _handshake(ch: Channel, target: Target, verify_name: str | None) -> ProtocolResult | None:
    """TLS handshake on `ch`; None when it completed, else what went wrong.

    ssl.SSLCertVerificationError is left to the caller: the handshake itself worked."""
    try:
        ch.start_tls(_sni(target), verify_name=verify_name)
    except NotTlsError as exc:
        return ProtocolResult(
            ok=False,
            summary="TLS expected but the server answered in plain text"
            + (" (HTTP)" if exc.data.startswith(b"HTTP/") else ""),
            first_bytes=printable(exc.data),
            tls_seen=False,
        )
    except EOFError:
        return ProtocolResult(
            ok=False,
            summary="TLS expected but the server closed the connection on the TLS "
            "ClientHello (a plain-text server?)",
            tls_seen=False,
        )
    except TimeoutError:
        return ProtocolResult(
            ok=False,
            summary="TLS expected but the server did not answer the ClientHello "
            "(a plain-text server waiting for its own protocol?)",
            tls_seen=False,
        )
    except ssl.SSLCertVerificationError:
        raise
    except ssl.SSLError as exc:
        return ProtocolResult(
            ok=False, summary=f"TLS handshake failed: {exc.reason or exc}", tls_seen=True
        )
    except OSError as exc:
        return ProtocolResult(ok=False, summary=f"TLS handshake failed: {exc}")
    return None


def check_protocol(
    sock: socket.socket,
    target: Target,
    timeout: float,
    reconnect: Callable[[], socket.socket | None] | None = None,
    verify: bool = True,
) -> ProtocolResult:
    """Speak `target.protocol` (over TLS when `target.tls`) and judge the reply."""
    ch = Channel(sock, time.monotonic() + timeout)
    try:
        return _exchange(ch, target, timeout, reconnect, verify)
    finally:
        if ch.sock is not sock:
            ch.sock.close()


def _exchange(
    ch: Channel,
    target: Target,
    timeout: float,
    reconnect: Callable[[], socket.socket | None] | None,
    verify: bool,
) -> ProtocolResult:
    tls_note = ""
    untrusted = ""
    if target.tls:
        try:
            failed = _handshake(ch, target, target.host.split("%", 1)[0] if verify else None)
        except ssl.SSLCertVerificationError as exc:
            untrusted = verify_reason(exc, target)
            again = reconnect() if reconnect is not None else None
            if again is None:
                return ProtocolResult(
                    ok=True, summary=f"TLS certificate: {untrusted}", tls_seen=True,
                    tls_untrusted=untrusted,
                )  # fmt: skip
            ch.restart(again, time.monotonic() + timeout)
            failed = _handshake(ch, target, None)
        if failed is not None:
            return dataclasses.replace(failed, tls_untrusted=untrusted)
        assert ch.tls is not None
        tls_note = f"{ch.tls.version()} {(ch.tls.cipher() or ('',))[0]}"
        if target.protocol is Protocol.TLS:
            if untrusted:
                return ProtocolResult(
                    ok=True, summary=f"TLS certificate: {untrusted} ({tls_note})",
                    tls_seen=True, tls_untrusted=untrusted,
                )  # fmt: skip
            return ProtocolResult(ok=True, summary=f"TLS handshake completed ({tls_note})")
    try:
        if target.protocol is Protocol.WS:
            result = _check_ws(ch, target)
        elif target.protocol is Protocol.HTTP:
            result = _check_http(ch, target)
        else:
            result = _check_tcp(ch)
    except BrokenPipeError:
        # EPIPE, not ECONNRESET: the server's FIN came before the reset its kernel sent.
        result = ProtocolResult(
            ok=False,
            summary="the server closed the connection right after accepting it, sending nothing",
            after="closed",
        )
    except ConnectionResetError as exc:
        result = ProtocolResult(
            ok=False, summary=f"the server reset the connection mid-exchange ({exc})", after="reset"
        )
    except (OSError, ssl.SSLError) as exc:
        result = ProtocolResult(ok=False, summary=f"the connection failed mid-exchange: {exc}")
    if tls_note:
        result = _with_summary(result, f"{result.summary} [over {tls_note}]")
    if untrusted:
        result = _with_summary(result, f"TLS certificate: {untrusted}; {result.summary}")
        result = dataclasses.replace(result, tls_untrusted=untrusted)
    if (
        not result.ok
        and not target.tls
        and reconnect is not None
        and (result.tls_seen or result.status is None)
    ):
        again = reconnect()
        if again is not None:
            try:
                speaks_tls = tls_reachable(again, target, timeout)
            finally:
                again.close()
            if speaks_tls:
                scheme = "wss://" if target.protocol is Protocol.WS else "https://"
                # The reset or silence was the TLS server's answer to plain text: a mismatch.
                return dataclasses.replace(
                    result,
                    summary=f"{result.summary}; the server speaks TLS: plain text expected but "
                    f"the port answers a TLS handshake (use {scheme})",
                    tls_seen=True,
                    after="",
                )
    return result


def _with_summary(r: ProtocolResult, summary: str, tls_seen: bool | None = None) -> ProtocolResult:
    return dataclasses.replace(
        r, summary=summary, tls_seen=r.tls_seen if tls_seen is None else tls_seen
    )
