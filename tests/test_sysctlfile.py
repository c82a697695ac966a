"""The one-file parser reads lines as systemd-sysctl does, and edits keep every other byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.errors import UsageError
from auditor.hostfs import systemd_normalize
from auditor.sysctlfile import (
    last_assignment,
    normalize_key,
    parse_sysctl_text,
    remove_key,
    set_value,
)


def one(text: str):  # type: ignore[no-untyped-def]
    (line,) = parse_sysctl_text(text)
    return line


def test_plain_assignment_and_spacing() -> None:
    ln = one("  net.ipv4.tcp_tw_reuse\t=   1  \n")
    assert (ln.key, ln.value, ln.problem, ln.ignore_errors) == (
        "net.ipv4.tcp_tw_reuse",
        "1",
        None,
        False,
    )
    assert ln.raw == "  net.ipv4.tcp_tw_reuse\t=   1  \n"


@pytest.mark.parametrize("text", ["# c\n", "; c\n", "   # indented\n", "\n", "   \t\n", "#a=b\n"])
def test_comments_and_blank_lines_carry_nothing(text: str) -> None:
    ln = one(text)
    assert (ln.key, ln.value, ln.problem) == (None, None, None)


def test_value_keeps_inner_whitespace_and_equals() -> None:
    ln = one("net.ipv4.ip_local_port_range = 10000\t65000\n")
    assert ln.value == "10000\t65000"
    assert one("kernel.core_pattern = |/bin/x a=b\n").value == "|/bin/x a=b"


def test_inline_comment_is_part_of_the_value() -> None:
    ln = one("net.ipv4.tcp_tw_reuse = 1 # enable\n")
    assert ln.value == "1 # enable"
    assert ln.problem == "inline-comment"


@pytest.mark.parametrize("value", ['"1"', "'1'", '"10000 65000"'])
def test_quoted_values_are_kept_with_their_quotes(value: str) -> None:
    ln = one(f"net.core.somaxconn = {value}\n")
    assert ln.value == value
    assert ln.problem == "quoted-value"


def test_no_equals_and_empty_parts() -> None:
    assert one("net.ipv4.tcp_syncookies 1\n").problem == "no-equals"
    assert one("= 1\n").problem == "empty-key"
    e = one("net.core.somaxconn =\n")
    assert (e.key, e.value, e.problem) == ("net.core.somaxconn", "", "empty-value")
    assert one("net ipv4 x = 1\n").problem == "bad-key"


def test_dash_prefix_ignores_errors_and_marks_exclusions() -> None:
    a = one("-net.ipv4.tcp_tw_reuse = 1\n")
    assert (a.key, a.value, a.ignore_errors) == ("net.ipv4.tcp_tw_reuse", "1", True)
    x = one("-net.ipv4.conf.all.rp_filter\n")
    assert x.is_exclusion and x.key == "net.ipv4.conf.all.rp_filter" and x.problem is None


def test_bom_loses_the_first_assignment_only() -> None:
    lines = parse_sysctl_text("\ufeffnet.core.somaxconn = 1\nnet.ipv4.tcp_tw_reuse = 1\n")
    assert (lines[0].key, lines[0].problem) == (None, "bom")
    assert (lines[1].key, lines[1].problem) == ("net.ipv4.tcp_tw_reuse", None)
    assert parse_sysctl_text("\ufeff# just a comment\n")[0].problem is None


def test_crlf_and_missing_final_newline() -> None:
    lines = parse_sysctl_text("a.b = 1\r\nc.d = 2")
    assert [ln.raw for ln in lines] == ["a.b = 1\r\n", "c.d = 2"]
    assert [ln.value for ln in lines] == ["1", "2"]
    assert [ln.lineno for ln in lines] == [1, 2]


@pytest.mark.parametrize(("cut", "kind"), [("\r", "bare-cr"), ("\0", "nul-byte")])
def test_lone_cr_or_nul_ends_the_line_and_both_halves_apply(cut: str, kind: str) -> None:
    """systemd's read_line() ends a line at a lone CR or NUL: both assignments are applied."""
    lines = parse_sysctl_text(f"a.b = 1{cut}c.d = 2\ne.f = 3\n")
    assert [(ln.key, ln.value, ln.lineno) for ln in lines] == [
        ("a.b", "1", 1),
        ("c.d", "2", 1),
        ("e.f", "3", 2),
    ]
    assert lines[0].split == kind and lines[1].split is None
    assert lines[0].problem is None and lines[1].problem is None


