"""Acceptance: diagnose reads this host's own output rules when the target is this host too.

A probe to 127.0.0.1 leaves through the output hook like any other; an output-chain REJECT
of the port used to leave every cause ruled out (the server listens, the input chain is
clear) and no next step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.netns import REPO, make_netns, requires_netns

PORT = 8086

LISTEN = """
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", %d))
s.listen(16)
def serve():
    held = []
    while True:
        c, _ = s.accept()
        held.append(c)  # accepted and kept open: a server that waits for the client to speak
threading.Thread(target=serve, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


@requires_netns
@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables (the 'nft' command)")
def test_output_chain_reject_to_a_local_target_is_the_likely_cause() -> None:
    with make_netns("pa-acc-fwout") as ns:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, sys.executable, "-c", LISTEN % PORT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            ns.run(["nft", "add", "table", "inet", "acc"])
            ns.run(["nft", "add chain inet acc out { type filter hook output priority 0; }"])
            ns.run(["nft", "add", "rule", "inet", "acc", "out", "tcp", "dport", str(PORT),
                    "reject", "with", "tcp", "reset"])  # fmt: skip
            run = ns.portaudit(
                "diagnose", f"127.0.0.1:{PORT}", "--timeout", "1", "--attempts", "1",
                "--format", "json",
            )  # fmt: skip
            assert run.returncode == 1, run.stderr
            report = json.loads(run.stdout)
            assert report["verdict"] == "refused"
            assert report["likely"] == ["fw-out"], report["likely"]
            ns.run(["nft", "delete", "table", "inet", "acc"])
            clear = json.loads(
                ns.portaudit(
                    "diagnose", f"127.0.0.1:{PORT}", "--timeout", "1", "--attempts", "1",
                    "--format", "json",
                ).stdout
            )  # fmt: skip
            assert clear["verdict"] == "ok" and clear["likely"] == [], clear["likely"]
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(timeout=10)
