"""Benchmark: reading the TCP socket table at N TIME_WAIT sockets, against `ss`.

Run as root from the repository root (see benchmarks/README.md):

    python3 benchmarks/sockets.py --n 10000,100000,1000000 [--established] [--skip-slow]

For each N it makes a fresh network namespace, widens the port range and raises
`tcp_max_tw_buckets` inside it only, fills it with N client-side TIME_WAIT sockets (and with
`--established`, N open connections too) over many 127.x.y.z destinations, then times every
method in that namespace as a whole process: wall time (`time.perf_counter`), peak RSS
(`os.wait4` rusage), and for the Python methods the time of the call alone. The namespace is
deleted afterwards, which also frees its sockets. TIME_WAIT lasts 60 s (TCP_TIMEWAIT_LEN), so
the fast methods run first and the socket count is checked before and after each method.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing import Process
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PER_DEST = 28_000
"""TIME_WAIT sockets per destination: 43% of a 1024-65535 range, below EPH-001's warn ratio (so
the audit does its normal work, not the attribution walk). connect() takes even ports first
(the parity split of `__inet_hash_connect`) and scans every even port before trying an odd one
once that half is used: measured here, 20,000 connects/s drop to about 150/s past ~30,000
sockets to one destination. Staying below half the range keeps creation fast."""
TW_PORT = 5000
EST_PORT = 6000
WORKERS = 2
MAX_N = 2_000_000

# --- the methods, each run as its own process ----------------------------------------------
# Each snippet prints the seconds its call took (in-process time) and the number it found.

PROLOGUE = "import time, sys\n"

METHODS: dict[str, str] = {
    "python -c pass (interpreter floor)": "pass",
    "portaudit: count TIME_WAIT (netlink)": PROLOGUE
    + """
from auditor.facts import netlink as nl
t0 = time.perf_counter()
with nl.DiagSocket() as d:
    c = d.dump(1 << nl.TIME_WAIT_STATE, nl.COUNT_FORMAT)
n = sum(c.values())
print(time.perf_counter() - t0, n)
""",
    "portaudit: per-destination counts (netlink)": PROLOGUE
    + """
from auditor.facts.netlink import scan_sockets
t0 = time.perf_counter()
with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
    low, high = map(int, fh.read().split())
c = scan_sockets(low, high).counts
print(time.perf_counter() - t0, sum(s.get("TIME_WAIT", 0) for s in c.per_dest.values()))
""",
    "portaudit: per-destination SocketTable (netlink + facts model)": PROLOGUE
    + """
from auditor.facts.netlink import scan_sockets
from auditor.facts.sysctl import collect_sysctls, port_range
from auditor.hostfs import HostRoot
t0 = time.perf_counter()
h = HostRoot(); v, m = collect_sysctls(h); ports = port_range(v, m, h)
t = scan_sockets(ports.low, ports.high).table()
print(time.perf_counter() - t0, sum(d.by_state.get("TIME_WAIT", 0) for d in t.destinations))
""",
    "portaudit watch: one refresh (in-process median of 5; whole = start + 6 refreshes)": PROLOGUE
    + """
import statistics
from auditor.hostfs import HostRoot
from auditor.watch.sample import Sampler
s = Sampler(HostRoot())
s.sample()
costs = []
for _ in range(5):
    snap = s.sample()
    costs.append(snap.cost)
print(statistics.median(costs), sum(tw for _u, tw in snap.per_dest.values()))
""",
    "/proc/net/tcp{,6} parser (portaudit fallback)": PROLOGUE
    + """
from auditor.facts.sockets import collect_sockets_proc
from auditor.facts.sysctl import collect_sysctls, port_range
from auditor.hostfs import HostRoot
t0 = time.perf_counter()
h = HostRoot(); v, m = collect_sysctls(h); ports = port_range(v, m, h)
t = collect_sockets_proc(h, ports)
print(time.perf_counter() - t0, sum(d.by_state.get("TIME_WAIT", 0) for d in t.destinations))
""",
    "psutil.net_connections + Counter": PROLOGUE
    + """
