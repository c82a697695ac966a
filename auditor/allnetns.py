"""Every network namespace as a source of facts: live (`--all-netns`) or from a snapshot.

Each namespace is judged on its own facts (its own port range, sockets and sysctls), so a
finding appears once, under the namespace it belongs to (`Finding.netns`). This module only
gathers the facts and the namespaces' names; the audit itself is the one pipeline in
`auditor/audit.py`, and the renderers name each namespace.

`facts --all-netns` writes `{"schema": 1, "namespaces": [{netns, inode, name, pid, facts |
unavailable}], "skipped_netns": [{netns, reason}]}` (docs/schema/facts-all-netns.json), and
`audit --facts` reads that back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auditor.engine.report import NetnsInfo
from auditor.facts.model import Facts, SnapshotError, Unavailable, facts_from_json, to_jsonable
from auditor.facts.netns import NetnsRef, collect_all_netns, require_live
from auditor.hostfs import HostRoot


@dataclass(frozen=True, slots=True)
class NamespaceFacts:
    """Every namespace's facts, or why one could not be read, and the places not searched."""

    found: list[tuple[NetnsInfo, Facts | Unavailable, bool]]
    """(namespace, its facts or the reason, whether it is the namespace portaudit runs in)."""
    problems: list[tuple[str, str]]
    """(what, reason) for places that could not be searched for namespaces."""


def info_of(ref: NetnsRef) -> NetnsInfo:
    return NetnsInfo(
        label=ref.label,
        inode=ref.inode,
        name=ref.name or None,
        pid=None if ref.name else ref.pid,
        owner=ref.owner or None,
    )


OnFacts = Callable[[int, NetnsInfo, Facts, bool], None]
"""Called with (index in `NamespaceFacts.found`, namespace, its facts, whether it is the current
one) as each namespace's facts arrive."""


def collect_namespaces(
    host: HostRoot, owners_above: float | None = None, on_facts: OnFacts | None = None
) -> NamespaceFacts:
    """Facts of every namespace on the running kernel, the current one first; `on_facts` sees
    each namespace's as they arrive, while the others are still being read."""
    require_live(host)
    problems: list[tuple[str, str]] = []

    def on_reply(i: int, ref: NetnsRef, facts: Facts | Unavailable) -> None:
        if on_facts is not None and isinstance(facts, Facts):
            on_facts(i, info_of(ref), facts, ref.current)

    found = [
        (info_of(ref), facts, ref.current)
        for ref, facts in collect_all_netns(host, problems, owners_above, on_reply)
    ]
    return NamespaceFacts(found=found, problems=problems)


def facts_all_netns_json(namespaces: NamespaceFacts) -> str:
    """`facts --all-netns`: every namespace's snapshot, in the form `audit --facts` reads."""
    rows: list[dict[str, Any]] = []
    for info, facts, _current in namespaces.found:
        row: dict[str, Any] = {
            "netns": info.label,
            "inode": info.inode,
            "name": info.name,
            "pid": info.pid,
            "owner": info.owner,
        }
        if isinstance(facts, Unavailable):
            row["unavailable"] = facts.reason
        else:
            row["facts"] = to_jsonable(facts)
        rows.append(row)
    out = {
        "schema": 1,
        "namespaces": rows,
        "skipped_netns": [{"netns": what, "reason": why} for what, why in namespaces.problems],
    }
    return json.dumps(out, indent=2) + "\n"


def is_all_netns_snapshot(data: Any) -> bool:
    return isinstance(data, dict) and "namespaces" in data and "host" not in data


def _opt(row: dict[str, Any], key: str, tp: type, where: str) -> Any:
    value = row.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, tp)):
        raise SnapshotError(f"{where}.{key}: expected {tp.__name__} or null")
    return value


def namespaces_from_json(data: Any) -> NamespaceFacts:
    """A `facts --all-netns` snapshot read back; SnapshotError names the first bad field."""
    if data.get("schema") != 1:
        raise SnapshotError(f"$.schema: expected 1, got {data.get('schema')!r}")
    rows = data["namespaces"]
    if not isinstance(rows, list) or not rows:
        raise SnapshotError("$.namespaces: expected a non-empty list")
    found: list[tuple[NetnsInfo, Facts | Unavailable, bool]] = []
    for i, row in enumerate(rows):
        where = f"$.namespaces[{i}]"
        if not isinstance(row, dict):
            raise SnapshotError(f"{where}: expected an object")
        label, inode = row.get("netns"), row.get("inode")
        if not isinstance(label, str):
            raise SnapshotError(f"{where}.netns: expected a string")
        if isinstance(inode, bool) or not isinstance(inode, int):
            raise SnapshotError(f"{where}.inode: expected an integer")
        info = NetnsInfo(
            label,
            inode,
            _opt(row, "name", str, where),
            _opt(row, "pid", int, where),
            _opt(row, "owner", str, where),
        )
        if "facts" in row:
            try:
                facts: Facts | Unavailable = facts_from_json(row["facts"])
            except SnapshotError as exc:
                raise SnapshotError(str(exc).replace("$", f"{where}.facts", 1)) from None
        elif isinstance(row.get("unavailable"), str):
            facts = Unavailable(row["unavailable"])
        else:
            raise SnapshotError(f"{where}: expected 'facts' or 'unavailable'")
        found.append((info, facts, i == 0))
    skipped = data.get("skipped_netns", [])
    problems: list[tuple[str, str]] = []
    if not isinstance(skipped, list):
        raise SnapshotError("$.skipped_netns: expected a list")
    for i, entry in enumerate(skipped):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("netns"), str)
            and isinstance(entry.get("reason"), str)
        ):
            raise SnapshotError(f"$.skipped_netns[{i}]: expected {{netns, reason}}")
        problems.append((entry["netns"], entry["reason"]))
    return NamespaceFacts(found=found, problems=problems)
