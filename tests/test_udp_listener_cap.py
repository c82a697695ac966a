"""UDP sockets bound outside the ephemeral range, on a real kernel in a namespace the test
makes: the facts list at most MAX_UDP_LISTENERS of them, lowest ports first, and say how many
they left out, so the list stays bounded however many sockets a resolver or media server holds
and nothing reads a cut list as complete (`fix` will not widen the range past ports it cannot
see). The cap is lowered in the subprocess instead of opening tens of thousands of sockets."""

from __future__ import annotations

import json

import pytest

from tests.netns import Netns, make_netns, requires_netns, workload

pytestmark = [requires_netns, pytest.mark.netns]

CAP = 8
RANGE = "net.ipv4.ip_local_port_range"
BASE_PORT = 20000  # outside 40000-40099, inside the widened 10000-65535

UDP_SOCKETS = r"""
import socket, sys
n = int(sys.argv[1])
held = []
for i in range(n):
    fam, addr = (socket.AF_INET, "127.0.0.1") if i % 2 == 0 else (socket.AF_INET6, "::1")
    u = socket.socket(fam, socket.SOCK_DGRAM); u.bind((addr, 20000 + i)); held.append(u)
print("ready", flush=True)
sys.stdin.read()
"""
"""`argv[1]` UDP sockets on ports 20000 and up, IPv4 and IPv6 in turn."""

CAPPED = r"""
import sys
from auditor.facts import portuse
portuse.MAX_UDP_LISTENERS = int(sys.argv[1])
sys.argv = ["portaudit", *sys.argv[2:]]
from auditor.auditcmd import main
main()
"""
"""The real console entry with the cap lowered: `CAPPED CAP portaudit-args...`."""

PROC_READER = r"""
import json, sys
from auditor.facts import portuse
from auditor.facts.model import PortRange
from auditor.hostfs import HostRoot
portuse.MAX_UDP_LISTENERS = int(sys.argv[1])
use = portuse.collect_port_use_proc(HostRoot(), PortRange(40000, 40099, (), 100))
print(json.dumps({"ports": [li.port for li in use.udp_listeners],
                  "omitted": use.udp_listeners_omitted}))
"""
"""The /proc reader (fixtures, --proc, no sock_diag) on the same sockets, capped alike."""


def capped(ns: Netns, *args: str) -> str:
    run = ns.python("-c", CAPPED, str(CAP), *args, check=False)
    assert "Traceback" not in run.stderr, run.stderr
    return run.stdout


def udp_facts(ns: Netns, sockets: int) -> tuple[dict[str, object], int]:
    """The port_use fact with `sockets` UDP sockets open, and the facts JSON's length."""
    with workload(ns, UDP_SOCKETS, str(sockets)):
        out = capped(ns, "facts")
        proc = json.loads(ns.python("-c", PROC_READER, str(CAP)).stdout)
    use: dict[str, object] = json.loads(out)["port_use"]
    assert proc == {
        "ports": [li["port"] for li in use["udp_listeners"]],  # type: ignore[attr-defined]
        "omitted": use["udp_listeners_omitted"],
    }, (proc, use)
    return use, len(out)


def test_udp_sockets_beyond_the_cap_are_counted_not_listed() -> None:
    with make_netns("pa-udpcap") as ns:
        ns.sysctl_write(RANGE, "40000 40099")
        few, few_len = udp_facts(ns, 3 * CAP)
        many, many_len = udp_facts(ns, 40 * CAP)
    for use, total in ((few, 3 * CAP), (many, 40 * CAP)):
        listed = use["udp_listeners"]
        assert isinstance(listed, list)
        # the lowest ports first: the services sit below per-query and per-stream sockets
        assert [(li["port"], li["family"]) for li in listed] == [
            (BASE_PORT + i, 4 if i % 2 == 0 else 6) for i in range(CAP)
        ]
        assert use["udp_listeners_omitted"] == total - CAP
    # forty times the sockets, the same list; the facts grow by a few digits of counts
    # (listed, each of the 296 more would add over 100 bytes)
    assert many["udp_listeners"] == few["udp_listeners"]
    assert many_len - few_len < 100, (few_len, many_len)


def test_fix_does_not_widen_past_udp_sockets_the_facts_left_out() -> None:
    with make_netns("pa-udpfix") as ns:
        ns.sysctl_write(RANGE, "40000 40099")
        ns.sysctl_write("net.ipv4.tcp_tw_reuse", "0")
        run = ns.python("-m", "tests.workloads.exhaust", "--port", "5000", "--max", "300")
        assert json.loads(run.stdout)["eaddrnotavail"] is True
        with workload(ns, UDP_SOCKETS, str(2 * CAP)):
            out = capped(ns, "fix", "--dry-run", "--for-host", "--only", "EPH-001")
        assert ns.sysctl_read(RANGE) == "40000 40099"
    assert (
        f"EPH-001: not widening {RANGE}: the facts list the UDP sockets bound outside it on"
        f" the lowest {CAP} ports and leave {CAP} sockets out"
    ) in out, out
    assert "10000 65535" not in out, out
