"""The sysctl keys `fix` may write: one typed table, checked before anything is written.

A value reaches `/proc/sys` or a boot file only when its key is in `KEYS` and the value has the
key's shape (how many integers, in which range, or a port list). A key not in the table is
refused, whatever a rule says: a rule file may name any key, but only keys someone has looked
up in the kernel's documentation are written (Documentation/networking/ip-sysctl.rst,
admin-guide/sysctl/fs.rst, networking/nf_conntrack-sysctl.rst).

`per_netns` says whether a write changes only the current network namespace; it was measured
by comparing the writable entries of `/proc/sys` in the initial namespace and under
`unshare --net` (Linux 6.x), and matches the kernel's per-netns tables.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping

from auditor.errors import InputError
from auditor.facts.model import PortRange
from auditor.facts.sysctlvalue import fold, same_value
from auditor.record import dataclass

INT_MAX = 2_147_483_647

PORT_RANGE = "net.ipv4.ip_local_port_range"
RESERVED = "net.ipv4.ip_local_reserved_ports"
UNPRIV_START = "net.ipv4.ip_unprivileged_port_start"

_DECIMAL = re.compile(r"^(?:0|-?[1-9][0-9]*)$")
"""The kernel parses sysctl integers with base 0 (`proc_get_long` -> `strtoul_lenient(.., 0)`),
so `010` is 8 and `0x10` is 16: only plain decimal is written, so boot and runtime agree."""


class Shape(enum.StrEnum):
    INTS = "ints"
    """A fixed number of integers, each in [low, high]."""
    PORT_LIST = "port-list"
    """`8080,9000-9009` (ip_local_reserved_ports), possibly empty."""


@dataclass(frozen=True, slots=True)
class KeySpec:
    key: str
    shape: Shape
    per_netns: bool
    low: int = 0
    high: int = INT_MAX
    count: int = 1
    """How many integers the value holds (ip_local_port_range: 2)."""
    risk: str = ""
    """What an `unsafe` change of this key can cost, shown before asking."""


def _int(
    key: str,
    low: int,
    high: int,
    *,
    per_netns: bool,
    risk: str = "",
) -> KeySpec:
    return KeySpec(key, Shape.INTS, per_netns, low, high, 1, risk)


KEYS: dict[str, KeySpec] = {
    s.key: s
    for s in (
        KeySpec(PORT_RANGE, Shape.INTS, True, 1, 65535, 2),
        KeySpec(RESERVED, Shape.PORT_LIST, True),
        _int(UNPRIV_START, 0, 65535, per_netns=True),
        _int("net.ipv4.tcp_tw_reuse", 0, 2, per_netns=True),
        _int("net.ipv4.tcp_timestamps", 0, 2, per_netns=True),
        _int("net.ipv4.tcp_tw_recycle", 0, 1, per_netns=True),
        _int("net.ipv4.tcp_syncookies", 0, 2, per_netns=True),
        _int(
            "net.ipv4.conf.all.rp_filter",
            0,
            2,
            per_netns=True,
            risk="loose filtering accepts packets strict filtering would drop as spoofed",
        ),
        _int("net.ipv4.tcp_fin_timeout", 1, INT_MAX, per_netns=True),
        _int(
            "net.ipv4.tcp_max_tw_buckets",
            0,
            INT_MAX,
            per_netns=True,
            risk="more TIME_WAIT sockets held in kernel memory (about 200 bytes each)",
        ),
        _int(
            "net.ipv4.tcp_max_syn_backlog",
            1,
            INT_MAX,
            per_netns=True,
            risk="more half-open connections kept in memory during a SYN flood",
        ),
        _int(
            "net.core.somaxconn",
            1,
            INT_MAX,
            per_netns=True,
            risk="longer accept queues hide a slow server and cost memory per listener",
        ),
        _int("net.ipv4.tcp_keepalive_time", 1, 32767, per_netns=True),
        _int("net.ipv4.tcp_keepalive_intvl", 1, 32767, per_netns=True),
        _int("net.ipv4.tcp_keepalive_probes", 1, 127, per_netns=True),
        _int("net.core.netdev_max_backlog", 1, INT_MAX, per_netns=False),
        _int(
            "fs.file-max",
            1,
            2**63 - 1,
            per_netns=False,
            risk="a descriptor leak grows further before anything stops it (kernel memory)",
        ),
        _int("fs.nr_open", 1, 2_147_483_584, per_netns=False),
        _int(
            "net.netfilter.nf_conntrack_max",
            1,
            INT_MAX,
            per_netns=False,
            risk="each conntrack entry costs a few hundred bytes of unswappable kernel memory",
        ),
    )
}


def spec(key: str, rules: str = "fix") -> KeySpec:
    """The table entry for `key`, or InputError: `fix` never writes a key nobody looked up."""
    got = KEYS.get(key)
    if got is None:
        raise InputError(
            None,
            None,
            f"{rules}: {key}: not a key portaudit fix writes (known: see auditor/fix/keys.py)",
        )
    return got


def format_ports(ports: Iterable[tuple[int, int]]) -> str:
    """Ranges merged and sorted, as the kernel prints `ip_local_reserved_ports`."""
    merged: list[list[int]] = []
    for lo, hi in sorted(ports):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in merged)


def _fail(rules: str, key: str, msg: str) -> InputError:
    return InputError(None, None, f"{rules}: {key}: {msg}")


def validate(key: str, value: str, context: Mapping[str, str], rules: str = "fix") -> str:
    """The value to write for `key` (canonical form), or InputError naming key and value.

    `context` holds the values the check depends on (the unprivileged port start and the
    reserved ports in force once this plan is applied). Runs before anything is written.
    """
    s = spec(key, rules)
    if not isinstance(value, str):
        raise _fail(rules, key, f"value {value!r} is not text")
    if any((ord(c) < 32 and c not in " \t") or ord(c) == 127 for c in value):
        raise _fail(rules, key, f"value {value!r} has control characters")
    v = fold(value)
    if s.shape is Shape.PORT_LIST:
        try:
            return format_ports(PortRange.parse_reserved(v))
        except ValueError as exc:
            raise _fail(rules, key, f"{v!r}: {exc}") from None
    fields = v.split(" ") if v else []
    if len(fields) != s.count:
        what = "one integer" if s.count == 1 else f"{s.count} integers"
        raise _fail(rules, key, f"{value!r} is not {what}")
    numbers: list[int] = []
    for x in fields:
        if not _DECIMAL.match(x):
            raise _fail(rules, key, f"{x!r} is not a decimal integer")
        n = int(x)
        if not s.low <= n <= s.high:
            raise _fail(rules, key, f"{n} is outside {s.low}..{s.high}")
        numbers.append(n)
    if key == PORT_RANGE:
        low, high = numbers
        if low > high:
            raise _fail(rules, key, f"{v!r}: low is above high")
        unpriv = fold(context.get(UNPRIV_START, ""))
        if _DECIMAL.match(unpriv) and low < int(unpriv):
            raise _fail(
                rules,
                key,
                f"{v!r}: low {low} is below ip_unprivileged_port_start {unpriv}"
                " (the kernel refuses it)",
            )
        try:
            reserved = PortRange.parse_reserved(context.get(RESERVED, ""))
        except ValueError:
            reserved = ()
        if PortRange.count_usable(low, high, reserved) < 1:
            raise _fail(rules, key, f"{v!r}: no usable port left after reserved ones")
    return " ".join(str(n) for n in numbers)


def same(key: str, a: str, b: str) -> bool:
    """Whether two values of `key` mean the same to the kernel (port lists compared as sets)."""
    s = KEYS.get(key)
    if s is not None and s.shape is Shape.PORT_LIST:
        try:
            return format_ports(PortRange.parse_reserved(a)) == format_ports(
                PortRange.parse_reserved(b)
            )
        except ValueError:
            return same_value(a, b)
    return same_value(a, b)


def rule_key_problem(raw: str) -> str | None:
    """Why a key as written in a rule's `fix.sysctl` is not a plain dotted key, or None.

    A leading `/` or `/proc/sys/` prefix means the author wrote a path, and trailing
    whitespace would be stripped silently: both are named at load time, with the line.
    """
    if raw != raw.strip():
        return f"sysctl key {raw!r} has leading or trailing whitespace"
    if raw.startswith("/proc/sys/") or raw.startswith("proc/sys/"):
        return f"sysctl key {raw!r}: write the key (net.ipv4.x), not its /proc/sys path"
    if raw.startswith("/"):
        return f"sysctl key {raw!r} starts with '/': write the dotted key (net.ipv4.x)"
    return None
