"""`scan_sockets` skips the dumps whose answer sockstat already gives, with the same result.

Every dump walks the whole socket hash whatever it returns; at a million TIME_WAIT sockets a
walk that finds nothing costs as much as the one that counts them. Real sockets in a
test-made namespace: the scan with sockstat's totals must equal the scan without them, and
make fewer walks where the totals say a dump would find nothing.
"""

from __future__ import annotations

import json

import pytest

from tests.netns import make_netns, requires_netns

# Runs inside the namespace: makes the sockets of one case, scans twice (with sockstat's
# totals, and with them hidden, which makes every dump), prints both and the walks made.
PROGRAM = r"""
import json, socket, sys
from auditor.facts import netlink
from tests.scanned import scan_outputs

case = sys.argv[1]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 5000))
srv.listen(512)
held = []
for i in range(200):
    c = socket.socket()
    c.connect(("127.0.0.1", 5000))
    a, _ = srv.accept()
    if case == "live" and i < 20:
        held.append((c, a))  # open client connections (and their accepted ends)
        continue
    c.close()  # the client closes first: its side goes to TIME_WAIT
    a.close()
if case == "server-tw":
    for _ in range(30):  # the server closes first: TIME_WAIT on its own port, outside the range
        c = socket.socket()
        c.connect(("127.0.0.1", 5000))
        a, _ = srv.accept()
        a.close()
        c.recv(1)
        c.close()
if case != "listener":
    srv.close()

walks = []
real_one = netlink.DiagSocket._one
def counting_one(self, states, *args, **kw):
    walks.append(states)
    return real_one(self, states, *args, **kw)
netlink.DiagSocket._one = counting_one

def scan():
    return scan_outputs(netlink.scan_sockets(20000, 40000))

with_totals = scan()
n_with = len(walks)
states = list(walks)
walks.clear()
netlink.sockstat_totals = lambda proc_net="/proc/self/net": None
without = scan()
print(json.dumps({"with": with_totals, "without": without, "walks": [n_with, len(walks)],
                  "states": states}))
"""


@requires_netns
@pytest.mark.netns
@pytest.mark.parametrize(
    ("case", "fewer"),
    [("clients-tw", True), ("live", False), ("server-tw", False), ("listener", False)],
)
def test_skipped_walks_change_nothing(case: str, fewer: bool) -> None:
    with make_netns("pa-walk") as ns:
        ns.sysctl_write("net.ipv4.ip_local_port_range", "20000 40000")
        out = json.loads(ns.python("-c", PROGRAM, case).stdout)
    assert out["with"] == out["without"]
    assert out["with"]["totals"].get("TIME_WAIT", 0) >= 150, out["with"]["totals"]
    n_with, n_without = out["walks"]
    if fewer:
        # only TIME_WAIT clients and no listener: the live and the leftover walks are known empty
        assert n_with < n_without, out["walks"]
    else:
        assert n_with <= n_without, out["walks"]
    tw = 1 << 6  # TCP_TIME_WAIT
    walked = list(out["states"])
    walked.remove(tw)  # the TIME_WAIT dump itself
    leftover_tw = [s for s in walked if s & tw]
    if case == "server-tw":  # the server's TIME_WAIT sockets are only found by the leftover walk
        assert leftover_tw, out["states"]
    else:  # every TIME_WAIT socket was a client's (sockstat's total): no walk looks again
        assert not leftover_tw, out["states"]


# Runs inside the namespace: client TIME_WAIT sockets, a server's TIME_WAIT and open sockets
# on its port, bound-but-unconnected sockets in the range, and with "inside" a listener inside
# the range. Scans with the bound-but-inactive sockets read by their own request, then with
# them read by the TIME_WAIT dump.
BOUND_WITH_TIME_WAIT = r"""
import json, socket, sys
from auditor.facts import netlink
from tests.scanned import scan_outputs

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 5000))
srv.listen(512)
held = []
if sys.argv[1] == "inside":
    inside = socket.socket()
    inside.bind(("127.0.0.1", 30000))
    inside.listen(8)
    held.append(inside)
for i in range(120):
    c = socket.socket()
    c.connect(("127.0.0.1", 5000))
    a, _ = srv.accept()
    if i < 10:
        held.append((c, a))
    elif i < 30:  # the server closes first: TIME_WAIT on its port
        a.close()
        c.recv(1)
        c.close()
    else:
        c.close()
        a.close()
for _ in range(3):
    b = socket.socket()
    b.bind(("127.0.0.1", 0))
    held.append(b)

def scan(ahead):
    s = netlink.scan_sockets(20000, 40000, None, 0 if ahead else None)
    prefetched = s._bound is not None and s._bound[2] is not None
    bound, n = s.bound_ports(20000, 40000)
    return {
        **scan_outputs(s),
        "bound": [sorted(bound), n],
        "prefetched": prefetched,
    }

print(json.dumps({"one": scan(False), "two": scan(True)}))
"""


@requires_netns
@pytest.mark.netns
@pytest.mark.parametrize("listener", ["outside", "inside"])
def test_bound_sockets_read_with_the_time_wait_dump_change_nothing(listener: str) -> None:
    with make_netns("pa-walk2") as ns:
        ns.sysctl_write("net.ipv4.ip_local_port_range", "20000 40000")
        out = json.loads(ns.python("-c", BOUND_WITH_TIME_WAIT, listener).stdout)
    one, two = out["one"], out["two"]
    assert not one.pop("prefetched") and two.pop("prefetched")
    assert one == two
    assert one["totals"]["TIME_WAIT"] >= 110 and one["totals"]["ESTABLISHED"] >= 20, one
    if one["bound"][1]:  # Linux 6.7+ dumps bound-but-inactive sockets
        assert one["bound"][1] == 3 and len(one["bound"][0]) == 3
