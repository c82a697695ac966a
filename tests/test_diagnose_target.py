"""Target parsing: the forms docs/diagnose.md lists, and one clear UsageError (exit 2) for the rest."""

from __future__ import annotations

import pytest

from auditor.diagnose.model import Protocol
from auditor.diagnose.target import parse_target
from auditor.errors import UsageError


@pytest.mark.parametrize(
    ("text", "host", "port", "protocol", "tls", "path"),
    [
        ("db.internal:3306", "db.internal", 3306, Protocol.TCP, False, "/"),
        ("10.0.0.5:80", "10.0.0.5", 80, Protocol.TCP, False, "/"),
        ("[::1]:8080", "::1", 8080, Protocol.TCP, False, "/"),
        ("[2001:DB8::1]:443", "2001:db8::1", 443, Protocol.TCP, False, "/"),
        ("ws://chat.example:2346/socket?room=1", "chat.example", 2346, Protocol.WS, False,
         "/socket?room=1"),
        ("wss://chat.example/socket", "chat.example", 443, Protocol.WS, True, "/socket"),
        ("http://h", "h", 80, Protocol.HTTP, False, "/"),
        ("https://[::1]/x#frag", "::1", 443, Protocol.HTTP, True, "/x"),
        ("HTTPS://user:pw@h:8443/", "h", 8443, Protocol.HTTP, True, "/"),
    ],
)  # fmt: skip
def test_accepted_forms(
    text: str, host: str, port: int, protocol: Protocol, tls: bool, path: str
) -> None:
    t = parse_target(text)
    assert (t.host, t.port, t.protocol, t.tls, t.path) == (host, port, protocol, tls, path)


def test_protocol_flag_overrides_the_scheme() -> None:
    assert parse_target("h:443", Protocol.TLS).tls is True
    assert parse_target("h:80", Protocol.WS).protocol is Protocol.WS
    t = parse_target("https://h/", Protocol.TCP)
    assert (t.protocol, t.tls) == (Protocol.TCP, False)


def test_literal_addresses_are_recognised() -> None:
    assert parse_target("10.0.0.1:1").is_literal
    assert parse_target("[fe80::1%eth0]:1").is_literal
    assert not parse_target("db:1").is_literal


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("host", "missing port"),
        ("host:0", "port 0 is outside 1-65535"),
        ("host:99999", "port 99999 is outside 1-65535"),
        ("host:-1", "not a number"),
        ("host:", "not a number"),
        ("[::1", "without a closing ']'"),
        ("[::1]", "missing port"),
        ("[::1]x:80", "after ']'"),
        ("[nothex]:80", "not an IPv6 address"),
        ("::1:80", "needs brackets"),
        ("", "empty"),
        ("   ", "empty"),
        ("ftp://h:21", "unknown scheme"),
        ("ws://:80/", "no host"),
        ("bad host:80", "whitespace"),
        ("a..b:80", "not a host name"),
    ],
)
def test_bad_targets_name_the_value(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_target(text)
    assert exc.value.exit_code == 2
    msg = str(exc.value)
    assert "\n" not in msg
    assert repr(text) in msg and fragment in msg


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://h:80/x\r\nX-Injected: 1", "'\\r'"),
        ("http://h:80/\nGET", "'\\n'"),
        ("h\r\n:80", "'\\r'"),
        ("ws://h:80/a\x00b", "'\\x00'"),
        ("http://h:80/a\x7f", "'\\x7f'"),
    ],
)
def test_control_characters_are_refused_not_sent(text: str, shown: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_target(text)
    msg = str(exc.value)
    assert exc.value.exit_code == 2 and "\n" not in msg
    assert f"control character {shown}" in msg


def test_credentials_in_a_url_are_never_echoed() -> None:
    t = parse_target("https://alice:s3cret@h:8443/x")
    assert "s3cret" not in t.text and "alice" not in t.text
    assert t.text == "https://***@h:8443/x"
    with pytest.raises(UsageError) as exc:
        parse_target("https://alice:s3cret@h:99999/")
    assert "s3cret" not in str(exc.value) and "***@" in str(exc.value)


def test_non_ascii_path_is_percent_encoded() -> None:
    t = parse_target("http://h:80/caf\u00e9/\u00fc?q=\u00e4&x=%41")
    assert t.path == "/caf%C3%A9/%C3%BC?q=%C3%A4&x=%41"
    t.path.encode("ascii")


def test_whitespace_in_the_path_is_refused() -> None:
    with pytest.raises(UsageError, match="percent-encode"):
        parse_target("http://h:80/a b")
