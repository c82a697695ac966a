"""Benchmark: this checkout's socket scan against another checkout's, in one process, by turns.

    python3 benchmarks/scan_ab.py --baseline /path/to/other/checkout --n 100000 [--turns 15]

Whole-process timings on a loaded 2-core machine vary by more than the difference looked for
(a few percent), and TIME_WAIT expires while they run. Here both versions of
`auditor/facts/netlink.py` are loaded into one process (the baseline's under another module
name; both share this checkout's `auditor.facts.tcp` and `auditor.errors`, which the baseline
must match) and `scan_sockets` of each runs alternately, the order swapped every turn, over the
same sockets in a fresh namespace. Each turn's ratio is per socket found; the median of the
ratios is printed, with the CPU time (`time.process_time`) and the wall time of each, for the
scan alone and for the scan plus the TIME_WAIT port set the port-use fact makes from it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))


def inside(baseline: Path, n: int, turns: int) -> None:
    from sockets import make_time_wait, write_sysctl

    from auditor.facts import netlink as new

    spec = importlib.util.spec_from_file_location(
        "baseline_netlink", baseline / "auditor" / "facts" / "netlink.py"
    )
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    write_sysctl("net.ipv4.ip_local_port_range", "1024 65535")
    write_sysctl("net.ipv4.tcp_max_tw_buckets", str(4 * n))
    write_sysctl("net.ipv4.tcp_tw_reuse", "0")
    write_sysctl("net.ipv4.ip_local_reserved_ports", "5000-5001")
    made = make_time_wait(n)

    def run(mod: object, ports: bool = False) -> tuple[float, float, int]:
        c0, w0 = time.process_time(), time.perf_counter()
        scan = mod.scan_sockets(1024, 65535)  # type: ignore[attr-defined]
        if ports:
            _ = scan.time_wait_ports  # what the port-use fact adds (the audit pays it)
        c1, w1 = time.process_time(), time.perf_counter()
        return c1 - c0, w1 - w0, scan.counts.totals["TIME_WAIT"]

    run(new), run(old)  # warm both
    cpu: dict[bool, list[float]] = {False: [], True: []}
    wall: dict[bool, list[float]] = {False: [], True: []}
    found = []
    for turn in range(turns):
        for ports in (False, True):
            runs = [(new, ports), (old, False)]
            got = {}
            for mod, p in runs if turn % 2 == 0 else runs[::-1]:
                got[mod] = run(mod, p)
            a, b = got[new], got[old]
            cpu[ports].append((a[0] / a[2]) / (b[0] / b[2]))
            wall[ports].append((a[1] / a[2]) / (b[1] / b[2]))
            found.append(a[2])
    print(
        f"| {n:,} (made in {made:.0f} s; {min(found):,}-{max(found):,} found) | {turns} "
        f"| {statistics.median(cpu[False]):.3f} | {statistics.median(wall[False]):.3f} "
        f"| {statistics.median(cpu[True]):.3f} | {statistics.median(wall[True]):.3f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, required=True)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--turns", type=int, default=15)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(args.baseline, args.n, args.turns)
        return
    if os.geteuid() != 0:
        sys.exit("benchmarks/scan_ab.py: needs root (it creates a network namespace)")
    print(
        "| N TIME_WAIT | turns | scan: CPU this/baseline per socket | wall | scan + port set:"
        " CPU | wall |"
    )
    print("|---|---|---|---|---|---|")
    name = f"pa-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        argv = [sys.executable, str(Path(__file__).resolve()), "--inside"]
        argv += ["--baseline", str(args.baseline), "--n", str(args.n), "--turns", str(args.turns)]
        subprocess.run(["ip", "netns", "exec", name, *argv], check=True, timeout=900)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    main()
