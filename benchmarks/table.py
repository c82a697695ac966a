"""Benchmark: every row of the cost table, side by side with its yardstick, in one run.

Run as root from the repository root (see benchmarks/README.md):

    python3 benchmarks/table.py [--rows idle,10k,100k,dest50k,dest100k,netns,1m]
                                [--repeat 5] [--baseline /path/to/other/checkout]

The whole run happens in a private mount, PID and network namespace (`unshare`), with its own
tmpfs on /run/netns: `--all-netns` then sees exactly the namespaces this benchmark makes, and
nothing here touches the host's sysctls. Each row makes its sockets in a fresh namespace, then
runs portaudit (and, with `--baseline`, the other checkout's portaudit) and the row's yardstick
by turns, the order rotating each turn, and prints medians: wall time, the ratio of each turn's
pair (paired ratios stay meaningful when the machine's speed drifts), and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import Process
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sockets import REPO, _run, make_time_wait, python_env, write_sysctl

ALL_ROWS = ("idle", "10k", "100k", "dest50k", "dest100k", "netns", "netns-private", "1m")
TARGETS = {
    "idle": "<= 4x",
    "10k": "<= 3x",
    "100k": "<= 0.8x",
    "dest50k": "<= 1.5x, 40 MiB",
    "dest100k": "<= 2x, 60 MiB",
    "netns": "<= 8 ms/ns",
    "netns-private": "<= 8 ms/ns",
    "1m": "<= 0.35x",
    "1m-prometheus": "<= 0.8x",
}
NETNS_COUNT = 100
NETNS_SOCKETS = 1000
NODE_EXPORTER = "prometheus-node-exporter"
NODE_EXPORTER_ADDR = "127.0.0.1:19100"


@dataclass
class Series:
    """One command's runs within a row."""

    wall: list[float] = field(default_factory=list)
    rss_kb: int = 0


@dataclass
class Row:
    name: str
    note: str = ""
    series: dict[str, Series] = field(default_factory=dict)
    yardstick: str = ""
    per_ns: int = 0


def paired(
    row: Row,
    commands: dict[str, list[list[str]]],
    envs: dict[str, dict[str, str]],
    repeat: int,
    settle: Callable[[], None] | None = None,
) -> None:
    """Run every command once per turn, rotating the order; the last name is the yardstick.
    `settle`, when given, runs (untimed) after each command."""
    names = list(commands)
    row.yardstick = names[-1]
    for turn in range(repeat):
        k = turn % len(names)
        for name in names[k:] + names[:k]:
            wall, rss, _out = _run(commands[name], envs[name])
            s = row.series.setdefault(name, Series())
            s.wall.append(wall)
            s.rss_kb = max(s.rss_kb, rss)
            if settle is not None:
                settle()


def cpu_ticks(pid: int) -> int:
    """utime + stime of process `pid` (all its threads), in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def quiet(pid: int, limit: float = 5.0) -> None:
    """Wait until process `pid` stops using CPU (its ticks unchanged over 100 ms), at most
    `limit` seconds: a Go exporter collects the garbage of a scrape after answering it, on the
    other core, which would otherwise slow whatever command runs next."""
    deadline = time.monotonic() + limit
    last = cpu_ticks(pid)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = cpu_ticks(pid)
        if now == last:
            return
        last = now


CONSOLE_SCRIPT = (
    "import re, sys\n"
    "from auditor.auditcmd import main\n"
    "sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
    "sys.exit(main())"
)
"""What pip's `portaudit` console script runs (its entry point, `auditor.auditcmd:main`), given
with -c so each checkout's PYTHONPATH decides which portaudit it is. `python -m auditor`
would add runpy's imports (about 3 ms) that an installed `portaudit` never pays."""


def audit_argv(py: str, *extra: str) -> list[str]:
    return [py, "-c", CONSOLE_SCRIPT, "audit", *extra, "--no-state", "--fail-on", "never"]


def portaudits(
    py: str,
    env: dict[str, str],
    baseline: dict[str, str] | None,
    *extra: str,
    prefix: list[str] | None = None,
) -> tuple[dict[str, list[list[str]]], dict[str, dict[str, str]]]:
    cmd = [*(prefix or []), *audit_argv(py, *extra)]
    label = "portaudit audit " + " ".join(extra)
    commands = {label: [cmd]}
    envs = {label: env}
    if baseline is not None:
        commands[label + " [baseline]"] = [cmd]
        envs[label + " [baseline]"] = baseline
    return commands, envs


@contextmanager
def netns(name: str) -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_netns(name: str, fn: Callable[[], None]) -> None:
    """Run `fn` in a child process inside namespace `name` (its sockets stay there)."""
    from auditor.facts.netns import setns_net

    def target() -> None:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        setns_net(fd)
        os.close(fd)
        fn()

    p = Process(target=target)
    p.start()
    p.join()
    if p.exitcode:
        raise RuntimeError(f"worker in {name} failed ({p.exitcode})")


