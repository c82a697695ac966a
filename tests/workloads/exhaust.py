"""Open and close connections to a local server until connect() fails with EADDRNOTAVAIL.

Run inside a test-made namespace: `python -m tests.workloads.exhaust --host 127.0.0.1
--max 200`. The client closes first, so every closed connection leaves a client-side
TIME_WAIT socket holding its ephemeral port for 60 s: exactly the burst of short
connections the source document describes. Prints one JSON line and exits; the TIME_WAIT
sockets outlive it in the namespace.
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import time

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h; not exported by the socket module


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="server port (0: pick one)")
    ap.add_argument("--max", type=int, default=200, help="stop after this many connects")
    ap.add_argument("--hold", type=int, default=0, help="keep this many connections open")
    ap.add_argument("--hold-seconds", type=float, default=0.0, help="sleep before exiting")
    ap.add_argument("--src", default="", help="bind the client to this local address first")
    args = ap.parse_args()

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.host, args.port))
    srv.listen(4096)
    port = srv.getsockname()[1]
    ok = 0
    failed_errno: int | None = None
    held: list[socket.socket] = []
    deadline = time.monotonic() + 30
    for _ in range(args.max):
        if time.monotonic() > deadline:
            break
        c = socket.socket(family, socket.SOCK_STREAM)
        try:
            if args.src:
                # Pick the port at connect() time, per destination, as a plain connect() does.
                c.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                c.bind((args.src, 0))
            c.connect((args.host, port))
        except OSError as exc:
            c.close()
            failed_errno = exc.errno
            break
        s, _ = srv.accept()
        ok += 1
        if len(held) < args.hold:
            held.append(c)
            held.append(s)
            continue
        c.close()  # the client closes first: its side goes to TIME_WAIT
        s.close()
    print(
        json.dumps(
            {
                "port": port,
                "connected": ok,
                "errno": failed_errno,
                "eaddrnotavail": failed_errno == errno.EADDRNOTAVAIL,
            }
        ),
        flush=True,
    )
    if args.hold_seconds:
        time.sleep(args.hold_seconds)


if __name__ == "__main__":
    main()
