"""The live scan's table keeps destinations as raw keys and counts (DestinationRows): it must
read exactly as the decoded table did, and make a row only for a reader of that row."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import pytest

from auditor.config import load_config
from auditor.engine.evaluate import evaluate
from auditor.engine.load import load_rules
from auditor.facts.collect import collect_facts
from auditor.facts.model import DestinationRows, SocketTable, facts_from_json, to_jsonable
from auditor.facts.netlink import decode_key
from auditor.facts.tcp import STATE_NAMES, DestinationCounter
from auditor.hostfs import HostRoot
from tests.scenario import build_tree, load_scenario

V4, V6 = socket.AF_INET, socket.AF_INET6
PAD = b"\x00" * 12
MAPPED = b"\x00" * 10 + b"\xff\xff"


def v4_key(src: str, dst: str, dport: int) -> bytes:
    s, d = socket.inet_pton(V4, src), socket.inet_pton(V4, dst)
    return dport.to_bytes(2, "big") + s + PAD + d + PAD


def v6_key(src: str, dst: str, dport: int) -> bytes:
    def raw(a: str) -> bytes:
        return socket.inet_pton(V6, a) if ":" in a else MAPPED + socket.inet_pton(V4, a)

    return dport.to_bytes(2, "big") + raw(src) + raw(dst)


# (family, key, state, n): ties on `used` whose byte order is not their text order (.9/.10,
# 5000/80), a v4-mapped key that is the same destination as a v4 one, several states, IPv6
# and a state number the name table does not know.
SOCKETS = [
    (V4, v4_key("10.0.0.2", "10.0.0.10", 80), 6, 3),
    (V4, v4_key("10.0.0.2", "10.0.0.9", 80), 6, 3),
    (V4, v4_key("10.0.0.2", "10.0.0.9", 5000), 6, 3),
    (V4, v4_key("10.0.0.2", "10.0.0.5", 443), 6, 40),
    (V4, v4_key("10.0.0.2", "10.0.0.5", 443), 1, 7),
    (V6, v6_key("10.0.0.2", "10.0.0.5", 443), 1, 2),
    (V6, v6_key("10.0.0.2", "10.0.0.5", 443), 8, 1),
    (V6, v6_key("2001:db8::2", "2001:db8::5", 443), 6, 3),
    (V6, v6_key("2001:db8::2", "2001:db8::", 443), 6, 3),
    (V4, v4_key("32.1.13.184", "32.1.13.184", 443), 6, 3),
    (V6, v6_key("::1", "::1", 8080), 2, 1),
    (V4, v4_key("127.0.0.1", "127.0.0.7", 9), 14, 2),
]


def _counters() -> tuple[DestinationCounter, DestinationCounter]:
    """The same sockets counted raw and decoded (as the scan counted them before)."""
    raw, decoded = DestinationCounter(), DestinationCounter()
    for family, key, state, n in SOCKETS:
        raw.add_raw(family, key, state, n)
        decoded.add(decode_key(family, key), STATE_NAMES.get(state, str(state)), n)
    return raw, decoded


def raw_table() -> SocketTable:
    return _counters()[0].table("netlink")


def test_the_packed_table_reads_as_the_decoded_one() -> None:
    raw, decoded = _counters()
    table = raw.table("netlink", consume=True)
    assert isinstance(table.destinations, DestinationRows)
    want = decoded.table("netlink")
    assert to_jsonable(table) == to_jsonable(want)
    assert list(table.destinations) == list(want.destinations)
    assert table.destinations[1:3] == want.destinations[1:3]
    for stop in (0, 1, 2, 4, 5, 9, 20):
        assert raw_table().destinations[:stop] == want.destinations[:stop]
    assert table.destinations[-1] == want.destinations[-1]
    assert len(table.destinations) == len(want.destinations) == 9
    rows = table.rows
    assert sorted(rows.uses()) == sorted(d.used for d in want.destinations)
    for d in want.destinations:
        assert rows.find((d.src, d.dst, d.dport)) == d
        assert DestinationRows(want.destinations).find((d.src, d.dst, d.dport)) == d
    assert rows.find(("10.0.0.2", "10.0.0.5", 1)) is None
    assert rows.find(("::1", "::2", 1)) is None
    # one destination from any local address: what a reader of every row would pick
    for dst, dport in {(d.dst, d.dport) for d in want.destinations} | {("10.0.0.5", 1)}:
        every = [d for d in want.destinations if d.dst == dst and d.dport == dport]
        assert sorted(rows.to(dst, dport), key=str) == sorted(every, key=str)
        assert DestinationRows(want.destinations).to(dst, dport) == every
    assert rows.to("::ffff:10.0.0.5", 3306) == []  # text as given, as a reader compares it
    assert rows.to("not an address", 80) == []
    hot = rows.where(lambda used: used > 3)
    assert hot == [d for d in want.destinations if d.used > 3]
    back = facts_from_json(
        {**json.loads(FACTS), "sockets": json.loads(json.dumps(to_jsonable(table)))}
    )
    assert isinstance(back.sockets, SocketTable)
    assert back.sockets.destinations == want.destinations


def test_raw_counts_read_through_per_dest_are_the_decoded_ones() -> None:
    raw, decoded = _counters()
    raw.measure_reusable()
    raw.add_reusable(("10.0.0.2", "10.0.0.5", 443), 30)
    decoded.measure_reusable()
    decoded.add_reusable(("10.0.0.2", "10.0.0.5", 443), 30)
    assert raw.knows(("10.0.0.2", "10.0.0.5", 443)) and raw.knows(("::1", "::1", 8080))
    assert not raw.knows(("10.0.0.2", "10.0.0.5", 444))
    assert sorted(raw.time_wait_dests(loopback_only=False)) == sorted(
        d for d, c in decoded.per_dest.items() if c.get("TIME_WAIT")
    )
    assert raw.time_wait_dests(loopback_only=True) == []
    packed = raw.table("netlink")
    assert packed.destinations[0].time_wait_reusable == 30
    reusing, rest = packed.rows.split_reusable()
    assert [(d.dst, d.used, d.time_wait_reusable) for d in reusing] == [("10.0.0.5", 50, 30)]
    assert rest == 3
    plain = DestinationRows(tuple(packed.destinations))
    assert plain.split_reusable() == (reusing, rest)
    assert to_jsonable(packed) == to_jsonable(decoded.table("netlink"))
    assert raw.per_dest == decoded.per_dest  # decoded on first use, raw counts spent
    assert not raw.raw4 and not raw.raw6
    assert to_jsonable(raw.table("netlink")) == to_jsonable(decoded.table("netlink"))


RULE = """\
id: XX-001
name: test-rule
title: t
rationale: r
message: "{dest.used}"
subject: "{dest.endpoint}"
sources: [tcp(7)]
for_each: destinations
params: {warn_ratio: 0.5}
severity:
  warn: dest.ratio > params.warn_ratio
