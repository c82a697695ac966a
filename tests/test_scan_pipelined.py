"""The TIME_WAIT dump read on a second thread (`DiagSocket._pipelined`) gives the scan the
synchronous read gives, and leaves the socket clean for the next request.

The pipelined read is only chosen above `PIPELINE_ABOVE` sockets, so these tests force it on
a few thousand real sockets in a test-made namespace and compare every output of the scan.
"""

from __future__ import annotations

import json

import pytest

from tests.netns import make_netns, requires_netns

PROGRAM = r"""
import json, socket, sys
from auditor.facts import netlink
from tests.scanned import scan_outputs

case = sys.argv[1]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 30000 if case == "listener-in-range" else 5000))
srv.listen(4096)
port = srv.getsockname()[1]
held = []
for i in range(3000):
    c = socket.socket(socket.AF_INET6 if i % 3 == 0 else socket.AF_INET)
    host = "::ffff:127.0.0.1" if i % 3 == 0 else "127.0.0.%d" % (1 + i % 2)
    c.connect((host, port))
    a, _ = srv.accept()
    if i < 10:  # open connections: the live dump and the leftover walk run beside
        held.append((c, a))
        continue
    if i < 30:  # the server closes first: TIME_WAIT on its port, for the leftover walk
        a.close()
        c.recv(1)
        c.close()
        continue
    c.close()  # the client closes first: its side goes to TIME_WAIT
    a.close()
for _ in range(5):  # bound but never connected: they come with the TIME_WAIT dump
    b = socket.socket()
    b.bind(("127.0.0.1", 0))
    held.append(b)

used = []
real = netlink.DiagSocket._pipelined
def spy(self, *args, **kw):
    used.append(True)
    return real(self, *args, **kw)
netlink.DiagSocket._pipelined = spy
beside = []
real_beside = netlink._Beside
def beside_spy(work):
    beside.append(True)
    return real_beside(work)
netlink._Beside = beside_spy

def scan(above):
    netlink.PIPELINE_ABOVE = above
    s = netlink.scan_sockets(20000, 40000, bound_above=0)
    return {
        **scan_outputs(s),
        "bound": sorted(s.bound_ports(20000, 40000)[0]),
        "prefetched": s._bound is not None and s._bound[2] is not None,
    }

sync = scan(10**12)
n_sync = len(used)
piped = scan(0)
print(json.dumps({"sync": sync, "piped": piped, "used": [n_sync, len(used)], "beside": len(beside)}))
"""


@requires_netns
@pytest.mark.netns
@pytest.mark.parametrize("case", ["clients", "listener-in-range"])
def test_pipelined_scan_equals_the_synchronous_one(case: str) -> None:
    with make_netns("pa-pipe") as ns:
        ns.sysctl_write("net.ipv4.ip_local_port_range", "20000 40000")
        ns.sysctl_write("net.ipv4.tcp_tw_reuse", "0")
        run = ns.python("-c", PROGRAM, case, timeout=120)
    got = json.loads(run.stdout)
    assert got["used"] == [0, 1], got["used"]  # only the forced scan read on two threads
    assert got["beside"] == 1  # ...with its other dumps on a third
    assert got["sync"]["totals"]["TIME_WAIT"] == 2990
    assert got["sync"]["totals"]["ESTABLISHED"] == 20  # both ends of the open connections
    assert got["piped"] == got["sync"]
    assert got["sync"]["prefetched"]  # the bound sockets came with the scan, either way
    assert len(got["sync"]["bound"]) == 5 or not got["sync"]["bound"]  # none before Linux 6.7


REFUSED = r"""
import json
from auditor.facts import netlink

out = {}
with netlink.DiagSocket() as diag:
    for pipelined in (False, True):
        try:
            diag.dump(1 << netlink.TIME_WAIT_STATE, netlink.AGG_FORMAT, b"\xff" * 8,
                      pipelined=pipelined)
            out[str(pipelined)] = "no error"
        except netlink.NetlinkRefused as exc:
            out[str(pipelined)] = "refused"
    # the same socket still answers the next request, whole and in order
    out["after"] = sum(diag.dump(1 << netlink.LISTEN_STATE, netlink.AGG_FORMAT).values())
print(json.dumps(out))
"""


@requires_netns
@pytest.mark.netns
def test_pipelined_dump_refused_like_the_synchronous_one() -> None:
    """A request the kernel refuses (a filter program it rejects) raises the same error on
    both paths, and the reader thread has stopped: the socket's next dump is intact."""
    with make_netns("pa-pipe") as ns:
        ns.run(["true"])
        run = ns.python("-c", "import socket; s = socket.socket(); s.bind(('127.0.0.1', 7000));"
                        " s.listen(); exec(open(0).read())", input=REFUSED, timeout=60)  # fmt: skip
    got = json.loads(run.stdout)
    assert got == {"False": "refused", "True": "refused", "after": 1}, got
