"""Pure planning logic: which fixes are selected, and which values are refused before any write."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.engine.report import Applicability, Finding
from auditor.errors import InputError, RefusedError, UsageError
from auditor.fix.plan import (
    FileEdit,
    file_diff,
    narrows_port_range,
    parse_only,
    select_fixes,
    usable_ports,
    validate_value,
)
from tests.helpers import make_finding

RANGE = "net.ipv4.ip_local_port_range"


def finding(
    rule: str, sysctl: dict[str, str], applicability: Applicability = Applicability.SAFE
) -> Finding:
    return make_finding(rule, sysctl, applicability=str(applicability))


RUNTIME = {
    "net.ipv4.ip_unprivileged_port_start": "1024",
    "net.ipv4.ip_local_reserved_ports": "",
    RANGE: "32768 60999",
    "net.ipv4.tcp_tw_reuse": "2",
    "net.ipv4.tcp_rmem": "4096 131072 6291456",
}


def test_safe_selected_unsafe_needs_only_display_never() -> None:
    fs = [
        finding("TW-001", {"net.ipv4.tcp_tw_reuse": "1"}),
        finding("EPH-001", {RANGE: "10000 65535"}, Applicability.UNSAFE),
        finding("TW-004", {"net.ipv4.tcp_max_tw_buckets": "262144"}, Applicability.DISPLAY_ONLY),
    ]
    sel = select_fixes(fs, None)
    assert [w.key for w in sel.wanted] == ["net.ipv4.tcp_tw_reuse"]
    assert any("EPH-001: unsafe fix" in n for n in sel.notes)
    assert any("TW-004: display-only" in n for n in sel.notes)

    sel = select_fixes(fs, frozenset({"EPH-001", "TW-004"}))
    assert [w.key for w in sel.wanted] == [RANGE]
    assert any("TW-004: display-only" in n for n in sel.notes)


def test_only_names_rule_without_finding() -> None:
    sel = select_fixes([finding("TW-001", {"net.ipv4.tcp_tw_reuse": "1"})], frozenset({"CT-001"}))
    assert sel.wanted == ()
    assert sel.notes == ("CT-001: no failing finding, nothing to fix",)


def test_same_key_merged_conflict_refused() -> None:
    same = [
        finding("EPH-001", {RANGE: "10000 65535"}),
        finding("EPH-004", {RANGE: "10000\t65535"}),
    ]
    sel = select_fixes(same, None)
    assert len(sel.wanted) == 1 and sel.wanted[0].rules == ("EPH-001", "EPH-004")
    clash = [finding("EPH-001", {RANGE: "10000 65535"}), finding("EPH-004", {RANGE: "2000 65535"})]
    with pytest.raises(RefusedError, match="EPH-004 wants"):
        select_fixes(clash, None)


@pytest.mark.parametrize("key", ["../../etc/passwd", "net..ipv4", "net/ipv4/../../x", "a b", ""])
def test_rule_keys_escaping_proc_sys_are_usage_errors(key: str) -> None:
    with pytest.raises(UsageError) as exc:
        select_fixes([finding("X-001", {key: "1"})], None)
    assert exc.value.exit_code == 2


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
        ("10000", "not two integers"),
        ("10000 65535 1", "not two integers"),
        ("0x2710 65535", "not a decimal integer"),
        ("010000 65535", "not a decimal integer"),
        ("+10000 65535", "not a decimal integer"),
        ("10000 70000", "1..65535"),
        ("0 100", "1..65535"),
        ("60000 50000", "low is above high"),
        ("500 65535", "below ip_unprivileged_port_start 1024"),
        ("10000 65535\nkernel.x = 1", "control characters"),
        ("10000 65535\r", "control characters"),
        ("", "empty value"),
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


def test_untabled_numeric_key_keeps_its_shape() -> None:
    assert validate_value("net.ipv4.tcp_rmem", "4096 262144 8388608", RUNTIME) == (
        "4096 262144 8388608"
    )
    with pytest.raises(InputError, match="shape"):
        validate_value("net.ipv4.tcp_rmem", "4096 262144", RUNTIME)
    with pytest.raises(InputError, match="decimal"):
        validate_value("net.ipv4.tcp_rmem", "4096 0x10 1", RUNTIME)


def test_string_values_boot_would_misread_refused() -> None:
    key = "net.ipv4.tcp_congestion_control"
    assert validate_value(key, "bbr", {key: "cubic"}) == "bbr"
    for bad in ('"bbr"', "bbr # fast", "bbr;", "bbr\\"):
        with pytest.raises(InputError, match="boot would lose"):
            validate_value(key, bad, {key: "cubic"})


def test_usable_and_narrowing() -> None:
    assert usable_ports(40000, 40099, [(40050, 40059), (1, 5)]) == 90
    assert narrows_port_range("10000 65535", "32768 60999", "")
    assert not narrows_port_range("40000 40099", "10000 65535", "")
    assert not narrows_port_range(None, "10000 65535", "")


def test_diff_shows_missing_final_newline() -> None:
    edit = FileEdit("/etc/sysctl.conf", Path("/x"), b"a = 1", b"a = 1\n# c\nb = 2\n")
    text = file_diff(edit)
    assert "--- /etc/sysctl.conf" in text and "+++ /etc/sysctl.conf" in text
    assert "\\ No newline at end of file" in text
    assert "+b = 2" in text
    new = FileEdit("/etc/sysctl.d/99-zz-portaudit.conf", Path("/x"), None, b"b = 2\n")
    assert file_diff(new).startswith("--- /dev/null\n+++ /etc/sysctl.d/99-zz-portaudit.conf")