fix: {advice: a, applicability: display-only}
"""


@pytest.mark.parametrize("passing", [False, True])
def test_the_engine_makes_only_the_rows_that_can_fire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, passing: bool
) -> None:
    """Two sources to one endpoint tie on the subject: their findings keep the table's order."""
    counter = DestinationCounter()
    for i in range(300):
        counter.add_raw(V4, v4_key("10.0.0.2", f"10.0.{i // 250}.{i % 250 + 1}", 80), 6, 1)
    for src, n in (("10.0.0.3", 70), ("10.0.0.10", 70), ("10.0.0.4", 80)):
        counter.add_raw(V4, v4_key(src, "10.9.9.9", 80), 6, n)
    packed = counter.table("netlink", consume=True)
    plain = dataclasses.replace(packed, destinations=tuple(packed.destinations))
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "XX-001.yaml").write_text(RULE)
    spec = tmp_path / "case.yaml"
    spec.write_text(
        json.dumps(
            {
                "rule": "XX-001",
                "description": "d",
                "expect": [],
                "sysctl": {"net.ipv4.ip_local_port_range": "40000 40099"},
                "sockets": [],
            }
        )
    )
    root = build_tree(load_scenario(spec), tmp_path / "host")
    host = HostRoot(proc=root / "proc", root=root)
    facts = collect_facts(host)
    made: list[int] = []
    at = DestinationRows.at

    def counting(self: DestinationRows, i: int) -> object:
        made.append(i)
        return at(self, i)

    monkeypatch.setattr(DestinationRows, "at", counting)
    ruleset = load_rules([rules], builtin=False)
    config = load_config(host, None)
    got = evaluate(ruleset, dataclasses.replace(facts, sockets=packed), config, passing=passing)
    assert len(made) == (303 if passing else 3)
    want = evaluate(ruleset, dataclasses.replace(facts, sockets=plain), config, passing=passing)
    assert [(f.subject, f.message) for f in got.findings] == [
        (f.subject, f.message) for f in want.findings
    ]
    assert [f.message for f in got.findings] == ["80", "70", "70"]
    assert got.outcomes == want.outcomes


FACTS = json.dumps(
    {
        "schema": 1,
        "host": {"hostname": "h", "kernel": "6.1.0", "netns": "net:[1]"},
        "collected_at": 0.0,
        "sysctl": {},
        "sysctl_missing": {},
        "ports": {"unavailable": "x"},
        "sockstat": {"unavailable": "x"},
        "counters": {"unavailable": "x"},
        "sockets": {"unavailable": "x"},
        "files": {"unavailable": "x"},
        "persisted": {"unavailable": "x"},
    }
)


def test_used_and_time_wait_per_destination_through_a_kept_cache() -> None:
    """What `portaudit watch` reads each refresh: per destination (sockets, TIME_WAIT), the
    same as the decoded table says, with each key's text decoded once across refreshes."""
    raw, decoded = _counters()
    want = {d: (sum(c.values()), c.get("TIME_WAIT", 0)) for d, c in decoded.per_dest.items()}
    names: dict[tuple[bool, bytes], tuple[str, str, int]] = {}
    first = raw.used_and_time_wait(names)
    assert first == want
    assert len(names) == len(raw.raw4) + len(raw.raw6)
    kept = dict(names)
    again = raw.used_and_time_wait(names)
    assert again == want
    assert all(names[k] is kept[k] for k in kept)  # not decoded again
    assert raw.used_and_time_wait() == want  # without a cache
    names[(True, b"stale")] = ("1.1.1.1", "2.2.2.2", 1)
    raw.used_and_time_wait(names)
    assert (True, b"stale") not in names  # the cache holds this table's keys only
