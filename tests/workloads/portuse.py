"""Fill the port range host-wide, three ways, and hold the sockets until stdin closes.

Run inside a test-made namespace whose range is narrow (`python -m tests.workloads.portuse
bind-connect --dests 10`):
- `bind-connect`: each client calls bind() with port 0 before connect(), as a proxy picking
  its source address does, round-robin over `--dests` local servers, until bind() fails
  (EADDRINUSE): every socket holds its port exclusively, so few per destination fill the range;
- `udp`: UDP sockets bound to port 0 until bind() fails;
- `connect`: `--count` plain connect() calls spread evenly over `--dests` servers, sharing
  ports across destinations as the kernel allows.
Servers listen on `--port`.. `--port + dests - 1` (outside the range). Prints one JSON line
once everything is held, then waits for stdin to close (bounded by `--hold-seconds`).
"""

from __future__ import annotations

import argparse
import errno
import json
import select
import socket
import sys


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("bind-connect", "udp", "connect"))
    ap.add_argument("--dests", type=int, default=10)
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--count", type=int, default=0, help="connect mode: sockets to open")
    ap.add_argument("--max", type=int, default=5000, help="stop after this many sockets")
    ap.add_argument("--hold-seconds", type=float, default=120.0)
    args = ap.parse_args()

    held: list[socket.socket] = []
    servers = []
    if args.mode != "udp":
        for i in range(args.dests):
            srv = socket.socket()
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("127.0.0.1", args.port + i))
            srv.listen(4096)
            servers.append(srv)
    failed: int | None = None
    per_dest = [0] * max(args.dests, 1)
    limit = args.count if args.mode == "connect" else args.max
    for n in range(limit):
        if args.mode == "udp":
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.bind(("127.0.0.1", 0))
            except OSError as exc:
                u.close()
                failed = exc.errno
                break
            held.append(u)
            continue
        i = n % args.dests
        c = socket.socket()
        try:
            if args.mode == "bind-connect":
                c.bind(("127.0.0.1", 0))
            c.connect(("127.0.0.1", args.port + i))
        except OSError as exc:
            c.close()
            failed = exc.errno
            break
        held.append(c)
        held.append(servers[i].accept()[0])
        per_dest[i] += 1
    print(
        json.dumps(
            {
                "mode": args.mode,
                "sockets": sum(per_dest) if args.mode != "udp" else len(held),
                "per_dest_max": max(per_dest),
                "error": errno.errorcode.get(failed, str(failed)) if failed else None,
            }
        ),
        flush=True,
    )
    select.select([sys.stdin], [], [], args.hold_seconds)
    for s in held + servers:
        s.close()


if __name__ == "__main__":
    main()
