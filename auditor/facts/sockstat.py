"""`/proc/net/sockstat{,6}`: host-wide socket counts, O(1) to read (TIME_WAIT total is `tw`)."""

from __future__ import annotations

from auditor.errors import InputError
from auditor.facts.model import Unavailable
from auditor.hostfs import HostRoot


def parse_sockstat(text: str, source: str) -> dict[str, dict[str, int]]:
    """`TCP: inuse 5 orphan 0 tw 8 alloc 6 mem 1` -> {"TCP": {"inuse": 5, ...}}."""
    out: dict[str, dict[str, int]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        proto, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) % 2:
            raise InputError(source, lineno, "expected 'PROTO: name value ...'")
        row: dict[str, int] = {}
        for name, value in zip(fields[::2], fields[1::2], strict=True):
            try:
                row[name] = int(value)
            except ValueError:
                raise InputError(source, lineno, f"{name}: not an integer: {value!r}") from None
        out[proto.strip()] = row
    return out


def collect_sockstat(host: HostRoot) -> dict[str, dict[str, int]] | Unavailable:
    text = host.read_proc("net/sockstat")
    if isinstance(text, Unavailable):
        return text
    merged = parse_sockstat(text, str(host.proc_path("net/sockstat")))
    text6 = host.read_proc("net/sockstat6")
    if not isinstance(text6, Unavailable):
        merged.update(parse_sockstat(text6, str(host.proc_path("net/sockstat6"))))
    return merged
