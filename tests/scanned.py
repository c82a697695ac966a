"""What one socket scan found, as plain data two scans can be compared by: imported by the
programs the scan tests run inside their namespaces."""

from __future__ import annotations

from auditor.facts.netlink import NetlinkScan


def scan_outputs(scan: NetlinkScan) -> dict[str, object]:
    """Totals by state, per-destination counts, the live ports and the TIME_WAIT ports."""
    c = scan.counts
    return {
        "totals": dict(c.totals),
        "per_dest": sorted((str(k), sorted(v.items())) for k, v in c.per_dest.items()),
        "ports": sorted(scan.ports or ()),
        "tw_ports": sorted(scan.time_wait_ports),
    }