def prepare(n: int, per_dest: int) -> None:
    write_sysctl("net.ipv4.ip_local_port_range", "1024 65535")
    write_sysctl("net.ipv4.tcp_max_tw_buckets", "4000000")
    write_sysctl("net.ipv4.tcp_tw_reuse", "0")
    # the TIME_WAIT servers' ports and node_exporter's: a port a TIME_WAIT socket holds
    # cannot be bound
    write_sysctl("net.ipv4.ip_local_reserved_ports", "5000-5001,19100")
    if n:
        make_time_wait(n, per_dest)


def exec_prefix(ns: str) -> list[str]:
    return ["ip", "netns", "exec", ns]


def row_sockets(
    name: str,
    n: int,
    per_dest: int,
    py: str,
    env: dict[str, str],
    baseline: dict[str, str] | None,
    repeat: int,
) -> Row:
    row = Row(name)
    with netns(f"pa-tbl-{uuid.uuid4().hex[:8]}") as ns:
        t0 = time.perf_counter()
        in_netns(ns, lambda: prepare(n, per_dest))
        made = time.perf_counter() - t0
        pre = exec_prefix(ns)
        commands, envs = portaudits(py, env, baseline, "--format", "json", prefix=pre)
        if n == 0:
            for fmt in ("table",):
                c2, e2 = portaudits(py, env, baseline, "--format", fmt, prefix=pre)
                commands.update(c2)
                envs.update(e2)
            commands["python -c pass"] = [[*pre, py, "-c", "pass"]]
            envs["python -c pass"] = env
        else:
            commands["ss -tan state time-wait | wc -l"] = [
                [*pre, "ss", "-tan", "state", "time-wait"],
                ["wc", "-l"],
            ]
            envs["ss -tan state time-wait | wc -l"] = env
        before = tw_count_in(ns)
        paired(row, commands, envs, repeat)
        after = tw_count_in(ns)
        if n:
            row.note = f"{n:,} made in {made:.1f} s, {max(1, n // per_dest):,} destinations; "
            row.note += f"TIME_WAIT {before:,} -> {after:,} during the row"
    return row


