"""`/proc/net/netstat` and `/proc/net/snmp`: SNMP-style counter pairs (header line, value line)."""

from __future__ import annotations

from auditor.errors import InputError
from auditor.facts.model import Unavailable
from auditor.hostfs import HostRoot


def parse_counter_pairs(text: str, source: str) -> dict[str, dict[str, int]]:
    """Lines come in pairs: `TcpExt: SyncookiesSent ...` then `TcpExt: 0 ...` with the values."""
    out: dict[str, dict[str, int]] = {}
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if len(lines) % 2:
        raise InputError(source, lines[-1][0], "header line without a value line")
    for (hn, header), (vn, values) in zip(lines[::2], lines[1::2], strict=True):
        hgroup, hsep, hrest = header.partition(":")
        vgroup, vsep, vrest = values.partition(":")
        if not hsep or not vsep or hgroup != vgroup:
            raise InputError(source, vn, f"value line does not match header line {hn}")
        names, nums = hrest.split(), vrest.split()
        if len(names) != len(nums):
            raise InputError(source, vn, f"{len(nums)} values for {len(names)} names")
        row: dict[str, int] = {}
        for name, num in zip(names, nums, strict=True):
            try:
                row[name] = int(num)
            except ValueError:
                raise InputError(source, vn, f"{hgroup} {name}: not an integer: {num!r}") from None
        out.setdefault(hgroup.strip(), {}).update(row)
    return out


def collect_counters(host: HostRoot) -> dict[str, dict[str, int]] | Unavailable:
    merged: dict[str, dict[str, int]] = {}
    reasons = []
    for rel in ("net/netstat", "net/snmp"):
        text = host.read_proc(rel)
        if isinstance(text, Unavailable):
            reasons.append(text.reason)
            continue
        for group, row in parse_counter_pairs(text, str(host.proc_path(rel))).items():
            merged.setdefault(group, {}).update(row)
    if not merged:
        return Unavailable("; ".join(reasons))
    return merged
