"""The catalogue covers the source document, and the judges read the evidence as documented."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from auditor.diagnose.causes import CATALOGUE, FAMILIES, FLAGGABLE, JUDGES, Evidence, judge
from auditor.diagnose.model import (
    AddressAttempt,
    CauseStatus,
    ConnectResult,
    Diagnosis,
    FirewallHit,
    ListenerView,
    LocalView,
    PortUse,
    ProtocolResult,
    Resolution,
    RouteInfo,
    Verdict,
    flaps,
)
from auditor.diagnose.render import render_json, render_table
from auditor.diagnose.target import parse_target

DOCUMENT_CASES = [f"refused-{i}" for i in range(1, 8)] + [f"timeout-{i}" for i in range(1, 7)]


def test_every_document_case_has_an_id_a_judge_and_a_verdict() -> None:
    for cid in [*DOCUMENT_CASES, "addr-1", "addr-2", "proto-1"]:
        assert CATALOGUE[cid].source == "client-connect-fail"
        assert cid in JUDGES
    assert set(JUDGES) == set(CATALOGUE)
    for i in range(1, 8):
        assert f"refused-{i}" in FAMILIES[Verdict.REFUSED]
    for i in range(1, 7):
        assert f"timeout-{i}" in FAMILIES[Verdict.TIMEOUT]
    assert {"addr-1", "addr-2"} <= set(FAMILIES[Verdict.ADDR_NOT_AVAILABLE])
    assert "proto-1" in FAMILIES[Verdict.PROTOCOL_MISMATCH]
    shown = {c for fam in FAMILIES.values() for c in fam} | set(FLAGGABLE)
    assert shown == set(CATALOGUE)


def _ev(
    verdict: Verdict,
    *,
    target: str = "10.0.0.5:8080",
    connect: ConnectResult | None = None,
    route: RouteInfo | None = None,
    local: LocalView | None = None,
    resolution: Resolution | None = None,
    protocol: ProtocolResult | None = None,
    port_use: PortUse | None = None,
) -> Evidence:
    t = parse_target(target)
    addr = resolution.addresses[0] if resolution and resolution.addresses else t.host
    attempt = AddressAttempt(
        address=addr,
        route=route or RouteInfo(kind="unicast", interface="eth0", source="10.0.0.2"),
        connect=connect or ConnectResult(outcome=str(verdict)),
        protocol=protocol,
    )
    return Evidence(
        target=t,
        verdict=verdict,
        resolution=resolution or Resolution(addresses=(addr,)),
        attempts=(attempt,),
        primary=attempt,
        local=local,
        proxies=(),
        port_use=port_use,
    )


def _status(ev: Evidence) -> dict[str, CauseStatus]:
    causes, _ = judge(ev)
    return {c.id: c.status for c in causes}


def test_remote_refused_is_not_blamed_on_one_cause_from_the_client() -> None:
    """A reset to the SYN is what no listener, a loopback-only listener and a `reject with
    tcp reset` rule all send: from the client none of them is shown, so none is likely."""
    st = _status(_ev(Verdict.REFUSED, connect=ConnectResult("refused", "ECONNREFUSED")))
    assert st["refused-5"] is CauseStatus.POSSIBLE
    assert st["refused-7"] is CauseStatus.POSSIBLE
    assert st["timeout-1"] is CauseStatus.POSSIBLE
    assert st["refused-3"] is CauseStatus.RULED_OUT  # an IP address: nothing resolved


def _local(listeners: tuple[ListenerView, ...], hits: tuple[FirewallHit, ...] = ()) -> LocalView:
    return LocalView(reason="test", listeners=listeners, firewall=hits, firewall_source="nft")


def test_local_loopback_bound_listener() -> None:
    lv = _local((ListenerView("127.0.0.1", 8080, 4, reaches_target=False),))
    st = _status(_ev(Verdict.REFUSED, local=lv))
    assert st["refused-7"] is CauseStatus.LIKELY
    assert st["refused-5"] is CauseStatus.RULED_OUT


def test_local_listener_bound_to_another_lan_address() -> None:
    lv = _local((ListenerView("10.0.0.9", 8080, 4, reaches_target=False),))
    causes, _ = judge(_ev(Verdict.REFUSED, local=lv))
    r7 = next(c for c in causes if c.id == "refused-7")
    assert r7.status is CauseStatus.LIKELY and "bound to another address" in r7.why


def test_local_timeout_without_rules_points_outside_the_host() -> None:
    lv = _local((ListenerView("0.0.0.0", 8080, 4, reaches_target=True),))
    st = _status(_ev(Verdict.TIMEOUT, local=lv))
    assert st["timeout-1"] is CauseStatus.RULED_OUT
    # What portaudit cannot see is never ruled out.
    assert st["timeout-2"] is CauseStatus.POSSIBLE and st["timeout-3"] is CauseStatus.POSSIBLE


def test_conditional_rule_is_possible_with_its_condition() -> None:
    hit = FirewallHit("inet f input handle 3", "ip saddr 1.2.3.0/24 tcp dport 8080 drop", "drop",
                      conditions=("ip saddr 1.2.3.0/24",))  # fmt: skip
    causes, _ = judge(_ev(Verdict.TIMEOUT, local=_local((), (hit,))))
    t1 = next(c for c in causes if c.id == "timeout-1")
    assert t1.status is CauseStatus.POSSIBLE and "ip saddr 1.2.3.0/24" in t1.why


def test_expect_ip_mismatch_on_timeout_is_timeout_5_only() -> None:
    res = Resolution(addresses=("10.0.0.7",), expect_ip="10.0.0.5")
    causes, _ = judge(_ev(Verdict.TIMEOUT, target="db.test:5432", resolution=res))
    ids = [c.id for c in causes]
    assert "timeout-5" in ids and "refused-3" not in ids
    assert next(c for c in causes if c.id == "timeout-5").status is CauseStatus.LIKELY


def _use(used: int, eph001: str = "pass", state: str = "ESTABLISHED") -> PortUse:
    return PortUse("10.0.0.2", "10.0.0.5", 80, used, 1000, {state: used}, "1000-1999", "2", eph001)


def test_port_use_below_capacity_makes_addr_1_only_possible() -> None:
    st = _status(_ev(Verdict.ADDR_NOT_AVAILABLE, port_use=_use(10)))
    assert st["addr-1"] is CauseStatus.POSSIBLE
    assert st["addr-2"] is CauseStatus.RULED_OUT


@pytest.mark.parametrize(
    ("eph001", "status"),
    [
        ("fail crit: Ephemeral ports ... 95% used", CauseStatus.LIKELY),
        ("fail warn: Ephemeral ports ... 80% used", CauseStatus.POSSIBLE),
        ("pass", CauseStatus.POSSIBLE),
        ("skipped: ports: absent", CauseStatus.POSSIBLE),
    ],
)
def test_addr_1_takes_eph001s_outcome(eph001: str, status: CauseStatus) -> None:
    """The share alone never decides: 990 of 1000 used with EPH-001 passing (an operator's
    higher threshold) is not called exhaustion, as the audit would not."""
    causes, _ = judge(_ev(Verdict.ADDR_NOT_AVAILABLE, port_use=_use(990, eph001)))
    a1 = next(c for c in causes if c.id == "addr-1")
    assert a1.status is status
    assert eph001 in a1.why
    assert a1.rule == "EPH-001"
    assert any(e.what == "audit rule EPH-001" and e.value == eph001 for e in a1.evidence)


def test_ok_without_flags_lists_only_the_protocol_check() -> None:
    ok = ProtocolResult(ok=True, summary="HTTP/1.1 200 OK", status=200)
    causes, steps = judge(_ev(Verdict.OK, target="http://10.0.0.5/", protocol=ok))
    assert [(c.id, c.status) for c in causes] == [("proto-1", CauseStatus.RULED_OUT)]
    assert steps == ()


def test_unresolved_name_is_the_wrong_domain_name() -> None:
    t = parse_target("nosuch.test:80")
    ev = Evidence(
        target=t,
        verdict=Verdict.UNRESOLVED,
        resolution=Resolution(addresses=(), error="nosuch.test: Name or service not known"),
        attempts=(),
        primary=None,
        local=None,
        proxies=(),
        port_use=None,
    )
    assert _status(ev)["refused-2"] is CauseStatus.LIKELY


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_render_shapes(fmt: str) -> None:
    ev = _ev(
        Verdict.REFUSED, connect=ConnectResult("refused", "ECONNREFUSED", "Connection refused")
    )
    causes, steps = judge(ev)
    d = Diagnosis(
        target=ev.target,
        verdict=ev.verdict,
        summary="connect to 10.0.0.5:8080: refused",
        resolution=ev.resolution,
        attempts=ev.attempts,
        evidence=("connect 10.0.0.5:8080: refused",),
        causes=causes,
        next_steps=steps,
    )
    if fmt == "json":
        data: dict[str, Any] = json.loads(render_json(d))
        assert data["verdict"] == "refused" and data["target"]["port"] == 8080
        assert set(data["causes"][0]) == {"id", "case", "status", "why", "rule", "evidence"}
        assert data["exit_code"] == 1
        assert data["addresses"][0]["result"]["errno_name"] == "ECONNREFUSED"
        assert data["addresses"][0]["route"]["interface"] == "eth0"
        assert data["next_steps"]
    else:
        text = render_table(d)
        assert text.startswith("10.0.0.5:8080: REFUSED")
        assert "refused-5" in text and "Next steps:" in text


def _facts_to(used: int) -> Any:
    from auditor.facts.model import (
        Destination,
        Facts,
        HostInfo,
        PortRange,
        SocketTable,
        Unavailable,
    )

    table = SocketTable(
        "proc",
        {"ESTABLISHED": used},
        (Destination("10.0.0.2", "10.0.0.5", 80, {"ESTABLISHED": used}),),
        (),
    )
    gone = Unavailable("not in this test")
    return Facts(
        HostInfo("h", "6.1", "net:[1]"), 0.0, {"net.ipv4.tcp_tw_reuse": "2"}, {},
        PortRange(1000, 1999, (), 1000), gone, gone, table, gone, gone,
    )  # fmt: skip


def test_eph001_outcome_is_the_engines_with_the_operators_config(tmp_path: Path) -> None:
    from auditor.diagnose.run import eph001_outcome
    from auditor.errors import InputError
    from auditor.hostfs import HostRoot

    host = HostRoot(root=tmp_path)
    facts = _facts_to(930)
    assert eph001_outcome(host, facts, "10.0.0.2", "10.0.0.5", 80).startswith("fail crit: ")
    assert eph001_outcome(host, facts, None, "10.0.0.5", 80).startswith("fail crit: ")
    assert eph001_outcome(host, _facts_to(10), "10.0.0.2", "10.0.0.5", 80) == "pass"
    cfg = tmp_path / "etc/portaudit/config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("rules:\n  EPH-001:\n    params:\n      crit_ratio: 0.97\n")
    assert eph001_outcome(host, facts, "10.0.0.2", "10.0.0.5", 80).startswith("fail warn: ")
    cfg.write_text("rules:\n  EPH-001:\n    params:\n      crit_ratio: high\n")
    with pytest.raises(
        InputError, match=r"config.yaml:\d+: rules.EPH-001.params.crit_ratio: expected a number"
    ):
        eph001_outcome(host, facts, "10.0.0.2", "10.0.0.5", 80)


def _server_view(**kw: Any) -> LocalView:
    listener = ListenerView("0.0.0.0", 8080, 4, reaches_target=True, **kw)
    return _local((listener,))


def test_full_conntrack_table_is_likely_and_not_blamed_on_a_firewall() -> None:
    import dataclasses

    full = dataclasses.replace(_server_view(), conntrack=(262144, 262144))
    st = _status(_ev(Verdict.TIMEOUT, local=full))
    assert st["ct-1"] is CauseStatus.LIKELY
    assert st["timeout-1"] is CauseStatus.RULED_OUT
    client_side = dataclasses.replace(_ev(Verdict.TIMEOUT), client_conntrack=(65536, 65536))
    assert _status(client_side)["ct-1"] is CauseStatus.LIKELY
    roomy = dataclasses.replace(_server_view(), conntrack=(10, 262144))
    assert _status(_ev(Verdict.TIMEOUT, local=roomy))["ct-1"] is CauseStatus.RULED_OUT


def test_a_stopped_server_is_flagged_even_when_tcp_connects() -> None:
    """With --protocol tcp a silent server is normal, but a stopped holder is seen on the host."""
    lv = _server_view(pid=42, process="srv", state="stopped", queued_before=0, queued=1, backlog=8)
    st = _status(_ev(Verdict.OK, local=lv, protocol=ProtocolResult(ok=True, summary="connected")))
    assert st["app-3"] is CauseStatus.LIKELY


def test_fd_2_takes_fd003s_outcome_not_its_own_count() -> None:
    """The holder's count against its limit is shown, but FD-003's outcome decides: a view
    that looks full with FD-003 passing is not likely, and one FD-003 fails crit is."""
    full = _server_view(pid=42, process="srv", state="sleeping", fds=16, fd_limit=16)
    key = "FD-003 0.0.0.0:8080"
    crit = dataclasses.replace(full, rules={key: "fail crit: pid 42 (srv) holding ... 16 of 16"})
    fd2 = next(c for c in judge(_ev(Verdict.NO_REPLY, local=crit))[0] if c.id == "fd-2")
    assert fd2.status is CauseStatus.LIKELY and "16 of 16" in fd2.why and fd2.rule == "FD-003"
    assert any(e.what == f"audit rule {key}" for e in fd2.evidence)
    warn = dataclasses.replace(full, rules={key: "fail warn: 85%"})
    assert _status(_ev(Verdict.NO_REPLY, local=warn))["fd-2"] is CauseStatus.POSSIBLE
    passed = dataclasses.replace(full, rules={key: "pass"})
    assert _status(_ev(Verdict.NO_REPLY, local=passed))["fd-2"] is CauseStatus.RULED_OUT
    skipped = dataclasses.replace(full, rules={key: "skipped: holding process unknown"})
    assert _status(_ev(Verdict.NO_REPLY, local=skipped))["fd-2"] is CauseStatus.POSSIBLE
    # another port's outcome does not count
    other = dataclasses.replace(full, rules={"FD-003 0.0.0.0:9090": "fail crit: x"})
    assert _status(_ev(Verdict.NO_REPLY, local=other))["fd-2"] is CauseStatus.POSSIBLE


def test_lsn_1_takes_lsn002s_outcome() -> None:
    lv = _server_view(queued_before=2, queued=2, backlog=1)
    key = "LSN-002 0.0.0.0:8080"
    full = dataclasses.replace(lv, rules={key: "fail warn: 0.0.0.0:8080 has 2 ... backlog of 1"})
    lsn = next(c for c in judge(_ev(Verdict.TIMEOUT, local=full))[0] if c.id == "lsn-1")
    assert lsn.status is CauseStatus.LIKELY and "backlog of 1" in lsn.why and lsn.rule == "LSN-002"
    assert _status(_ev(Verdict.TIMEOUT, local=full))["timeout-1"] is not CauseStatus.LIKELY
    quiet = dataclasses.replace(lv, rules={key: "pass"})
    assert _status(_ev(Verdict.TIMEOUT, local=quiet))["lsn-1"] is CauseStatus.RULED_OUT
    unknown = dataclasses.replace(lv, rules={key: "skipped: backlog unknown"})
    assert _status(_ev(Verdict.TIMEOUT, local=unknown))["lsn-1"] is CauseStatus.POSSIBLE


def test_every_cause_carries_evidence_where_it_was_observed() -> None:
    causes, _ = judge(_ev(Verdict.REFUSED, connect=ConnectResult("refused", "ECONNREFUSED")))
    r5 = next(c for c in causes if c.id == "refused-5")
    assert [(e.what, e.where) for e in r5.evidence] == [
        ("connect 10.0.0.5:8080", "TCP from this host")
    ]


@pytest.mark.parametrize(
    ("tries", "flapping"),
    [
        (("ok", "ok", "ok"), False),
        (("ok", "reset", "ok"), True),
        (("ok", "closed"), True),
        (("ok", "refused", "refused"), True),
        (("timeout", "unreachable", "timeout"), False),
        (("no-reply", "cut-short"), False),
        (("ok", "cut-short", "ok"), False),
        (("refused", "ok"), True),
    ],
)
def test_flapping_compares_whole_attempts(tries: tuple[str, ...], flapping: bool) -> None:
    """A try is a whole attempt's verdict; a timeout and EHOSTUNREACH are one failure, and
    a try the time budget cut is not compared."""
    assert flaps(tries) is flapping
