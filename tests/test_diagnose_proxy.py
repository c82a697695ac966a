"""Which proxy a client would use for the target, as curl and most libraries decide it."""

from __future__ import annotations

from auditor.diagnose.proxy import excluded, proxies_for
from auditor.diagnose.target import parse_target


def test_http_target_uses_http_proxy_and_hides_credentials() -> None:
    got = proxies_for(parse_target("http://api.test:8080/"), {"http_proxy": "http://u:pw@p:3128"})
    assert [(p.variable, p.url, p.host, p.port) for p in got] == [
        ("http_proxy", "http://p:3128", "p", 3128)
    ]


def test_lower_case_wins_and_scheme_selects_the_variable() -> None:
    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "http_proxy": "x:3"}
    assert proxies_for(parse_target("wss://h/"), env)[0].variable == "https_proxy"
    assert proxies_for(parse_target("ws://h/"), env)[0].variable == "http_proxy"
    assert proxies_for(parse_target("https://h/"), {"HTTPS_PROXY": "p:9"})[0].port == 9


def test_raw_tcp_only_honours_all_proxy() -> None:
    assert proxies_for(parse_target("db:3306"), {"http_proxy": "p:1"}) == ()
    got = proxies_for(parse_target("db:3306"), {"ALL_PROXY": "socks5://[fd00::1]:1080"})
    assert got[0].url == "socks5://[fd00::1]:1080" and got[0].host == "fd00::1"


def test_no_proxy_forms() -> None:
    env = {"no_proxy": "localhost, .corp.test,10.0.0.0/8,api.test:8443,[fd00::5]"}
    assert excluded(env, "localhost", 80)
    assert excluded(env, "db.corp.test", 80)
    assert excluded(env, "corp.test", 80)
    assert not excluded(env, "notcorp.test", 80)
    assert excluded(env, "10.1.2.3", 80)
    assert not excluded(env, "11.1.2.3", 80)
    assert excluded(env, "api.test", 8443) and not excluded(env, "api.test", 80)
    assert excluded(env, "fd00::5", 1)
    assert excluded({"NO_PROXY": "*"}, "anything", 1)
    assert proxies_for(parse_target("http://10.9.9.9/"), {**env, "http_proxy": "p:1"}) == ()


def test_a_proxy_port_that_is_no_port_is_named_unusable_not_read_as_a_number() -> None:
    """`int()` reads `²` and `١٢`, and 99999 is a number no port has: curl refuses such a
    setting, so the client does not go direct either; the proxy is shown as unusable, never
    probed at a port it does not have, and never an internal error."""
    for port in ("²", "١٢", "99999", "0", "1_0"):
        (got,) = proxies_for(parse_target("http://h/"), {"http_proxy": f"http://p:{port}"})
        assert (got.host, got.port) == ("p", 0)
        assert got.reachable.startswith("unusable: its port") and repr(port) in got.reachable
    env = {"no_proxy": "h:²", "http_proxy": "p:1"}  # an entry whose port is no port: any port
    assert excluded(env, "h", 80)
    assert proxies_for(parse_target("http://h/"), {"http_proxy": "p"})[0].port == 1080