def tw_count_in(ns: str) -> int:
    out = subprocess.run(
        [*exec_prefix(ns), "cat", "/proc/net/sockstat"], capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("TCP:"):
            f = line.split()
            return int(f[f.index("tw") + 1])
    return 0


def row_1m(
    py: str, env: dict[str, str], baseline: dict[str, str] | None, repeat: int
) -> tuple[Row, Row]:
    row = Row("1m")
    exporter = shutil.which(NODE_EXPORTER)
    with netns(f"pa-tbl-{uuid.uuid4().hex[:8]}") as ns:
        pre = exec_prefix(ns)
        t0 = time.perf_counter()
        in_netns(ns, lambda: prepare(1_000_000, 28_000))
        made = time.perf_counter() - t0
        before = tw_count_in(ns)
        commands, envs = portaudits(py, env, baseline, "--format", "json", prefix=pre)
        commands["ss -tan state time-wait | wc -l"] = [
            [*pre, "ss", "-tan", "state", "time-wait"],
            ["wc", "-l"],
        ]
        envs["ss -tan state time-wait | wc -l"] = env
        paired(row, commands, envs, repeat)
        prom = Row("1m-prometheus")
        if exporter is None:
            prom.note = f"skipped: {NODE_EXPORTER} not installed (Debian package of that name)"
        else:
            server = subprocess.Popen(
                [
                    *pre,
                    exporter,
                    "--collector.disable-defaults",
                    "--collector.tcpstat",
                    f"--web.listen-address={NODE_EXPORTER_ADDR}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                url = f"http://{NODE_EXPORTER_ADDR}/metrics"
                for _ in range(100):  # until it answers (it starts slowly on a busy machine)
                    probe = [*pre, "curl", "-sf", "-o", "/dev/null", url]
                    if subprocess.run(probe, check=False).returncode == 0:
                        break
                    time.sleep(0.2)
                c2, e2 = portaudits(py, env, baseline, "--format", "prometheus", prefix=pre)
                c2["node_exporter tcpstat scrape (curl)"] = [
                    [*pre, "curl", "-sf", "-o", "/dev/null", f"http://{NODE_EXPORTER_ADDR}/metrics"]
                ]
                e2["node_exporter tcpstat scrape (curl)"] = env
                paired(prom, c2, e2, repeat, settle=lambda: quiet(server.pid))
            finally:
                server.terminate()
                server.wait()
        after = tw_count_in(ns)
        row.note = f"1,000,000 made in {made:.1f} s; TIME_WAIT {before:,} -> {after:,}"
        prom.note = prom.note or row.note
    return row, prom


def _fill(n: int) -> None:
    prepare(n, n)


def row_netns(
    private: bool, py: str, env: dict[str, str], baseline: dict[str, str] | None, repeat: int
) -> Row:
    name = "netns-private" if private else "netns"
    row = Row(name, per_ns=NETNS_COUNT)
    # namespaces made from this one get a private hash of this size (0: the host-wide one)
    write_sysctl("net.ipv4.tcp_child_ehash_entries", "4096" if private else "0")
    names = [f"pa-tbl-{uuid.uuid4().hex[:8]}" for _ in range(NETNS_COUNT)]
    made_ns: list[str] = []
    try:
        t0 = time.perf_counter()
        for ns in names:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made_ns.append(ns)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
            in_netns(ns, lambda: _fill(NETNS_SOCKETS))
        made = time.perf_counter() - t0
        commands, envs = portaudits(py, env, baseline, "--all-netns", "--format", "json")
        c1, _e1 = portaudits(py, env, None, "--format", "json", prefix=exec_prefix(names[0]))
        one = "one-namespace audit --format json"
        commands[one] = next(iter(c1.values()))
        envs[one] = env
        paired(row, commands, envs, repeat)
        row.note = (
            f"{NETNS_COUNT} namespaces x {NETNS_SOCKETS:,} TIME_WAIT made in {made:.1f} s"
            f" ({'private hash' if private else 'shared host-wide hash'})"
        )
    finally:
        for ns in made_ns:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        write_sysctl("net.ipv4.tcp_child_ehash_entries", "0")
    return row


def print_row(row: Row) -> None:
    print(f"\n## {row.name} (target {TARGETS.get(row.name, '-')})  {row.note}")
    print("| command | wall s (median) | vs yardstick (median of turns) | per ns ms | peak MiB |")
    print("|---|---|---|---|---|")
    base = row.series.get(row.yardstick)
    for name, s in row.series.items():
        wall = statistics.median(s.wall)
        ratio = "-"
        if base is not None and name != row.yardstick and len(base.wall) == len(s.wall):
            ratio = (
                f"{statistics.median(a / b for a, b in zip(s.wall, base.wall, strict=True)):.2f}x"
            )
        per_ns = f"{wall / row.per_ns * 1000:.1f}" if row.per_ns and "all-netns" in name else "-"
        print(f"| {name} | {wall:.3f} | {ratio} | {per_ns} | {s.rss_kb / 1024:.0f} |")
    sys.stdout.flush()


def inside(args: argparse.Namespace) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    Path("/run/netns").mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "pa-bench", "/run/netns"], check=True)
    py = sys.executable
    env = python_env(py)
    baseline = python_env(py, Path(args.baseline)) if args.baseline else None
    rows = args.rows.split(",")
    try:
        for r in rows:
            if r == "idle":
                print_row(row_sockets("idle", 0, 1, py, env, baseline, args.repeat))
            elif r == "10k":
                print_row(row_sockets("10k", 10_000, 28_000, py, env, baseline, args.repeat))
            elif r == "100k":
                print_row(row_sockets("100k", 100_000, 28_000, py, env, baseline, args.repeat))
            elif r == "dest50k":
                print_row(row_sockets("dest50k", 100_000, 2, py, env, baseline, args.repeat))
            elif r == "dest100k":
                print_row(row_sockets("dest100k", 100_000, 1, py, env, baseline, args.repeat))
            elif r in ("netns", "netns-private"):
                print_row(row_netns(r == "netns-private", py, env, baseline, args.repeat))
            elif r == "1m":
                for part in row_1m(py, env, baseline, args.repeat):
                    print_row(part)
            else:
                sys.exit(f"benchmarks/table.py: --rows: unknown row {r!r} ({', '.join(ALL_ROWS)})")
            time.sleep(0.5)
    finally:
        shutil.rmtree(env["PYTHONPYCACHEPREFIX"], ignore_errors=True)
        if baseline is not None:
            shutil.rmtree(baseline["PYTHONPYCACHEPREFIX"], ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=",".join(ALL_ROWS), help="comma-separated rows")
    ap.add_argument("--repeat", type=int, default=5, help="turns per row (median)")
    ap.add_argument("--baseline", help="another portaudit checkout, run by turns with this one")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(args)
        return
    if os.geteuid() != 0:
        sys.exit("benchmarks/table.py: needs root (it creates namespaces)")
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--inside",
        "--rows",
        args.rows,
        "--repeat",
        str(args.repeat),
    ]
    argv += ["--baseline", args.baseline] if args.baseline else []
    cmd = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--mount-proc",
        "--net",
        *argv,
    ]
    sys.exit(subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}).returncode)


if __name__ == "__main__":
    main()
