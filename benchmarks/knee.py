"""Benchmark: connect() latency against the share of the port range in use, one destination.

Run as root from the repository root (see benchmarks/README.md):

    python3 benchmarks/knee.py --range 2000 --range 10000 --time-wait-range 28232 \
        --svg benchmarks/knee.svg --json benchmarks/knee.json

For each range size it makes a fresh network namespace, sets `ip_local_port_range` inside it
only to that many ports (`tcp_tw_reuse = 0`, so nothing is recycled), listens on 127.0.0.1,
and opens connections to that one listener until connect() fails with EADDRNOTAVAIL or the
range is used, keeping every client socket open (`--range`) or leaving each in TIME_WAIT
(`--time-wait-range`: the client closes first, as a burst of short requests does). Each
connect() is timed alone (`perf_counter_ns` around the call; the accept() that follows is not
timed). Latencies are grouped by the share of the usable range in use when the call started,
in 5% bins, and the median, 90th percentile and maximum of each bin are printed as a Markdown
table, written as JSON with `--json` and drawn as an SVG with `--svg` (written by hand: no
plotting dependency). The namespace is deleted afterwards, which frees its sockets.

Why the knee exists: `__inet_hash_connect` walks the range from a per-destination offset and
tries every other port first (the same parity as the range's low end), so until half the range
is used a free port is found within a few steps; past that, each connect() walks the whole used
half before it tries the other one, and every step takes a hash-bucket lock (and, for a port
in TIME_WAIT, checks whether that socket may be reused).
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

LOW = 40000
SERVER_PORT = 5000
BIN = 0.05


def _in_netns(argv: list[str]) -> str:
    """Run this script's worker inside a fresh namespace; return what it printed."""
    name = f"pa-knee-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        return subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, *argv],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _write(key: str, value: str) -> None:
    """A per-netns sysctl: the worker only runs inside a namespace it was started in."""
    Path("/proc/sys/" + key.replace(".", "/")).write_text(value + "\n")


def measure(size: int, limit_s: float, time_wait: bool) -> list[tuple[int, int]]:
    """(ports in use before the call, connect() ns) for each connect() until the range is used.

    Ports are held by open client sockets (the server's side is closed at once, so one
    descriptor per port), or with `time_wait` by client-side TIME_WAIT sockets (the client
    closes first; no descriptor, but the sockets expire after 60 s, so the run must end
    sooner)."""
    low = min(LOW, (65536 - size) & ~1)
    _write("net.ipv4.ip_local_port_range", f"{low} {low + size - 1}")
    _write("net.ipv4.tcp_tw_reuse", "0")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = size + 64
    if not time_wait and soft < need:
        if hard < need:
            raise SystemExit(f"knee.py: {need} descriptors needed, hard limit {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", SERVER_PORT))
    server.listen(4096)
    held: list[socket.socket] = []
    samples: list[tuple[int, int]] = []
    deadline = time.monotonic() + limit_s
    try:
        made = 0
        while made < size and time.monotonic() < deadline:
            c = socket.socket()
            t0 = time.perf_counter_ns()
            try:
                c.connect(("127.0.0.1", SERVER_PORT))
            except OSError as exc:
                c.close()
                if exc.errno == errno.EADDRNOTAVAIL:
                    break
                raise
            samples.append((made, time.perf_counter_ns() - t0))
            made += 1
            accepted = server.accept()[0]
            if time_wait:
                c.close()
            else:
                held.append(c)
            accepted.close()
    finally:
        for s in held:
            s.close()
        server.close()
    return samples


def bins(samples: list[tuple[int, int]], size: int) -> list[dict[str, float]]:
    """Median, p90 and max connect() time in microseconds per 5% bin of the range in use."""
    groups: dict[int, list[int]] = {}
    for used, ns in samples:
        groups.setdefault(min(int(used / size / BIN), int(1 / BIN) - 1), []).append(ns)
    out = []
    for b in sorted(groups):
        v = sorted(groups[b])
        out.append(
            {
                "share": round(b * BIN, 2),
                "n": len(v),
                "median_us": statistics.median(v) / 1000,
                "p90_us": v[int(0.9 * (len(v) - 1))] / 1000,
                "max_us": v[-1] / 1000,
            }
        )
    return out


