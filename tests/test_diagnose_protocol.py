"""Protocol helpers: the RFC 6455 accept key, TLS record sniffing, HTTP heads, CDN headers."""

from __future__ import annotations

from auditor.diagnose.protocol import (
    fronts,
    host_header,
    looks_tls,
    parse_head,
    printable,
    ws_accept,
    ws_request,
)
from auditor.diagnose.target import parse_target


def test_ws_accept_matches_rfc6455_example() -> None:
    # RFC 6455 section 1.3.
    assert ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_ws_request_is_a_real_upgrade() -> None:
    req = ws_request(parse_target("ws://[::1]:2346/chat?x=1"), "k").decode()
    assert req.startswith("GET /chat?x=1 HTTP/1.1\r\nHost: [::1]:2346\r\n")
    for header in ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: k",
                   "Sec-WebSocket-Version: 13"):  # fmt: skip
        assert header in req
    assert req.endswith("\r\n\r\n")


def test_host_header_omits_default_ports() -> None:
    assert host_header(parse_target("https://h/")) == "h"
    assert host_header(parse_target("https://h:8443/")) == "h:8443"
    assert host_header(parse_target("ws://h:80/")) == "h"


def test_tls_records_are_recognised() -> None:
    assert looks_tls(b"\x16\x03\x01\x02\x00")  # handshake (ClientHello/ServerHello)
    assert looks_tls(b"\x15\x03\x03\x00\x02\x02\x46")  # alert
    assert not looks_tls(b"HTTP/1.1 400 Bad Request\r\n")
    assert not looks_tls(b"\x16")
    assert not looks_tls(b"SSH-2.0-OpenSSH_9.2\r\n")


def test_parse_head() -> None:
    got = parse_head(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
    )
    assert got is not None
    status, line, headers = got
    assert (status, line) == (101, "HTTP/1.1 101 Switching Protocols")
    assert headers == {"upgrade": "websocket", "x-a": "1, 2"}
    assert parse_head(b"GET / HTTP/1.1\r\n\r\n") is None
    assert parse_head(b"\x16\x03\x01") is None


def test_fronts_names_cdns_and_proxies() -> None:
    got = fronts({"cf-ray": "8a1b-AMS", "server": "cloudflare", "via": "1.1 varnish"})
    assert any(f.startswith("Cloudflare (cf-ray") for f in got)
    assert "Via: 1.1 varnish" in got and "Server: cloudflare" in got
    assert fronts({"x-amz-cf-id": "abc"}) == ("Amazon CloudFront (x-amz-cf-id: abc)",)
    assert fronts({"content-type": "text/html", "server": "testsrv"}) == ()


def test_printable_escapes_binary() -> None:
    assert printable(b"\x16\x03\x01ab\r\n") == "\\x16\\x03\\x01ab\\r\\n"
    assert printable(b"x" * 70, 60).endswith("...")
