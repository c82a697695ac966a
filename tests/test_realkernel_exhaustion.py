"""Real EADDRNOTAVAIL in a namespace the test makes, and what `portaudit audit` says about it."""

from __future__ import annotations

import json

from tests.netns import make_netns, requires_netns

SERVER_PORT = 5000  # outside the test range, so the listener does not take one of its ports


@requires_netns
def test_exhausted_destination_is_crit_with_evidence() -> None:
    with make_netns("pa-eph") as ns:
        ns.sysctl_write("net.ipv4.ip_local_port_range", "40000 40099")
        ns.sysctl_write("net.ipv4.tcp_tw_reuse", "0")  # default 2 would recycle loopback ports
        run = ns.python("-m", "tests.workloads.exhaust", "--port", str(SERVER_PORT), "--max", "300")
        workload = json.loads(run.stdout)
        assert workload["eaddrnotavail"], workload
        assert workload["connected"] == 100

        result = ns.portaudit("audit", "--format", "json", "--no-state")
        assert result.returncode == 1, result.stderr
        report = json.loads(result.stdout)
        eph = [f for f in report["findings"] if f["id"] == "EPH-001"]
        assert len(eph) == 1, eph
        finding = eph[0]
        assert finding["severity"] == "crit"
        assert finding["subject"] == f"127.0.0.1 -> 127.0.0.1:{SERVER_PORT}"
        ev = finding["evidence"]
        assert (ev["used"], ev["capacity"]) == (100, 100)
        assert ev["by_state"]["TIME_WAIT"] == 100
        assert (ev["src"], ev["dst"], ev["dport"]) == ("127.0.0.1", "127.0.0.1", SERVER_PORT)
        assert report["summary"]["crit"] >= 1
        assert report["host"]["netns"].startswith("net:[")


@requires_netns
def test_idle_namespace_has_no_port_findings() -> None:
    with make_netns("pa-idle") as ns:
        result = ns.portaudit("audit", "--format", "json", "--only", "EPH-001", "--no-state")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["findings"] == []