def test_crlf_is_one_line_end_not_a_lone_cr() -> None:
    (ln,) = parse_sysctl_text("a.b = 1\r\n")
    assert (ln.value, ln.split) == ("1", None)


def test_leading_slash_key_is_the_same_key() -> None:
    ln = one("/net/ipv4/tcp_tw_reuse = 1\n")
    assert (ln.key, ln.value, ln.problem) == ("net.ipv4.tcp_tw_reuse", "1", None)
    assert one("/ = 1\n").problem == "bad-key"


@pytest.mark.parametrize(
    ("written", "dotted", "slash"),
    [
        ("net.ipv4.tcp_tw_reuse", "net.ipv4.tcp_tw_reuse", "net/ipv4/tcp_tw_reuse"),
        ("net/ipv4/tcp_tw_reuse", "net.ipv4.tcp_tw_reuse", "net/ipv4/tcp_tw_reuse"),
        ("/net//ipv4/./tcp_tw_reuse", "net.ipv4.tcp_tw_reuse", "net/ipv4/tcp_tw_reuse"),
        # a VLAN interface eth0.100: slash form keeps the dot, dotted form writes it as '/'
        (
            "net/ipv4/conf/eth0.100/rp_filter",
            "net.ipv4.conf.eth0/100.rp_filter",
            "net/ipv4/conf/eth0.100/rp_filter",
        ),
        (
            "net.ipv4.conf.eth0/100.rp_filter",
            "net.ipv4.conf.eth0/100.rp_filter",
            "net/ipv4/conf/eth0.100/rp_filter",
        ),
        ("net.ipv4.conf.*.rp_filter", "net.ipv4.conf.*.rp_filter", "net/ipv4/conf/*/rp_filter"),
    ],
)
def test_key_forms_follow_sysctl_normalize(written: str, dotted: str, slash: str) -> None:
    assert normalize_key(written) == dotted
    assert systemd_normalize(written) == slash


def test_duplicates_last_one_decides() -> None:
    lines = parse_sysctl_text("a.b = 1\na/b = 2\n# a.b = 3\n")
    last = last_assignment(lines, "a.b")
    assert last is not None and (last.lineno, last.value) == (2, "2")


# --- set_value -----------------------------------------------------------------------------


def test_set_value_changes_only_the_last_value() -> None:
    text = (
        "# keep me\n  -net/ipv4/tcp_tw_reuse\t=  0   \r\nnet.ipv4.tcp_tw_reuse=0\r\nother.key = 5"
    )
    got = set_value(text, "net.ipv4.tcp_tw_reuse", "1", comment="portaudit TW-001")
    want = text.replace("tcp_tw_reuse=0", "tcp_tw_reuse=1")
    assert want != text and got == want
    first = set_value("x.y =  0   \n", "x.y", "1", comment="c")
    assert first == "x.y =  1   \n"


def test_set_value_appends_in_the_files_style() -> None:
    assert (
        set_value("a.b = 1", "c.d", "2", comment="portaudit") == "a.b = 1\n# portaudit\nc.d = 2\n"
    )
    assert set_value("a.b = 1\r\n", "c/d", "2", comment="p") == "a.b = 1\r\n# p\r\nc.d = 2\r\n"
    assert set_value("", "c.d", "2", comment="p") == "# p\nc.d = 2\n"


