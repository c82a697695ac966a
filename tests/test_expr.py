"""The expression language: what it computes, and everything it refuses."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from auditor.engine.expr import EvalError, Expr, ExprSyntaxError, Lookup, Missing, Skip, Value
from auditor.engine.template import Template

TABLE = {
    "dest.used": 95,
    "ports.usable": 100,
    "dest.dst": "10.0.0.5",
    "dest.loopback": False,
    "sysctl.net.ipv4.tcp_tw_reuse": 2,
    "ports.reserved": ((8080, 8080),),
    "counters.TcpExt.ListenOverflows": Missing("counters: /proc/net/netstat: not present"),
}


def table_lookup(table: Mapping[str, Value]) -> Lookup:
    """A lookup over one flat table, turning `Missing` into `Skip` as the evaluator's does."""

    def lookup(name: str) -> Value:
        if name not in table:
            raise Skip(f"{name} is not known on this host")
        value = table[name]
        if isinstance(value, Missing):
            raise Skip(value.reason)
        return value

    return lookup


def ev(src: str) -> object:
    return Expr(src).evaluate(table_lookup(TABLE))


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("dest.used / ports.usable > 0.9", True),
        ("dest.used / ports.usable", 0.95),
        ("sysctl.net.ipv4.tcp_tw_reuse != 1 and not dest.loopback", True),
        ("sysctl.net.ipv4.tcp_tw_reuse in (0, 2)", True),
        ("min(dest.used, 10) + max(1, 2) - abs(-3)", 9),
        ("'low' if dest.used < 10 else 'high'", "high"),
        ("dest.dst == '10.0.0.5'", True),
        ("1 < dest.used < 100", True),
        ("len(ports.reserved)", 1),
        ("dest.used // 10 % 4", 1),
        ("-dest.used", -95),
        ("dest.loopback or dest.used", 95),
    ],
)
def test_evaluates(src: str, expected: object) -> None:
    assert ev(src) == expected


@pytest.mark.parametrize(
    "src",
    [
        "().__class__.__bases__[0].__subclasses__()",
        "dest.used.__class__",
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "dest.dst[0]",
        "[x for x in (1, 2)]",
        "lambda: 1",
        "dest.used ** 999999",
        "f'{dest.used}'",
        "(dest.used := 1)",
        "max(*ports.reserved)",
        "min(dest.used, key=abs)",
        "dest.used << 2",
        "b'bytes'",
        "(1).real",
        "dest.used;",
        "import os",
    ],
)
def test_refuses(src: str) -> None:
    with pytest.raises(ExprSyntaxError):
        Expr(src)


def test_names_are_collected_for_load_time_checks() -> None:
    assert Expr("dest.used / ports.usable > params.crit").names == {
        "dest.used",
        "ports.usable",
        "params.crit",
    }


def test_missing_fact_skips_with_its_reason() -> None:
    with pytest.raises(Skip, match="/proc/net/netstat: not present"):
        ev("counters.TcpExt.ListenOverflows > 0")


def test_unknown_name_at_run_time_skips() -> None:
    with pytest.raises(Skip, match=r"nothing\.here"):
        ev("nothing.here > 1")


def test_short_circuit_does_not_touch_missing_fact() -> None:
    assert ev("dest.loopback and counters.TcpExt.ListenOverflows > 0") is False


@pytest.mark.parametrize("src", ["dest.used / 0", "dest.dst * 3", "dest.dst > 1", "dest.dst - 'x'"])
def test_runtime_errors_are_eval_errors(src: str) -> None:
    with pytest.raises(EvalError):
        ev(src)


def test_template_renders_names_and_specs() -> None:
    t = Template("{dest.dst} is {ratio:.0%} used ({dest.used} of {ports.usable})")
    table = {**TABLE, "ratio": 0.95}
    assert t.render(table_lookup(table)) == "10.0.0.5 is 95% used (95 of 100)"
    assert t.names == {"dest.dst", "ratio", "dest.used", "ports.usable"}


@pytest.mark.parametrize(
    "src",
    [
        "{dest.used.__class__}",
        "{dest.dst[0]}",
        "{dest.dst!r}",
        "{0}",
        "{}",
        "{dest.used:{x}}",
        "{unclosed",
    ],
)
def test_template_refuses(src: str) -> None:
    with pytest.raises(ExprSyntaxError):
        Template(src)
