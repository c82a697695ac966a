"""A busy server for fixture captures: listeners, accepted clients, accept-queue overflows.

    python -m tests.workloads.server --listen 0.0.0.0:8080 --listen 127.0.0.1:6379 \
        --clients 10.0.1.50:8080:200 --overflow 0.0.0.0:9000:30 --hold-seconds 20

`--overflow ADDR:PORT:N` listens with a backlog of 1, never accepts, and fires N connects at
it, so the kernel's real ListenOverflows/ListenDrops counters rise. Prints "ready" when set up.
"""

from __future__ import annotations

import argparse
import socket
import time


def _addr(spec: str) -> tuple[str, int, int]:
    host, port, *rest = spec.rsplit(":", 2) if spec.count(":") >= 2 else (*spec.rsplit(":", 1), "0")
    return host, int(port), int(rest[0]) if rest else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", action="append", default=[])
    ap.add_argument(
        "--clients", action="append", default=[], help="SRC:PORT:N connects to PORT on the listener"
    )
    ap.add_argument("--overflow", action="append", default=[])
    ap.add_argument("--hold-seconds", type=float, default=10.0)
    args = ap.parse_args()
    keep: list[socket.socket] = []
    listeners: dict[int, socket.socket] = {}
    for spec in args.listen:
        host, port, _ = _addr(spec)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(4096)
        listeners[port] = s
        keep.append(s)
    for spec in args.clients:
        dst, port, n = _addr(spec)
        for _ in range(n):
            c = socket.create_connection((dst, port), timeout=5)
            keep.append(c)
            keep.append(listeners[port].accept()[0])
    for spec in args.overflow:
        host, port, n = _addr(spec)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((host, port))
        s.listen(1)
        keep.append(s)
        target = "127.0.0.1" if host == "0.0.0.0" else host
        for _ in range(n):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            c.connect_ex((target, port))
            keep.append(c)
        time.sleep(1.5)
    print("ready", flush=True)
    time.sleep(args.hold_seconds)


if __name__ == "__main__":
    main()
