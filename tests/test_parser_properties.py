"""Property: every parser of outside input ends in a result or a one-line InputError.

/proc files, sysctl.d files, facts snapshots, the config file and rule files are each fed
arbitrary and near-valid content. The outcome must be a value, or an AuditorError (exit 2 with
one line); never another exception, which the CLI would report as an internal error with exit 1,
the code that means "findings".
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.audit import read_snapshot as _load_facts
from auditor.config import Config, parse_config
from auditor.engine.evaluate import evaluate
from auditor.engine.load import builtin_rules_dir, load_rule_file, load_rules
from auditor.engine.report import AuditReport
from auditor.errors import AuditorError
from auditor.facts.counters import parse_counter_pairs
from auditor.facts.model import Facts, PortRange
from auditor.facts.sockets import DestinationCounter, parse_proc_tcp
from auditor.facts.sockstat import parse_sockstat
from auditor.facts.sysctl import parse_reserved_ports
from auditor.render.json import render_json
from auditor.render.prometheus import render_prometheus
from auditor.render.table import render_table
from auditor.sysctlfile import parse_sysctl_text
from auditor.yamlfile import load_yaml
from tests.helpers import ROOTS, root_args, run_cli

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
HEXCH = "0123456789ABCDEFZz:+-_ "


def result_or_input_error(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except AuditorError as exc:
        assert exc.exit_code == 2, exc
        assert "\n" not in str(exc).rstrip("\n"), str(exc)


def hexdigits(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789ABCDEF", min_size=n, max_size=n)


def odd(text: str, data: st.DataObject) -> str:
    """`text` with one character replaced, one added or one dropped."""
    i = data.draw(st.integers(0, max(0, len(text) - 1)))
    c = data.draw(st.sampled_from([*HEXCH, "\t", "0"]))
    how = data.draw(st.sampled_from(["replace", "insert", "drop"]))
    if how == "replace":
        return text[:i] + c + text[i + 1 :]
    if how == "insert":
        return text[:i] + c + text[i:]
    return text[:i] + text[i + 1 :]


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_proc_net_tcp(data: st.DataObject) -> None:
    """Kernel-shaped lines, then one field of one line made odd (or a line of noise added)."""
    family = data.draw(st.sampled_from([4, 6]))
    width = 8 if family == 4 else 32
    port = st.integers(39990, 40070).map(lambda p: f"{p:04X}")
    fields = st.tuples(
        hexdigits(width), port, hexdigits(width), port, st.sampled_from(["01", "06", "08", "0A"])
    )
    rows = [list(r) for r in data.draw(st.lists(fields, min_size=1, max_size=12))]
    row = data.draw(st.integers(0, len(rows) - 1))
    what = data.draw(st.sampled_from(["field", "field", "line", "none"]))
    noise = None
    if what == "field":
        col = data.draw(st.integers(0, 4))
        rows[row][col] = odd(rows[row][col], data)
    elif what == "line":
        noise = data.draw(st.text(max_size=60))
    text = [HEADER] + [
        f"   0: {a}:{b} {c}:{d} {s} 00000000:00000000 00:00000000" for a, b, c, d, s in rows
    ]
    if noise is not None:
        text.insert(row + 1, noise)
    ports = PortRange(low=40000, high=40063, reserved=(), usable=64)
    result_or_input_error(
        lambda: parse_proc_tcp(iter(text), "/proc/net/tcp", family, ports, DestinationCounter())
    )


PAIRS = st.lists(
    st.builds(
        lambda g, names, sep: f"{g}:{sep}{' '.join(names)}",
        st.sampled_from(["TcpExt", "Tcp", "IpExt", "X", ""]),
        st.lists(
            st.one_of(st.from_regex(r"[A-Za-z]{1,8}", fullmatch=True), st.text(max_size=6)),
            max_size=5,
        ),
        st.sampled_from([" ", "", "\t"]),
    ),
    max_size=8,
)


@SETTINGS
@given(st.one_of(PAIRS.map("\n".join), st.text()))
def test_proc_counter_pairs_and_sockstat(text: str) -> None:
    result_or_input_error(lambda: parse_counter_pairs(text, "/proc/net/netstat"))
    result_or_input_error(lambda: parse_sockstat(text, "/proc/net/sockstat"))


@SETTINGS
@given(st.one_of(st.text(alphabet="0123456789,- x", max_size=40), st.text(max_size=20)))
def test_reserved_ports(text: str) -> None:
    result_or_input_error(lambda: parse_reserved_ports(text, "/proc/sys/net/ipv4/x"))


SYSCTL_LINE = st.one_of(
    st.builds(
        lambda dash, key, eq, val, end: f"{dash}{key}{eq}{val}{end}",
        st.sampled_from(["", "-", " -"]),
        st.from_regex(r"[a-z0-9_./*\[\]-]{0,20}", fullmatch=True),
        st.sampled_from(["=", " = ", "", "=="]),
        st.text(max_size=15),
        st.sampled_from(["", "\r", " # c", "\\"]),
    ),
    st.text(max_size=40),
)


@SETTINGS
@given(st.lists(SYSCTL_LINE, max_size=12), st.sampled_from(["\n", "\r\n", "\r"]))
def test_sysctl_files(lines: list[str], eol: str) -> None:
    text = eol.join(lines)
    result_or_input_error(lambda: parse_sysctl_text(text))
    result_or_input_error(lambda: parse_sysctl_text("\ufeff" + text))


@pytest.fixture(scope="module")
def snapshot() -> dict[str, Any]:
    got = run_cli("facts", *root_args(ROOTS / "busy-client"))
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)  # type: ignore[no-any-return]


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(doc, list):
        return [p for i, v in enumerate(doc) for p in _leaves(v, (*path, i))] or [path]
    return [path]


ODD_VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 65535, 65536, 2**63, -(2**63), 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.booleans(),
    st.none(),
    st.just([]),
    st.just({}),
    st.just({"unavailable": "x"}),
)
RULES = load_rules()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_facts_snapshot_leaf_mutations(snapshot: dict[str, Any], data: st.DataObject) -> None:
    """A snapshot with one value changed is read, judged and rendered, or refused in one line."""
    doc = json.loads(json.dumps(snapshot))
    leaves = _leaves(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(leaves))
        if not path:
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = data.draw(ODD_VALUES)
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / "facts.json"
        snap.write_text(json.dumps(doc))

        def run() -> None:
            facts = _load_facts(snap)
            assert isinstance(facts, Facts)
            report = AuditReport.single(evaluate(RULES, facts, Config()))
            render_json(report)
            render_table(report)
            render_prometheus(report)

        result_or_input_error(run)


@SETTINGS
@given(st.text(max_size=200))
def test_facts_snapshot_arbitrary_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / "facts.json"
        snap.write_text(text)
        result_or_input_error(lambda: _load_facts(snap))


YAML_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.text(max_size=8),
        st.sampled_from(["EPH-001", "TW-001", "warn_ratio", "params", "skip", "skip_subjects"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    ["rules", "public_ports", "EPH-001", "params", "skip", "skip_subjects",
                     "warn_ratio", "crit_ratio"]
                ),
                st.text(max_size=6),
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)  # fmt: skip


def _config(text: str) -> None:
    path = Path("/etc/portaudit/config.yaml")
    cfg = parse_config(path, load_yaml(path, text))
    evaluate(RULES, _empty_facts(), cfg)


_FACTS: list[Any] = []


def _empty_facts() -> Any:
    if not _FACTS:
        got = run_cli("facts", *root_args(ROOTS / "minimal"))
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "f.json"
            p.write_text(got.stdout)
            _FACTS.append(_load_facts(p))
    return _FACTS[0]


@SETTINGS
@given(st.one_of(YAML_VALUES.map(lambda v: yaml.safe_dump(v)), st.text(max_size=80)))
def test_config_files(text: str) -> None:
    result_or_input_error(lambda: _config(text))


RULE_TEXTS = sorted(p.read_text() for p in builtin_rules_dir().glob("*.yaml"))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_rule_files_with_a_line_changed(data: st.DataObject) -> None:
    """A built-in rule with one line deleted, duplicated or given another value loads or is
    refused with file:line."""
    lines = data.draw(st.sampled_from(RULE_TEXTS)).splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    how = data.draw(st.sampled_from(["delete", "dup", "value", "garbage"]))
    if how == "delete":
        del lines[i]
    elif how == "dup":
        lines.insert(i, lines[i])
    elif how == "value":
        head, sep, _ = lines[i].partition(":")
        value = data.draw(
            st.one_of(
                st.sampled_from(
                    ["", "-1", "1e999", "9" * 5000, "[", "{a: 1}", "x.y.z", "!!python/none", "~"]
                ),
                st.text(max_size=12),
            )
        )
        lines[i] = f"{head}{sep or ':'} {value}"
    else:
        lines[i] = data.draw(st.text(max_size=30))
    with tempfile.TemporaryDirectory() as tmp:
        rule = Path(tmp) / "r.yaml"
        rule.write_text("\n".join(lines) + "\n")

        def run() -> None:
            loaded = load_rule_file(rule)
            evaluate([loaded], _empty_facts(), Config())

        result_or_input_error(run)