import psutil
from collections import Counter
t0 = time.perf_counter()
c = Counter((x.laddr.ip, x.raddr.ip if x.raddr else "", x.raddr.port if x.raddr else 0, x.status)
            for x in psutil.net_connections("tcp"))
print(time.perf_counter() - t0, sum(n for k, n in c.items() if k[3] == "TIME_WAIT"))
""",
    "pyroute2 DiagSocket + Counter": PROLOGUE
    + """
import socket
from collections import Counter
from pyroute2 import DiagSocket
t0 = time.perf_counter()
c = Counter()
with DiagSocket() as ds:
    ds.bind()
    for fam in (socket.AF_INET, socket.AF_INET6):
        for m in ds.get_sock_stats(family=fam, states=1 << 6):
            c[(m["idiag_dst"], m["idiag_dport"], m["idiag_state"])] += 1
print(time.perf_counter() - t0, sum(c.values()))
""",
}
SLOW = {"psutil.net_connections + Counter", "pyroute2 DiagSocket + Counter"}


@dataclass
class Sample:
    wall: list[float] = field(default_factory=list)
    inproc: list[float] = field(default_factory=list)
    rss_kb: int = 0
    found: int | None = None
    note: str = ""
    founds: list[int] = field(default_factory=list)
    """What each run found (TIME_WAIT decays during a run: the A/B compares per socket)."""


def _run(argvs: list[list[str]], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run a pipeline of argv lists (stdout of each into the next); wall s, peak RSS KiB, out.

    Each command runs under `/usr/bin/time -f %M`, so its peak RSS is its own: the rusage of
    a child forked from this (bigger) process would start from our RSS.
    """
    procs: list[subprocess.Popen[bytes]] = []
    rss_files = []
    t0 = time.perf_counter()
    prev = None
    for argv in argvs:
        fd, rss_path = tempfile.mkstemp(prefix="pa-bench-rss-")
        os.close(fd)
        rss_files.append(rss_path)
        timed = ["/usr/bin/time", "-f", "%M", "-o", rss_path, *argv]
        # `python -m` puts the working directory first on sys.path: run in the checkout whose
        # code is meant (a --baseline's PYTHONPATH), or both would run this one's
        cwd = (env or {}).get("PYTHONPATH", str(REPO))
        p = subprocess.Popen(timed, stdin=prev, stdout=subprocess.PIPE, env=env, cwd=cwd)
        if prev is not None:
            prev.close()
        prev = p.stdout
        procs.append(p)
    assert procs[-1].stdout is not None
    out = procs[-1].stdout.read()
    procs[-1].stdout.close()
    for p in procs:
        p.wait()
    wall = time.perf_counter() - t0
    rss = 0
    for path in rss_files:
        text = Path(path).read_text().split()
        os.unlink(path)
        rss = max(rss, int(text[-1]) if text else 0)
    bad = [p.args for p in procs if p.returncode]
    if bad:
        raise RuntimeError(f"failed: {bad}")
    return wall, rss, out.decode(errors="replace")


def tw_count() -> int:
    with open("/proc/net/sockstat") as fh:
        for line in fh:
            if line.startswith("TCP:"):
                f = line.split()
                return int(f[f.index("tw") + 1])
    return 0


def write_sysctl(key: str, value: str) -> None:
    Path("/proc/sys", *key.split(".")).write_text(value + "\n")


# --- making sockets (inside the namespace) -------------------------------------------------


def _tw_worker(worker: int, count: int, per_dest: int) -> None:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", TW_PORT + worker))
    srv.listen(4096)
    made = 0
    dest = 0
    while made < count:
        dst = f"127.{10 + worker}.{dest // 250}.{dest % 250 + 1}"
        for _ in range(min(per_dest, count - made)):
            c = socket.socket()
            c.connect((dst, TW_PORT + worker))
            a, _ = srv.accept()
            c.close()  # the client closes first: its side goes to TIME_WAIT
            a.close()
            made += 1
        dest += 1
    srv.close()