def table(results: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| range, ports held by | share in use | connects | median µs | p90 µs | max µs |",
        "|---|---|---|---|---|---|",
    ]
    for size, rows in results.items():
        for r in rows:
            lines.append(
                f"| {size} | {r['share']:.0%}-{r['share'] + BIN:.0%} | {r['n']:.0f} |"
                f" {r['median_us']:.1f} | {r['p90_us']:.1f} | {r['max_us']:.0f} |"
            )
    return "\n".join(lines)


def svg(results: dict[str, list[dict[str, float]]]) -> str:
    """Median connect() time (log scale) against the share in use, one line per range size."""
    w, h, left, right, top, bottom = 640, 400, 70, 20, 30, 50
    pw, ph = w - left - right, h - top - bottom
    values = [r["median_us"] for rows in results.values() for r in rows] or [1.0]
    lo = 10 ** math.floor(math.log10(max(min(values), 0.1)))
    hi = 10 ** math.ceil(math.log10(max(values) * 1.01))

    def x(share: float) -> float:
        return left + share * pw

    def y(us: float) -> float:
        return (
            top
            + ph
            - (math.log10(max(us, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph
        )

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="18" text-anchor="middle">connect() median latency vs share of '
        "the range in use (one destination)</text>",
    ]
    decade = lo
    while decade <= hi:
        out.append(
            f'<line x1="{left}" y1="{y(decade):.1f}" x2="{w - right}" y2="{y(decade):.1f}" '
            'stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{left - 6}" y="{y(decade) + 4:.1f}" text-anchor="end">{decade:g} µs</text>'
        )
        decade *= 10
    for i in range(0, 11):
        s = i / 10
        out.append(
            f'<line x1="{x(s):.1f}" y1="{top}" x2="{x(s):.1f}" y2="{top + ph}" stroke="#eee"/>'
        )
        out.append(f'<text x="{x(s):.1f}" y="{top + ph + 16}" text-anchor="middle">{s:.0%}</text>')
    out.append(
        f'<text x="{left + pw / 2}" y="{h - 10}" text-anchor="middle">ports in use for the '
        "destination / usable ports</text>"
    )
    warn = 0.45  # EPH-001's warn_ratio, set from this measurement
    out.append(
        f'<line x1="{x(warn):.1f}" y1="{top}" x2="{x(warn):.1f}" y2="{top + ph}" '
        'stroke="#888" stroke-dasharray="4,3"/>'
    )
    out.append(
        f'<text x="{x(warn) - 4:.1f}" y="{top + 80}" text-anchor="end" fill="#555">'
        "EPH-001 warns</text>"
    )
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for k, (size, rows) in enumerate(results.items()):
        colour = colours[k % len(colours)]
        pts = " ".join(f"{x(r['share'] + BIN / 2):.1f},{y(r['median_us']):.1f}" for r in rows)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
        out.append(f'<text x="{left + 10}" y="{top + 16 + 16 * k}" fill="{colour}">{size}</text>')
    out.append(
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--range", type=int, action="append", help="ports in the range (2000)")
    ap.add_argument("--limit", type=float, default=240.0, help="seconds per range at most")
    ap.add_argument("--svg", type=Path, help="write the plot here")
    ap.add_argument("--json", type=Path, help="write the bins here")
    ap.add_argument(
        "--time-wait-range",
        type=int,
        action="append",
        default=[],
        help="a range whose ports are held in TIME_WAIT instead of open sockets (no descriptor"
        " limit; each such run stops after 55 s, before the first TIME_WAIT expires)",
    )
    ap.add_argument("--time-wait", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--from-json", type=Path, help="redraw --svg from an earlier --json file")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        samples = measure(args.worker, args.limit, args.time_wait)
        json.dump(bins(samples, args.worker), sys.stdout)
        return 0
    if args.from_json:
        results_in: dict[str, list[dict[str, float]]] = json.loads(args.from_json.read_text())
        print(table(results_in))
        if args.svg:
            args.svg.write_text(svg(results_in))
        return 0
    if os.geteuid() != 0:
        print("knee.py: needs root (it creates a network namespace)", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, float]]] = {}
    runs = [(n, False) for n in args.range or ([] if args.time_wait_range else [2000])]
    runs += [(n, True) for n in args.time_wait_range]
    for size, time_wait in runs:
        limit = min(args.limit, 55.0) if time_wait else args.limit
        argv = [os.path.abspath(__file__), "--worker", str(size), "--limit", str(limit)]
        argv += ["--time-wait"] if time_wait else []
        label = f"{size} ports, " + ("TIME_WAIT" if time_wait else "open sockets")
        results[label] = json.loads(_in_netns(argv))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.svg:
        args.svg.write_text(svg(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
