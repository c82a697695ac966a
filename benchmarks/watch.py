"""Benchmark: `portaudit watch` refreshes at N TIME_WAIT sockets: cost per refresh against
`ss -tan state time-wait | wc -l`, and memory over many refreshes.

Run as root from the repository root (see benchmarks/README.md):

    python3 benchmarks/watch.py --n 1000000 [--seconds 45]

It makes a fresh network namespace and fills it with N client-side TIME_WAIT sockets as
benchmarks/sockets.py does (its helpers), then, inside it, refreshes back to back (no sleep: the
worst case of a short --interval) for `--seconds`, timing each refresh and reading this
process's resident memory after each, and times the `ss` pipeline every tenth refresh. The
sockets expire 60 s after they were made, so the run stops before that. Prints one Markdown
table row. The namespace is deleted afterwards, which frees its sockets.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from sockets import _run, make_time_wait, tw_count, write_sysctl


def rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def inside(n: int, seconds: float) -> None:
    from auditor.hostfs import HostRoot
    from auditor.watch.sample import Sampler
    from auditor.watch.view import frame, frame_json

    write_sysctl("net.ipv4.ip_local_port_range", "1024 65535")
    write_sysctl("net.ipv4.tcp_max_tw_buckets", str(4 * n))
    write_sysctl("net.ipv4.tcp_tw_reuse", "0")
    write_sysctl("net.ipv4.ip_local_reserved_ports", "5000-5001")
    made = make_time_wait(n)
    start = time.monotonic()
    sampler = Sampler(HostRoot())
    prev = sampler.sample()
    costs: list[float] = []
    rss: list[int] = []
    ss: list[float] = []
    found = 0
    while time.monotonic() - start < seconds:
        cur = sampler.sample()
        frame_json(frame(prev, cur))  # the work a JSON line does, beyond the sample
        costs.append(cur.cost)
        rss.append(rss_kib())
        found = cur.time_wait
        prev = cur
        if len(costs) % 10 == 1:
            ss.append(_run([["ss", "-tan", "state", "time-wait"], ["wc", "-l"]])[0])
    warm = rss[min(4, len(rss) - 1)]
    cost, base = statistics.median(costs), statistics.median(ss)
    mib = " | ".join(f"{k / 1024:.0f}" for k in (rss[0], warm, max(rss), rss[-1]))
    print(
        f"| {n:,} (made in {made:.0f} s, {found:,} seen, {tw_count():,} at the end) "
        f"| {len(costs)} | {cost:.3f} | {max(costs):.3f} | {base:.3f} | {cost / base:.2f}x "
        f"| {mib} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(args.n, args.seconds)
        return
    if os.geteuid() != 0:
        sys.exit("benchmarks/watch.py: needs root (it creates a network namespace)")
    print(
        "| N TIME_WAIT | refreshes | refresh s (median) | refresh s (max) | `ss \\| wc -l` s "
        "| refresh / ss | RSS MiB first | after 5 | max | last |\n" + "|---" * 10 + "|"
    )
    name = f"pa-bench-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        argv = [sys.executable, str(Path(__file__).resolve()), "--inside", "--n", str(args.n)]
        argv += ["--seconds", str(args.seconds)]
        subprocess.run(["ip", "netns", "exec", name, *argv], check=True, timeout=600)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


if __name__ == "__main__":
    main()
