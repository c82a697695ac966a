"""tcp_tw_reuse frees a TIME_WAIT port only when its connection used TCP timestamps. No dump
shows that per socket, so when the peer turns them off connect() fails at the raw count while
the reuse credit says the ports are free: the audit must not then say "No findings"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.netns import make_netns, requires_netns

SERVE = """
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("10.77.0.2", 5000))
srv.listen(4096)
srv.settimeout(30)
print("ready", flush=True)
try:
    while True:
        s, _ = srv.accept()
        s.recv(1)  # the client closes first: its side keeps the TIME_WAIT
        s.close()
except OSError:
    pass
"""

CONNECT_UNTIL_FULL = """
import errno, json, socket
ok, full = 0, False
for _ in range(%d):
    c = socket.socket()
    c.settimeout(5)
    try:
        c.connect(("10.77.0.2", 5000))
    except OSError as exc:
        c.close()
        if exc.errno == errno.EADDRNOTAVAIL:
            full = True
            break
        continue  # a slow handshake under load is not what this test is about
    c.close()
    ok += 1
print(json.dumps({"ok": ok, "eaddrnotavail": full}))
"""


@requires_netns
def test_reuse_credit_without_peer_timestamps_is_not_a_clean_audit() -> None:
    with make_netns("pa-tsc") as client, make_netns("pa-tss") as server:
        client.run(
            [
                "ip",
                "link",
                "add",
                "tsc0",
                "type",
                "veth",
                "peer",
                "name",
                "tss0",
                "netns",
                server.name,
            ]
        )
        client.run(["ip", "addr", "add", "10.77.0.1/24", "dev", "tsc0"])
        client.run(["ip", "link", "set", "tsc0", "up"])
        server.run(["ip", "addr", "add", "10.77.0.2/24", "dev", "tss0"])
        server.run(["ip", "link", "set", "tss0", "up"])
        client.sysctl_write("net.ipv4.ip_local_port_range", "40000 40099")
        client.sysctl_write("net.ipv4.tcp_tw_reuse", "1")
        client.sysctl_write("net.ipv4.tcp_timestamps", "1")
        if os.path.exists("/proc/sys/net/ipv4/tcp_tw_reuse_delay"):
            client.sysctl_write("net.ipv4.tcp_tw_reuse_delay", "1")
        server.sysctl_write("net.ipv4.tcp_timestamps", "0")
        env = dict(os.environ)
        srv = subprocess.Popen(
            ["ip", "netns", "exec", server.name, sys.executable, "-c", SERVE],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
            first = json.loads(client.python("-c", CONNECT_UNTIL_FULL % 300).stdout)
            assert first["ok"] >= 90 and first["eaddrnotavail"], first
            time.sleep(1.5)  # past tcp_tw_reuse_delay: credited as reusable from now on
            again = json.loads(client.python("-c", CONNECT_UNTIL_FULL % 3).stdout)
            # The kernel is the judge: without timestamps no TIME_WAIT port is reused.
            assert again == {"ok": 0, "eaddrnotavail": True}, again
            run = client.portaudit("audit", "--format", "json", "--only", "EPH-001")
        finally:
            srv.kill()
            srv.wait(timeout=10)
    report = json.loads(run.stdout)
    eph = [f for f in report["findings"] if f["id"] == "EPH-001"]
    assert eph, report
    assert eph[0]["evidence"]["used"] >= 90
    assert eph[0]["evidence"]["time_wait_reusable"] > 0
    assert eph[0]["severity"] == "info" and "TCP timestamps" in eph[0]["title"]
