"""The kept change sets: which one `rollback` undoes, and which it must refuse.

Every change set `fix` applies is kept in the journal (the newest `MAX_SETS`; older ones and
their backups are pruned). `rollback` undoes the latest one still in force; `rollback ID`
undoes an older one only when no later set in force changed the same keys or files, since
putting back its "before" would silently undo that later change too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from auditor.errors import RefusedError, UsageError
from auditor.fix.journal import ChangeSet, Journal
from auditor.hostfs import HostRoot

MAX_SETS = 50
"""How many change sets the journal keeps; the oldest are pruned with their backups."""

IN_FORCE = frozenset({"applying", "applied", "restore-failed"})
"""States whose changes may still be on the host (a failed set was restored by fix)."""


def touched(cs: ChangeSet) -> set[str]:
    """The keys and files a change set changed."""
    return {*cs.keys, *(r.key for r in cs.runtime), *(f"file {f.real}" for f in cs.files)}


def choose(sets: Sequence[ChangeSet], cs_id: str | None) -> ChangeSet | None:
    """The change set to undo: `cs_id`, or the latest in force; None when there is none."""
    live = [c for c in sets if c.state in IN_FORCE]
    if cs_id is None:
        return live[-1] if live else None
    found = next((c for c in sets if c.id == cs_id), None)
    if found is None:
        raise UsageError(f"no change set {cs_id!r} (see: portaudit rollback --list)")
    if found.state not in IN_FORCE:
        raise RefusedError(f"change set {cs_id} is {found.state}; nothing to roll back")
    later = [c for c in live if sets.index(c) > sets.index(found)]
    mine = touched(found)
    for c in reversed(later):
        common = sorted(mine & touched(c))
        if common:
            raise RefusedError(
                f"change set {c.id} changed {', '.join(common)} after {cs_id}:"
                f" roll back {c.id} first"
            )
    return found


def render_history(host: HostRoot) -> str:
    """`rollback --list`: one line per kept change set, newest last."""
    sets = Journal(host).load()
    if not sets:
        return "no change sets\n"
    lines = []
    for c in sets:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.time))
        what = sorted({*c.keys, *(r.key for r in c.runtime)})
        lines.append(
            f"{c.id}  {when} UTC  {c.state:<14} {','.join(c.rules) or '-'}  {' '.join(what)}"
        )
    return "\n".join(lines) + "\n"
