"""Listener facts without a kernel: the /proc reader's queue, backlog and v6only estimate,
the readers' agreement on which ports are a server's, and the listener row fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from auditor.config import load_config
from auditor.engine.expr import Missing
from auditor.engine.names import SUBJECT_KINDS
from auditor.facts.collect import collect_facts
from auditor.facts.model import Listener, PortRange, SocketTable
from auditor.facts.sockets import parse_proc_tcp, read_listeners
from auditor.facts.tcp import DestinationCounter
from auditor.hostfs import HostRoot
from tests.scenario import socket_line

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
PORTS = PortRange.parse("20000 40000")


def test_a_listen_lines_rx_queue_is_its_accept_queue_and_its_backlog_unknown() -> None:
    counter = DestinationCounter()
    line = socket_line(0, 4, "0.0.0.0", 8080, "0.0.0.0", 0, "LISTEN", 77, rx_queue=3)
    parse_proc_tcp([HEADER, line], "tcp", 4, PORTS, counter)
    (li,) = counter.table("proc").listeners
    assert (li.queued, li.backlog) == (3, None)


def test_an_ipv4_socket_on_a_port_only_an_ipv6_listener_holds_is_a_servers() -> None:
    """/proc/net/tcp comes before tcp6: reading both files' listeners first keeps the IPv4
    socket on 30010 out of the destinations, as netlink (which dumps listeners first) does."""
    tcp = [HEADER, socket_line(0, 4, "127.0.0.1", 30010, "127.0.0.1", 5000, "ESTABLISHED", 5)]
    tcp6 = [HEADER, socket_line(0, 6, "::", 30010, "::", 0, "LISTEN", 6)]
    counter = DestinationCounter()
    read_listeners(tcp, "tcp", 4, counter)
    read_listeners(tcp6, "tcp6", 6, counter)
    parse_proc_tcp(tcp, "tcp", 4, PORTS, counter)
    parse_proc_tcp(tcp6, "tcp6", 6, PORTS, counter)
    table = counter.table("proc")
    assert table.destinations == ()
    assert table.total_by_state == {"ESTABLISHED": 1, "LISTEN": 1}
    assert counter.listener_inodes == {("::", 30010, 6): {6}}


def test_v6only_from_proc_is_the_bindv6only_estimate_and_says_so() -> None:
    counter = DestinationCounter()
    counter.v6only_estimate = True
    counter.add_listener("::", 80, 6, 0, None)
    counter.add_listener("0.0.0.0", 80, 4, 0, None)
    counter.add_listener("::", 443, 6, 0, 128, v6only=False)
    got = {(li.addr, li.port): li for li in counter.table("x").listeners}
    assert (got[("::", 80)].v6only, got[("::", 80)].v6only_source) == (
        True,
        "estimate: net.ipv6.bindv6only",
    )
    assert (got[("0.0.0.0", 80)].v6only, got[("0.0.0.0", 80)].v6only_source) == (None, "")
    assert (got[("::", 443)].v6only, got[("::", 443)].v6only_source) == (False, "sock_diag")


def test_listener_fields_compute_with_live_facts(tmp_path: Path) -> None:
    """The fields a /proc tree leaves unavailable compute from the facts a live host gives."""
    busy = Path(__file__).parent / "fixtures" / "roots" / "busy-server"
    host = HostRoot(proc=busy / "proc", root=busy)
    facts = collect_facts(host)
    assert isinstance(facts.sockets, SocketTable)
    live = Listener("::", 8080, 6, queued=2, backlog=1, v6only=True, v6only_source="sock_diag",
                    pid=42, command="app", fds=30, fd_limit=32, fds_free=3)  # fmt: skip
    facts = dataclasses.replace(
        facts, sockets=dataclasses.replace(facts.sockets, listeners=(live,))
    )
    (row,) = SUBJECT_KINDS["listeners"].rows(facts, load_config(host, None))
    for name in SUBJECT_KINDS["listeners"].names:
        assert not isinstance(row[name], Missing), name
    assert row["listener.queue_full"] is True
    assert row["listener.ipv6_only"] is True
    # the numbers taken below the limit decide (one of the 30 lies above it)
    assert row["listener.fd_ratio"] == 29 / 32
    assert row["listener.holder"] == " (held by pid 42, app)"
