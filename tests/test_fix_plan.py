"""Pure planning logic: which fixes are selected, and which values are refused before any write."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from auditor.engine.load import load_rules
from auditor.engine.report import Applicability, Finding
from auditor.errors import InputError, RefusedError, UsageError
from auditor.facts.model import Facts, HostInfo, Listener, PortRange, SocketTable, Unavailable
from auditor.fix.keys import format_ports, rule_key_problem
from auditor.fix.keys import validate as validate_value
from auditor.fix.plan import FileEdit, file_diff, select_findings
from auditor.fix.proposals import Declared, propose, widened_range
from auditor.selection import parse_only
from tests.helpers import make_finding

RANGE = "net.ipv4.ip_local_port_range"
RESERVED = "net.ipv4.ip_local_reserved_ports"


def finding(
    rule: str, sysctl: dict[str, str], applicability: Applicability = Applicability.SAFE
) -> Finding:
    return make_finding(rule, sysctl, applicability=str(applicability))


RUNTIME = {
    "net.ipv4.ip_unprivileged_port_start": "1024",
    "net.ipv4.ip_local_reserved_ports": "",
    RANGE: "32768 60999",
    "net.ipv4.tcp_tw_reuse": "2",
}


def test_safe_selected_unsafe_needs_only_or_include_display_never() -> None:
    fs = [
        finding("TW-001", {"net.ipv4.tcp_tw_reuse": "1"}),
        finding("FD-002", {"fs.file-max": "100000"}, Applicability.UNSAFE),
        finding("TW-004", {"net.ipv4.tcp_max_tw_buckets": "262144"}, Applicability.DISPLAY_ONLY),
    ]
    sel = select_findings(fs, None)
    assert [f.id for f in sel.findings] == ["TW-001"]
    assert sel.failing == 3
    left = {lo.rule: lo for lo in sel.left_out}
    assert left["FD-002"].include == "--only FD-002 or --include-unsafe"
    assert "advice only" in left["TW-004"].why

    assert [f.id for f in select_findings(fs, None, include_unsafe=True).findings] == [
        "TW-001",
        "FD-002",
    ]
    approved = select_findings(fs, None, approved=frozenset({"FD-002"}))
    assert [f.id for f in approved.findings] == ["TW-001", "FD-002"]
    sel = select_findings(fs, frozenset({"FD-002", "TW-004"}))
    assert [f.id for f in sel.findings] == ["FD-002"]
    assert [lo.rule for lo in sel.left_out] == ["TW-004"]


def test_only_names_rule_without_finding() -> None:
    sel = select_findings(
        [finding("TW-001", {"net.ipv4.tcp_tw_reuse": "1"})], frozenset({"CT-001"})
    )
    assert sel.findings == ()
    assert sel.notes == ("CT-001: no failing finding, nothing to fix",)


def test_same_key_merged_conflict_refused() -> None:
    same = [
        finding("TW-001", {"net.ipv4.tcp_tw_reuse": "1"}),
        finding("TW-009", {"net.ipv4.tcp_tw_reuse": " 1"}),
    ]
    got = propose(same, None, RUNTIME)
    assert [(p.key, p.value, p.rules) for p in got.items] == [
        ("net.ipv4.tcp_tw_reuse", "1", ("TW-001", "TW-009"))
    ]
    clash = [
        finding("TW-001", {"net.ipv4.tcp_tw_reuse": "1"}),
        finding("TW-009", {"net.ipv4.tcp_tw_reuse": "0"}),
    ]
    with pytest.raises(RefusedError, match="TW-009 wants"):
        propose(clash, None, RUNTIME)


@pytest.mark.parametrize("key", ["../../etc/passwd", "net..ipv4", "net/ipv4/../../x", "a b", ""])
def test_rule_keys_escaping_proc_sys_are_usage_errors(key: str) -> None:
    with pytest.raises(UsageError) as exc:
        select_findings([finding("X-001", {key: "1"})], None)
    assert exc.value.exit_code == 2


def test_keys_not_in_the_table_are_refused() -> None:
    for key, value in (("net.ipv4.tcp_rmem", "4096 262144 8388608"), ("kernel.panic", "1")):
        with pytest.raises(InputError, match="not a key portaudit fix writes") as exc:
            validate_value(key, value, RUNTIME, "X-001")
        assert exc.value.exit_code == 2


def test_negative_value_for_a_key_without_old_bounds_is_refused() -> None:
    """A rule proposing -5 for tcp_keepalive_time wrote it as-is before the typed table."""
    with pytest.raises(InputError, match=r"outside 1\.\.32767"):
        validate_value("net.ipv4.tcp_keepalive_time", "-5", RUNTIME, "X-001")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("/net.ipv4.tcp_tw_reuse", "starts with '/'"),
        ("/proc/sys/net/ipv4/tcp_tw_reuse", "not its /proc/sys path"),
        ("net.ipv4.tcp_tw_reuse ", "whitespace"),
    ],
)
def test_rule_key_forms_are_load_errors_with_line(tmp_path: Path, raw: str, why: str) -> None:
    assert rule_key_problem(raw) is not None
    rule = (Path(__file__).parent.parent / "rules" / "TW-001.yaml").read_text()
    assert '    net.ipv4.tcp_tw_reuse: "1"' in rule
    bad = rule.replace('    net.ipv4.tcp_tw_reuse: "1"', f'    "{raw}": "1"').replace(
        "id: TW-001", "id: TW-901"
    )
    line = bad.splitlines().index(f'    "{raw}": "1"') + 1
    (tmp_path / "TW-901.yaml").write_text(bad)
    with pytest.raises(InputError, match=why) as exc:
        load_rules([tmp_path])
    assert f"TW-901.yaml:{line}" in str(exc.value)


def test_port_lists() -> None:
    assert PortRange.parse_reserved("8080, 9000-9009") == ((8080, 8080), (9000, 9009))
    assert (
        format_ports([(9001, 9001), (9000, 9000), (8080, 8080), (9002, 9005)]) == "8080,9000-9005"
    )
    assert validate_value(RESERVED, "9000,8080,8081", RUNTIME) == "8080-8081,9000"
    for bad in ("0", "70000", "9-1", "a", "1-2-3"):
        with pytest.raises(InputError):
            validate_value(RESERVED, bad, RUNTIME)


def _facts_with(listeners: list[int], low: int = 40000, high: int = 40099) -> Facts:
    table = SocketTable("proc", {}, (), tuple(Listener("0.0.0.0", p, 4) for p in listeners))
    gone = Unavailable("not in this test")
    return Facts(
        HostInfo("h", "6.1", "net:[1]"),
        0.0,
        {},
        {},
        PortRange(low, high, (), high - low + 1),
        gone,
        gone,
        table,
        gone,
        gone,
    )


def test_widening_reserves_listeners_and_declared_ports_in_the_new_range() -> None:
    facts = _facts_with([22, 5000, 27017, 40050])
    runtime = {**RUNTIME, RANGE: "40000 40099", RESERVED: "8080"}
    got = propose(
        [finding("EPH-001", {RANGE: "10000 65535"})],
        facts,
        runtime,
        Declared(public_ports=frozenset({443, 20443}), reserve_ports=frozenset({30000})),
    )
    assert [p.key for p in got.items] == [RESERVED, RANGE]
    reserved, widened = got.items
    assert widened.value == "10000 65535"
    assert reserved.value == "8080,20443,27017,30000,40050"
    assert reserved.rules == ("EPH-001",)
    assert any("27017" in r and "listener 0.0.0.0:27017" in r for r in reserved.reasons)
    assert any("20443" in r and "public_ports" in r for r in reserved.reasons)
    assert not any(
        r.startswith("reserve 443:") for r in reserved.reasons
    )  # 443 stays outside the range


def test_widening_also_settles_parity_and_parity_alone_narrows_by_one() -> None:
    facts = _facts_with([], 32768, 61000)
    runtime = {**RUNTIME, RANGE: "32768 61000"}
    both = propose(
        [finding("EPH-001", {RANGE: "x"}), finding("EPH-005", {RANGE: "32768 60999"})],
        facts,
        runtime,
    )
    assert [(p.key, p.value, p.rules) for p in both.items] == [
        (RANGE, "10000 65535", ("EPH-001", "EPH-005"))
    ]
    parity = propose([finding("EPH-005", {RANGE: "32768 60999"})], facts, runtime)
    assert [(p.key, p.value) for p in parity.items] == [(RANGE, "32768 60999")]


def test_widest_range_respects_unprivileged_start_and_even_low() -> None:
    assert widened_range(PortRange(32768, 60999, (), 0), 1024) == (10000, 65535)
    assert widened_range(PortRange(32768, 60999, (), 0), 20001) == (20002, 65535)
    assert widened_range(PortRange(10000, 65535, (), 0), 1024) is None
    assert widened_range(PortRange(5000, 6000, (), 0), 1024) == (5000, 65535)


def test_eph006_reserves_its_port_merged_with_current() -> None:
    f = dataclasses.replace(
        make_finding("EPH-006", {RESERVED: "8080,45000"}), evidence={"port": 45000}
    )
    got = propose([f], _facts_with([45000], 32768, 60999), {**RUNTIME, RESERVED: "8080"})
    assert [(p.key, p.value) for p in got.items] == [(RESERVED, "8080,45000")]


def test_parse_only() -> None:
    assert parse_only("eph-001, TW-001") == frozenset({"EPH-001", "TW-001"})
    assert parse_only(None) is None
    with pytest.raises(UsageError):
        parse_only(" , ")


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("10000 65535", "10000 65535"),
        ("  10000\t65535 ", "10000 65535"),
        ("1024 1024", "1024 1024"),
    ],
)
def test_port_range_accepted(value: str, want: str) -> None:
    assert validate_value(RANGE, value, RUNTIME) == want


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("10000", "not 2 integers"),
        ("10000 65535 1", "not 2 integers"),
        ("0x2710 65535", "not a decimal integer"),
        ("010000 65535", "not a decimal integer"),
        ("+10000 65535", "not a decimal integer"),
        ("10000 70000", "outside 1..65535"),
        ("0 100", "outside 1..65535"),
        ("60000 50000", "low is above high"),
        ("500 65535", "below ip_unprivileged_port_start 1024"),
        ("10000 65535\nkernel.x = 1", "control characters"),
        ("10000 65535\r", "control characters"),
        ("", "not 2 integers"),
    ],
)
def test_port_range_refused(value: str, why: str) -> None:
    with pytest.raises(InputError, match=why) as exc:
        validate_value(RANGE, value, RUNTIME, "EPH-001")
    assert exc.value.exit_code == 2
    assert "EPH-001" in str(exc.value)


def test_port_range_all_reserved_refused() -> None:
    runtime = {**RUNTIME, "net.ipv4.ip_local_reserved_ports": "40000-40049,40050-40099"}
    with pytest.raises(InputError, match="no usable port"):
        validate_value(RANGE, "40000 40099", runtime)
    assert validate_value(RANGE, "40000 40100", runtime) == "40000 40100"


def test_int_keys() -> None:
    assert validate_value("net.ipv4.tcp_tw_reuse", "1", RUNTIME) == "1"
    for bad in ("3", "-1", "01", "1 1", "one", "0x1"):
        with pytest.raises(InputError):
            validate_value("net.ipv4.tcp_tw_reuse", bad, RUNTIME)
    assert validate_value("net.core.somaxconn", "4096", RUNTIME) == "4096"
    with pytest.raises(InputError, match="outside"):
        validate_value("net.core.somaxconn", "0", RUNTIME)


def test_usable_ports() -> None:
    assert PortRange.count_usable(40000, 40099, ((40050, 40059), (1, 5))) == 90


def test_diff_shows_missing_final_newline() -> None:
    edit = FileEdit("/etc/sysctl.conf", Path("/x"), b"a = 1", b"a = 1\n# c\nb = 2\n")
    text = file_diff(edit)
    assert "--- /etc/sysctl.conf" in text and "+++ /etc/sysctl.conf" in text
    assert "\\ No newline at end of file" in text
    assert "+b = 2" in text
    new = FileEdit("/etc/sysctl.d/99-zz-portaudit.conf", Path("/x"), None, b"b = 2\n")
    assert file_diff(new).startswith("--- /dev/null\n+++ /etc/sysctl.d/99-zz-portaudit.conf")


def test_no_widening_when_listeners_could_not_be_read() -> None:
    facts = dataclasses.replace(_facts_with([]), sockets=Unavailable("permission denied"))
    got = propose([finding("EPH-001", {RANGE: "x"})], facts, {**RUNTIME, RANGE: "40000 40099"})
    assert got.items == ()
    assert any("could not be read (permission denied)" in n for n in got.notes)
