"""Collectors against fixture trees captured from real kernels, compared to golden facts JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditor.facts.collect import collect_facts
from auditor.facts.model import PortRange, SocketTable, facts_from_json, to_jsonable
from auditor.facts.sockets import DestinationCounter, parse_proc_tcp
from auditor.facts.sysctl import parse_reserved_ports
from auditor.hostfs import HostRoot
from tests.helpers import ROOTS

GOLDEN = Path(__file__).parent / "golden"
TREES = sorted(p.name for p in ROOTS.iterdir() if (p / "proc").is_dir())


def facts_json(name: str) -> dict[str, object]:
    root = ROOTS / name
    data = to_jsonable(collect_facts(HostRoot(proc=root / "proc", root=root)))
    data["collected_at"] = 0.0
    # reasons name the files they could not read; the checkout's location is not part of that
    text = json.dumps(data).replace(str(ROOTS), "<roots>")
    return json.loads(text)  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", TREES)
def test_facts_match_golden(name: str, update_golden: bool) -> None:
    got = facts_json(name)
    golden = GOLDEN / f"facts-{name}.json"
    if update_golden:
        golden.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(golden.read_text())


@pytest.mark.parametrize("name", TREES)
def test_snapshot_round_trips(name: str) -> None:
    root = ROOTS / name
    facts = collect_facts(HostRoot(proc=root / "proc", root=root))
    assert facts_from_json(json.loads(json.dumps(to_jsonable(facts)))) == facts


def test_busy_client_counts_per_destination() -> None:
    root = ROOTS / "busy-client"
    facts = collect_facts(HostRoot(proc=root / "proc", root=root))
    assert isinstance(facts.sockets, SocketTable) and isinstance(facts.ports, PortRange)
    db = facts.sockets.destinations[0]
    assert (db.src, db.dst, db.dport) == ("10.0.0.2", "10.0.0.5", 3306)
    assert db.used == 350 and db.by_state["TIME_WAIT"] == 340
    # server-side sockets (local port 3306, outside the range) are not destinations
    assert all(d.dport in (3306, 6379) for d in facts.sockets.destinations)
    assert facts.ports.usable == 400


def _tcp_line(i: int, local: str, remote: str, state: str) -> str:
    return f"  {i:>3}: {local} {remote} {state} 00000000:00000000 00:00000000 00000000     0        0 0 1 0 100 0 0 10 0"


HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"


def test_ipv4_mapped_ipv6_counts_as_the_ipv4_destination() -> None:
    # ::ffff:10.0.0.5 as the kernel prints it on little-endian: three words, then 0500000A
    mapped_src = "0000000000000000FFFF00000200000A"
    mapped_dst = "0000000000000000FFFF00000500000A"
    counter = DestinationCounter()
    ports = PortRange(low=40000, high=40099, reserved=(), usable=100)
    parse_proc_tcp(
        [HEADER, _tcp_line(0, "0200000A:9C40", "0500000A:0CEA", "06")], "tcp", 4, ports, counter
    )
    parse_proc_tcp(
        [HEADER, _tcp_line(0, f"{mapped_src}:9C41", f"{mapped_dst}:0CEA", "01")],
        "tcp6",
        6,
        ports,
        counter,
    )
    table = counter.table("proc")
    assert len(table.destinations) == 1
    d = table.destinations[0]
    assert (d.src, d.dst, d.dport, d.by_state) == (
        "10.0.0.2",
        "10.0.0.5",
        3306,
        {"ESTABLISHED": 1, "TIME_WAIT": 1},
    )


def test_ipv6_destination_text() -> None:
    counter = DestinationCounter()
    ports = PortRange(low=40000, high=40099, reserved=(), usable=100)
    loop6 = "00000000000000000000000001000000"  # ::1
    parse_proc_tcp(
        [HEADER, _tcp_line(0, f"{loop6}:9C40", f"{loop6}:1F90", "06")], "tcp6", 6, ports, counter
    )
    d = counter.table("proc").destinations[0]
    assert (d.src, d.dst, d.dport) == ("::1", "::1", 8080)


@pytest.mark.parametrize(
    ("text", "ranges"),
    [("", ()), ("8080", ((8080, 8080),)), ("8080,9000-9009", ((8080, 8080), (9000, 9009)))],
)
def test_reserved_ports(text: str, ranges: tuple[tuple[int, int], ...]) -> None:
    assert parse_reserved_ports(text, "x") == ranges


def test_usable_subtracts_reserved_inside_range_only(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOTS / "busy-client", tmp_path / "r", symlinks=True)
    (tmp_path / "r/proc/sys/net/ipv4/ip_local_reserved_ports").write_text(
        "80,40000-40009,40399,50000\n"
    )
    facts = collect_facts(HostRoot(proc=tmp_path / "r/proc", root=tmp_path / "r"))
    assert isinstance(facts.ports, PortRange)
    assert facts.ports.usable == 400 - 11
