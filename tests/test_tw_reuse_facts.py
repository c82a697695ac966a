"""Which TIME_WAIT sockets connect() may take over: ages from both readers' timer fields."""

from __future__ import annotations

import pytest

from auditor.errors import InputError
from auditor.facts.model import PortRange
from auditor.facts.netlink import TW_AGE_STEP_MS, count_reusable
from auditor.facts.sockets import parse_proc_tcp
from auditor.facts.tcp import DestinationCounter
from auditor.facts.twreuse import reusable_after_left
from tests.scenario import socket_line

PORTS = PortRange(low=40000, high=40099, reserved=(), usable=100)
HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when"


def _tw(sport: int, left: float) -> str:
    return socket_line(sport, 4, "10.0.0.2", sport, "10.0.0.5", 3306, "TIME_WAIT", 0, left)


def test_proc_reader_counts_time_wait_older_than_the_delay() -> None:
    lines = [HEADER, _tw(40000, 59.95), _tw(40001, 59.5), _tw(40002, 58.9), _tw(40003, 1.0)]
    counter = DestinationCounter()
    parse_proc_tcp(lines, "tcp", 4, PORTS, counter, reuse_delay_ms=1000)
    (dest,) = counter.table("proc").destinations
    assert dest.by_state == {"TIME_WAIT": 4}
    assert dest.time_wait_reusable == 2  # 1.1 s and 59 s old; 0.05 s and 0.5 s are not


def test_proc_reader_without_a_delay_does_not_measure() -> None:
    counter = DestinationCounter()
    parse_proc_tcp([HEADER, _tw(40000, 1.0)], "tcp", 4, PORTS, counter)
    assert counter.table("proc").destinations[0].time_wait_reusable is None


def test_a_bad_timer_field_names_the_file_and_line() -> None:
    bad = _tw(40000, 1.0).replace("03:", "03:zz", 1)
    with pytest.raises(InputError, match=r"tcp:3: malformed timer field"):
        parse_proc_tcp([HEADER, _tw(40001, 1.0), bad], "tcp", 4, PORTS, DestinationCounter(), 1000)


def test_netlink_steps_never_count_a_socket_that_may_be_younger() -> None:
    """A 256 ms step counts only when its whole span of time left is below the limit."""
    dest = ("10.0.0.2", "10.0.0.5", 3306)
    key = (2, b"k" * 34)
    limit = reusable_after_left(1000)  # 59000 ms left
    last_whole = limit // TW_AGE_STEP_MS - 1  # steps ending at or below 59000 ms
    counts = {
        (2, 6, key[1], last_whole): 3,
        (2, 6, key[1], last_whole + 1): 5,  # straddles 59000 ms: may be younger
        (2, 6, key[1], 0): 7,
        (2, 6, b"x" * 34, 0): 11,  # another destination, not asked for
    }
    got = count_reusable(counts, {dest: {key}}, limit)  # type: ignore[arg-type]
    assert got == {dest: 10}