def make_time_wait(n: int, per_dest: int = PER_DEST) -> float:
    t0 = time.perf_counter()
    share = [n // WORKERS + (1 if i < n % WORKERS else 0) for i in range(WORKERS)]
    procs = [Process(target=_tw_worker, args=(i, k, per_dest)) for i, k in enumerate(share) if k]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"TIME_WAIT worker failed ({p.exitcode})")
    return time.perf_counter() - t0


def fd_budget() -> int:
    """Raise this process's descriptor limit as far as allowed; the holders inherit it.

    Root can go to `fs.nr_open`, except in a container without CAP_SYS_RESOURCE, where only
    the soft limit can rise, to the hard one.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = int(Path("/proc/sys/fs/nr_open").read_text())
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        return want
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


def _est_holder(first: int, count: int, ready_w: int) -> None:
    """Hold `count` connections open (both ends) until killed."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = EST_PORT + first
    srv.bind(("0.0.0.0", port))
    srv.listen(4096)
    held = []
    for i in range(count):
        dst = f"127.50.{first}.{i // PER_DEST + 1}"
        c = socket.socket()
        c.connect((dst, port))
        a, _ = srv.accept()
        held.append((c, a))
    os.write(ready_w, b"x")
    time.sleep(3600)


def make_established(n: int) -> tuple[list[Process], float]:
    t0 = time.perf_counter()
    per = min(400_000, (fd_budget() - 64) // 2)  # two descriptors a connection
    if n > per * 250:
        raise RuntimeError(f"--established {n}: at most {per * 250} with {per} per holder")
    procs = []
    r, w = os.pipe()
    for i in range((n + per - 1) // per):
        p = Process(target=_est_holder, args=(i, min(per, n - i * per), w))
        p.start()
        procs.append(p)
    for _ in procs:
        os.read(r, 1)
    return procs, time.perf_counter() - t0


# --- measuring ----------------------------------------------------------------------------


def python_env(py: str, repo: Path = REPO) -> dict[str, str]:
    """The environment the Python methods run in, with portaudit's bytecode compiled once.

    An installed package has its `.pyc` files (pip compiles them at install time); a checkout
    run with PYTHONDONTWRITEBYTECODE=1 would compile every module on every run instead, which
    costs more than reading 100k sockets. The bytecode goes to a temporary PYTHONPYCACHEPREFIX,
    so the checkout is left as it was.
    """
    cache = tempfile.mkdtemp(prefix="pa-bench-pyc-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(repo), PYTHONPYCACHEPREFIX=cache)
    subprocess.run([py, "-m", "compileall", "-q", str(repo / "auditor")], env=env, check=True)
    return env


def measure(
    n: int,
    env: dict[str, str],
    repeat: int,
    skip_slow: bool,
    established: bool,
    baseline: dict[str, str] | None = None,
) -> dict[str, Sample]:
    py = sys.executable
    results: dict[str, Sample] = {}

    def timed(
        name: str,
        argvs: list[list[str]],
        times: int,
        parse: bool,
        run_env: dict[str, str] | None = None,
    ) -> None:
        s = results.setdefault(name, Sample())
        before = tw_count()
        for _ in range(times):
            wall, rss, out = _run(argvs, run_env or env)
            s.wall.append(wall)
            s.rss_kb = max(s.rss_kb, rss)
            if parse:
                sec, found = out.split()
                s.inproc.append(float(sec))
                s.found = int(found)
                s.founds.append(int(found))
            elif name.startswith("ss -tan"):
                s.found = int(out.split()[0]) - 1  # minus the header line
        after = tw_count()
        if after < before * 0.99:
            s.note = f"TIME_WAIT fell {before}->{after} during the run"

    ss_tw = [["ss", "-tan", "state", "time-wait"], ["wc", "-l"]]
    audit = [py, "-m", "auditor", "audit", "--format", "json", "--fail-on", "never", "--no-state"]
    floor = "python -c pass (interpreter floor)"
    proc = "/proc/net/tcp{,6} parser (portaudit fallback)"
    # TIME_WAIT lasts 60 s from each socket's creation: the methods the targets are about
    # run first, with `ss` before and after them; the slow ones last (their note says so if
    # the count had started to fall).
    timed("ss -tan state time-wait | wc -l", ss_tw, repeat, False)
    per_dest = "portaudit: per-destination counts (netlink)"
    whole = "portaudit audit --format json (whole)"
    if baseline is not None:
        # this checkout and the baseline's, run by turns over the same sockets, first one then
        # the other first, so TIME_WAIT expiring during a turn favours neither
        for turn in range(repeat):
            pairs = [(env, ""), (baseline, " [baseline]")]
            for run_env, tag in pairs if turn % 2 == 0 else pairs[::-1]:
                timed(per_dest + tag, [[py, "-c", METHODS[per_dest]]], 1, True, run_env)
                timed(whole + tag, [audit], 1, False, run_env)
    for name in (
        "portaudit: count TIME_WAIT (netlink)",
        per_dest,
        "portaudit: per-destination SocketTable (netlink + facts model)",
    ):
        if baseline is None or name != per_dest:
            timed(name, [[py, "-c", METHODS[name]]], repeat, True)
    if baseline is None:
        timed(whole, [audit], repeat, False)
    refresh = "portaudit watch: one refresh (in-process median of 5; whole = start + 6 refreshes)"
    timed(refresh, [[py, "-c", METHODS[refresh]]], 1, True)
    timed("ss -tan state time-wait | wc -l", ss_tw, repeat, False)
    timed("ss -tan | wc -l (every state)", [["ss", "-tan"], ["wc", "-l"]], repeat, False)
    timed("ss -s", [["ss", "-s"]], repeat, False)
    timed(floor, [[py, "-c", METHODS[floor]]], repeat, False)
    timed(proc, [[py, "-c", METHODS[proc]]], repeat, True)
    for name in ("psutil.net_connections + Counter", "pyroute2 DiagSocket + Counter"):
        if skip_slow and n > 10_000:
            results[name] = Sample(note="skipped (--skip-slow)")
            continue
        if name.startswith("psutil") and importlib.util.find_spec("psutil") is None:
            results[name] = Sample(note="skipped (psutil is not installed)")
            continue
        times = 1 if n >= 100_000 else repeat
        timed(name, [[py, "-c", METHODS[name]]], times, True)
    return results


def report(
    n: int, made: float, results: dict[str, Sample], established: bool, per_dest: int
) -> str:
    base = statistics.median(results["ss -tan state time-wait | wc -l"].wall)
    est = f" + {n:,} ESTABLISHED connections" if established else ""
    lines = [
        f"\n## N = {n:,} TIME_WAIT{est}, up to {per_dest:,} per destination (made in {made:.1f} s;"
        f" sockstat tw now {tw_count():,})",
        "",
        "| method | whole-process wall s (median) | vs ss | in-process s | peak RSS MiB | found "
        "| note |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in results.items():
        base_s = results.get(name + " [baseline]")
        if base_s is not None and len(base_s.wall) == len(s.wall) and s.wall:
            # runs by turns over a decaying TIME_WAIT count: compare each turn with its pair
            walls = [a / b for a, b in zip(s.wall, base_s.wall, strict=True)]
            inprocs = [
                (a / max(fa, 1)) / (b / max(fb, 1))  # per socket found: they differ by turn
                for a, b, fa, fb in zip(
                    s.inproc, base_s.inproc, s.founds, base_s.founds, strict=True
                )
            ]
            inproc_ab = f"{statistics.median(inprocs):.3f}" if inprocs else "-"
            lines.append(
                f"| {name}: this / baseline, median of turns | {statistics.median(walls):.3f}"
                f" | - | {inproc_ab} (per socket found) | - | - | {len(walls)} turns |"
            )
        if not s.wall:
            lines.append(f"| {name} | - | - | - | - | - | {s.note} |")
            continue
        wall = statistics.median(s.wall)
        inproc = f"{statistics.median(s.inproc):.3f}" if s.inproc else "-"
        found = "-" if s.found is None else f"{s.found:,}"
        lines.append(
            f"| {name} | {wall:.3f} | {wall / base:.2f}x | {inproc} | {s.rss_kb / 1024:.0f} "
            f"| {found} | {s.note} |"
        )
    return "\n".join(lines)


# --- namespace plumbing -------------------------------------------------------------------


def inside(args: argparse.Namespace) -> None:
    """Runs inside the benchmark namespace (re-executed by `outside` via `ip netns exec`)."""
    n = args.inside
    write_sysctl("net.ipv4.ip_local_port_range", "1024 65535")
    write_sysctl("net.ipv4.tcp_max_tw_buckets", str(2 * MAX_N))
    write_sysctl("net.ipv4.tcp_tw_reuse", "0")
    # the servers' own ports, so no client socket takes one before its listener binds it
    servers = f"{TW_PORT}-{TW_PORT + WORKERS - 1},{EST_PORT}-{EST_PORT + 255}"
    write_sysctl("net.ipv4.ip_local_reserved_ports", servers)
    holders: list[Process] = []
    env = python_env(sys.executable)  # before the sockets: their 60 s start when they are made
    baseline = python_env(sys.executable, Path(args.baseline)) if args.baseline else None
    try:
        made = 0.0
        if args.established:
            holders, made = make_established(n)
        made += make_time_wait(n, args.per_destination)
        results = measure(n, env, args.repeat, args.skip_slow, args.established, baseline)
        print(report(n, made, results, args.established, args.per_destination), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                row = {
                    name: {
                        "wall": s.wall,
                        "inproc": s.inproc,
                        "rss_kb": s.rss_kb,
                        "found": s.found,
                        "note": s.note,
                    }
                    for name, s in results.items()
                }
                fh.write(
                    json.dumps({"n": n, "established": args.established, "results": row}) + "\n"
                )
    finally:
        for p in holders:
            p.kill()
            p.join()
        shutil.rmtree(env["PYTHONPYCACHEPREFIX"], ignore_errors=True)
        if baseline is not None:
            shutil.rmtree(baseline["PYTHONPYCACHEPREFIX"], ignore_errors=True)


def outside(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        sys.exit("benchmarks/sockets.py: needs root (it creates a network namespace)")
    for n in (int(x.replace("_", "")) for x in args.n.split(",")):
        if not 0 < n <= MAX_N:
            sys.exit(f"benchmarks/sockets.py: --n {n}: expected 1..{MAX_N}")
        if args.per_destination < 1 or n > WORKERS * 250 * 256 * args.per_destination:
            sys.exit(f"benchmarks/sockets.py: --per-destination {args.per_destination}: too few")
        name = f"pa-bench-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        try:
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
            argv = [sys.executable, str(Path(__file__).resolve()), "--inside", str(n)]
            argv += ["--repeat", str(args.repeat)]
            argv += ["--established"] if args.established else []
            argv += ["--skip-slow"] if args.skip_slow else []
            argv += ["--per-destination", str(args.per_destination)]
            argv += ["--json", args.json] if args.json else []
            argv += ["--baseline", args.baseline] if args.baseline else []
            subprocess.run(["ip", "netns", "exec", name, *argv], check=True, timeout=1800)
        finally:
            subprocess.run(["ip", "netns", "del", name], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="10000,100000,1000000", help="comma-separated socket counts")
    ap.add_argument("--established", action="store_true", help="also N open connections")
    ap.add_argument("--skip-slow", action="store_true", help="skip psutil and pyroute2 above 10k")
    ap.add_argument("--repeat", type=int, default=3, help="runs per method (median)")
    ap.add_argument(
        "--per-destination",
        type=int,
        default=PER_DEST,
        help=f"TIME_WAIT sockets per destination (default {PER_DEST}; 10 for a many-backend host)",
    )
    ap.add_argument("--json", help="append raw samples as JSON lines to this file")
    ap.add_argument(
        "--baseline",
        help="another portaudit checkout: its per-destination counts and audit run by turns"
        " with this one's, over the same sockets",
    )
    ap.add_argument("--inside", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(args)
    else:
        outside(args)


if __name__ == "__main__":
    main()