def test_set_value_unchanged_when_equal_and_fixes_quotes() -> None:
    text = "net.ipv4.ip_local_port_range = 10000\t65000\n"
    assert set_value(text, "net.ipv4.ip_local_port_range", "10000 65000", comment="c") is text
    quoted = 'net.core.somaxconn = "4096"\n'
    assert (
        set_value(quoted, "net.core.somaxconn", "4096", comment="c")
        == "net.core.somaxconn = 4096\n"
    )


def test_set_value_empty_value_line() -> None:
    assert set_value("a.b =\n", "a.b", "3", comment="c") == "a.b = 3\n"


@pytest.mark.parametrize("bad", ["1\n2", "1\r", "1\x00", "\x1b[31m"])
def test_set_value_refuses_control_characters(bad: str) -> None:
    with pytest.raises(UsageError):
        set_value("", "a.b", bad, comment="c")
    with pytest.raises(UsageError):
        set_value("", "a.b", "1", comment=bad)


def test_remove_key_undoes_an_append() -> None:
    text = "# top\r\nx.y = 1"
    added = set_value(text, "a.b", "2", comment="portaudit TW-001")
    assert remove_key(added, "a.b", comment="portaudit TW-001") == "# top\r\nx.y = 1\r\n"
    assert remove_key(text, "a.b") == text


# --- properties ----------------------------------------------------------------------------

_line = st.one_of(
    st.sampled_from(
        ["# comment", "", "   ", "; semi", "a.b = 1", "a/b=2", "-a.b = 3", "c.d = x y"]
    ),
    st.text(alphabet=" \t=#;-./abcdxyz019\"'\r\0", max_size=20),
)
_eol = st.sampled_from(["\n", "\r\n"])


@st.composite
def files(draw: st.DrawFn) -> str:
    lines = draw(st.lists(st.tuples(_line, _eol), max_size=12))
    text = "".join(a + b for a, b in lines)
    if draw(st.booleans()) and text:
        text = text[: -len(lines[-1][1])]
    return text


_values = st.text(alphabet="0123456789 abc", min_size=1, max_size=12).filter(lambda v: v.strip())


@settings(max_examples=300, deadline=None)
@given(text=files(), key=st.sampled_from(["a.b", "c.d", "e.f"]), value=_values)
def test_set_value_properties(text: str, key: str, value: str) -> None:
    once = set_value(text, key, value, comment="portaudit")
    # idempotent: a second run changes no byte
    assert set_value(once, key, value, comment="portaudit") == once
    # the file now decides `key` as asked
    last = last_assignment(parse_sysctl_text(once), key)
    assert last is not None and " ".join(last.value.split()) == " ".join(value.split())  # type: ignore[union-attr]
    before = parse_sysctl_text(text)
    after = parse_sysctl_text(once)
    target = last_assignment(before, key)
    if target is None:
        # appended: the old text is a prefix (an unterminated last line got its line ending)
        assert once.startswith(text)
        tail = once[len(text) :].lstrip("\r\n") if not text.endswith("\n") else once[len(text) :]
        assert tail.replace("\r\n", "\n") == f"# portaudit\n{key} = {value}\n"
    else:
        # changed in place: every other line byte-identical, same key spelling and ending
        assert len(after) == len(before)
        changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a.raw != b.raw]
        assert changed in ([], [next(i for i, ln in enumerate(before) if ln is target)])
        if changed:
            old, new = before[changed[0]].raw, after[changed[0]].raw
            assert old.split("=", 1)[0] == new.split("=", 1)[0]
            assert old.endswith("\r\n") == new.endswith("\r\n")
    # round trip: the lines reassemble to the exact text
    assert "".join(ln.raw for ln in after) == once


@settings(max_examples=200, deadline=None)
@given(text=files())
def test_parse_round_trips_bytes(text: str) -> None:
    assert "".join(ln.raw for ln in parse_sysctl_text(text)) == text
