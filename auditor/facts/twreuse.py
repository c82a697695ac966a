"""When TIME_WAIT ports are free for connect() again: the settings and the age arithmetic.

With `tcp_tw_reuse` in effect, connect() may take over a TIME_WAIT socket's port once the last
timestamp seen on it is older than `tcp_tw_reuse_delay` (tcp_twsk_unique in
net/ipv4/tcp_ipv4.c; the delay was a fixed second before the key appeared in 6.13). The
readers do not see that timestamp, but they see the time left on each TIME_WAIT timer, which
starts at TCP_TIMEWAIT_LEN when the socket enters TIME_WAIT; its age there is a lower bound
for the timestamp's, so a socket counted as reusable here is one the kernel would reuse.
"""

from __future__ import annotations

from auditor.facts.model import Unavailable
from auditor.hostfs import HostRoot

TIMEWAIT_LEN_MS = 60_000
"""TCP_TIMEWAIT_LEN (include/net/tcp.h): fixed, not tunable."""
DEFAULT_DELAY_MS = 1000


def reuse_delay_ms(host: HostRoot) -> int | None:
    """`tcp_tw_reuse_delay` in ms when reuse can apply to some destination (`tcp_tw_reuse` 1,
    or 2 for loopback, with `tcp_timestamps` on), else None: then ages are not worth reading."""

    def number(key: str) -> int | None:
        got = host.read_sysctl(key)
        if isinstance(got, Unavailable):
            return None
        try:
            return int(got)
        except ValueError:
            return None

    if number("net.ipv4.tcp_tw_reuse") not in (1, 2) or not number("net.ipv4.tcp_timestamps"):
        return None
    delay = number("net.ipv4.tcp_tw_reuse_delay")
    return DEFAULT_DELAY_MS if delay is None else delay


def reusable_after_left(delay_ms: int) -> int:
    """A TIME_WAIT socket with less than this many ms left on its timer is older than the
    delay (age = TIMEWAIT_LEN - left > delay)."""
    return TIMEWAIT_LEN_MS - delay_ms
