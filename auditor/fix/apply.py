"""Apply a plan, or undo the last one: the only code in portaudit that changes the host.

Order: lock, snapshot (journal + backups), runtime writes with read-back, atomic
file writes, then the boot model recomputed from the real files. Runtime goes first because the
kernel is the strictest validator: a value it refuses is never persisted for the next boot. Any
failure restores what was already changed (runtime values, file bytes) and raises FixError
(exit 3); a restore that itself fails is named in the message and left in the journal for
`rollback`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from auditor.errors import AuditorError, FixError, RefusedError
from auditor.facts.model import Unavailable
from auditor.facts.persisted import effective
from auditor.facts.sysctlvalue import fold
from auditor.fix import target
from auditor.fix.history import MAX_SETS, choose
from auditor.fix.journal import (
    ChangeSet,
    FileRecord,
    Journal,
    RuntimeRecord,
    digest,
    new_id,
)
from auditor.fix.keys import same
from auditor.fix.plan import FileEdit, KeyChange, Plan
from auditor.hostfs import HostRoot
from auditor.safepath import LinkRefused, NotRegularFile, read_below, remove_below, replace_below


def write_sysctl(host: HostRoot, key: str, value: str) -> None:
    """One direct write to `<proc>/sys/...`, then read back; FixError when the kernel disagrees."""
    path = host.sysctl_path(key)
    data = (value + "\n").encode("ascii")
    try:
        # No link is followed and a FIFO cannot block: /proc/sys holds neither, a --proc tree might.
        flags = os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(path, flags)
    except OSError as exc:
        raise FixError(f"{key}: cannot open {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FixError(f"{key}: {path} is not a regular file; not writing it")
        written = os.write(fd, data)
    except OSError as exc:
        raise FixError(f"{key}: the kernel refused {value!r} ({exc.strerror})") from None
    finally:
        os.close(fd)
    if written != len(data):
        raise FixError(f"{key}: short write of {value!r} ({written} of {len(data)} bytes)")
    got = host.read_sysctl(key)
    if isinstance(got, Unavailable):
        raise FixError(f"{key}: cannot read back: {got.reason}")
    if not same(key, got, value):
        raise FixError(f"{key}: wrote {value!r} but the kernel reports {got!r}")


def _read(host: HostRoot, real: Path) -> bytes | None:
    """A file `fix` may write, read without following a link (the plan resolved those)."""
    return read_below(host.root, host.host_view(real))


def _write(host: HostRoot, real: Path, data: bytes) -> list[Path]:
    """Replace a resolved file below the root; a link found there now is refused, not followed.

    Returns the directories created for it (as real paths).
    """
    made = replace_below(host.root, host.host_view(real), data)
    return [host.path(d) for d in made]


def _remove(host: HostRoot, path: Path, created_dirs: list[Path]) -> None:
    remove_below(
        host.root,
        host.host_view(path),
        [PurePosixPath(host.host_view(d)) for d in created_dirs],
    )


def _restore_file(host: HostRoot, real: Path, before: bytes | None, created: list[Path]) -> None:
    now = _read(host, real)
    if before is None:
        if now is not None or created:
            _remove(host, real, created)
    elif now != before:
        _write(host, real, before)


def _verify(host: HostRoot, plan: Plan) -> None:
    persisted = None if plan.runtime_only else target.persisted_model(host)
    for c in plan.changes:
        got = effective(persisted, c.key) if persisted is not None else None
        if persisted is not None and (got is None or not same(c.key, got.value, c.proposed)):
            where = "nothing" if got is None else f"{got.file}:{got.line} = {got.value!r}"
            raise FixError(
                f"{c.key}: after the write, boot would apply {where}, not {c.proposed!r}"
            )
        if c.write_runtime:
            now = host.read_sysctl(c.key)
            if isinstance(now, Unavailable) or not same(c.key, now, c.proposed):
                raise FixError(f"{c.key}: runtime value changed to {now!r} during the fix")


def _check_unchanged(host: HostRoot, plan: Plan) -> None:
    """Refuse when the host moved since the plan was shown (the operator confirmed that diff)."""
    for e in plan.files:
        try:
            current = _read(host, e.real)
        except OSError as exc:
            raise RefusedError(f"{e.path}: {_os_reason(exc)}; run fix again") from None
        if current != e.before:
            raise RefusedError(f"{e.path} changed since the plan was made; run fix again")
    for c in plan.changes:
        if c.write_runtime:
            now = host.read_sysctl(c.key)
            if isinstance(now, Unavailable) or c.runtime is None or not same(c.key, now, c.runtime):
                raise RefusedError(f"{c.key} changed since the plan was made; run fix again")


def apply_plan(host: HostRoot, plan: Plan) -> ChangeSet:
    """Apply `plan`; return the journal's change set. FixError (exit 3) after a restore."""
    journal = Journal(host)
    with journal.lock():
        _check_unchanged(host, plan)
        cs_id = new_id()
        records: list[FileRecord] = []
        runtime_changes = [c for c in plan.changes if c.write_runtime]
        try:
            for i, e in enumerate(plan.files):
                backup = "" if e.before is None else journal.write_backup(cs_id, i, e.before)
                resolved = host.host_view(e.real)
                records.append(
                    FileRecord(e.path, resolved, backup, digest(e.before), digest(e.after))
                )
            cs = ChangeSet(
                id=cs_id,
                time=time.time(),
                netns=host.netns(),
                state="applying",
                rules=tuple(dict.fromkeys(r for c in plan.changes for r in c.rules)),
                files=tuple(records),
                runtime=tuple(
                    RuntimeRecord(c.key, c.runtime or "", c.proposed) for c in runtime_changes
                ),
                keys=tuple(c.key for c in plan.changes),
            )
            journal.add(cs, keep=MAX_SETS)
        except OSError as exc:
            error = RefusedError if isinstance(exc, NotRegularFile) else FixError
            raise error(
                f"cannot write the journal or backups in {journal.dir}: {_os_reason(exc)};"
                " nothing was changed"
            ) from None
        touched: list[KeyChange] = []
        created: dict[Path, list[Path]] = {}
        try:
            for c in runtime_changes:
                touched.append(c)
                write_sysctl(host, c.key, c.proposed)
            for e in plan.files:
                created[e.real] = _write(host, e.real, e.after)
            _verify(host, plan)
        except BaseException as exc:
            problems = _restore(host, plan.files, touched, created)
            with contextlib.suppress(OSError):
                journal.set_state(cs_id, "restore-failed" if problems else "failed")
            if not isinstance(exc, Exception):
                raise
            reason = exc.message if isinstance(exc, AuditorError) else _os_reason(exc)
            if problems:
                raise FixError(
                    f"fix failed: {reason}; restore FAILED for {'; '.join(problems)}"
                    " (run portaudit rollback)"
                ) from None
            raise FixError(
                f"fix failed: {reason}; runtime values and files were restored"
            ) from None
        if created:
            records = [
                FileRecord(
                    r.path,
                    r.real,
                    r.backup,
                    r.sha256_before,
                    r.sha256_after,
                    tuple(host.host_view(d) for d in created.get(e.real, [])),
                )
                for r, e in zip(records, plan.files, strict=True)
            ]
        with contextlib.suppress(OSError):  # left "applying": rollback still undoes it
            journal.save(
                [
                    replace(cs, state="applied", files=tuple(records)) if c.id == cs_id else c
                    for c in journal.load()
                ]
            )
        return cs


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))}"
    return f"{type(exc).__name__}: {exc}"


def _restore(
    host: HostRoot,
    files: tuple[FileEdit, ...],
    touched: list[KeyChange],
    created: dict[Path, list[Path]],
) -> list[str]:
    """Put back file bytes and runtime values; return what could not be put back."""
    problems: list[str] = []
    for e in reversed(files):
        try:
            _restore_file(host, e.real, e.before, created.get(e.real, []))
        except LinkRefused as exc:
            if e.real in created:  # written, and now behind a link: not ours to follow
                problems.append(f"{e.path} ({_os_reason(exc)})")
            # else never written (a link there was refused): nothing to put back
        except OSError as exc:
            problems.append(f"{e.path} ({_os_reason(exc)})")
    for c in reversed(touched):
        try:
            now = host.read_sysctl(c.key)
            if c.runtime is not None and (
                isinstance(now, Unavailable) or not same(c.key, now, c.runtime)
            ):
                write_sysctl(host, c.key, c.runtime)
        except (OSError, FixError) as exc:
            problems.append(f"{c.key} ({exc})")
    return problems


# --- rollback -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileUndo:
    record: FileRecord
    real: Path
    current: bytes | None
    restore: bytes | None
    """The bytes to put back; None means the file did not exist and is removed."""


@dataclass(frozen=True, slots=True)
class RollbackPlan:
    changeset: ChangeSet
    files: tuple[FileUndo, ...]
    runtime: tuple[RuntimeRecord, ...]

    @property
    def empty(self) -> bool:
        return not self.files and not self.runtime


def plan_rollback(host: HostRoot, cs_id: str | None = None) -> RollbackPlan | None:
    """What undoing change set `cs_id` (default: the latest in force) takes; None when there
    is nothing to roll back.

    Refuses when a file or value was changed by someone else since `fix` wrote it: putting
    the backup back would silently drop that change.
    """
    journal = Journal(host)
    cs = choose(journal.load(), cs_id)
    if cs is None:
        return None
    undo_files: list[FileUndo] = []
    for r in cs.files:
        real = host.path(target.resolve_in_root(host, r.real))
        try:
            now = _read(host, real)
        except OSError as exc:
            raise RefusedError(f"{r.path}: {_os_reason(exc)}; not rolling back") from None
        if digest(now) == r.sha256_before:
            continue
        if digest(now) != r.sha256_after:
            raise RefusedError(
                f"{r.path} changed since fix {cs.id} wrote it; not rolling back over that edit"
            )
        old = journal.read_backup(r.backup) if r.backup else None
        if digest(old) != r.sha256_before:
            raise RefusedError(f"backup {r.backup} of {r.path} does not match the journal")
        undo_files.append(FileUndo(r, real, now, old))
    undo_runtime: list[RuntimeRecord] = []
    for rr in cs.runtime:
        runtime_now = host.read_sysctl(rr.key)
        value = None if isinstance(runtime_now, Unavailable) else fold(runtime_now)
        if value is not None and same(rr.key, value, rr.before):
            continue
        if value is None or not same(rr.key, value, rr.after):
            raise RefusedError(
                f"{rr.key} is {value!r}, not {rr.after!r} as fix {cs.id} left it;"
                " not rolling back over that change"
            )
        undo_runtime.append(rr)
    if undo_runtime and cs.netns and host.netns() not in ("", cs.netns):
        raise RefusedError(
            f"fix {cs.id} changed runtime values in {cs.netns}; this is"
            f" {host.netns()}: run rollback there"
        )
    return RollbackPlan(cs, tuple(undo_files), tuple(undo_runtime))


def render_rollback(rb: RollbackPlan, root: Path = Path("/")) -> str:
    from auditor.fix.plan import file_diff
    from auditor.hostfs import shown

    out = [f"rollback of change set {rb.changeset.id} ({', '.join(rb.changeset.rules)}):"]
    if rb.runtime:
        out.append("runtime:")
        out.extend(f"  {r.key}: {r.after!r} -> {r.before!r}" for r in rb.runtime)
    for f in rb.files:
        edit = FileEdit(f.record.path, f.real, f.current, f.restore or b"")
        if f.restore is None:
            out.append(f"remove {shown(root, f.record.path)} (created by fix)")
        else:
            out.append(file_diff(edit, root).rstrip("\n"))
    if rb.empty:
        out.append("files and runtime values are already as before the fix")
    return "\n".join(out) + "\n"


def apply_rollback(host: HostRoot, rb: RollbackPlan) -> None:
    """Restore files and runtime values of the change set; on failure, put back what it undid."""
    journal = Journal(host)
    with journal.lock():
        try:
            still = choose(journal.load(), rb.changeset.id)
        except AuditorError:
            still = None
        if still != rb.changeset:
            raise RefusedError("the journal changed since the rollback was planned; run it again")
        done: list[Callable[[], None]] = []
        try:
            for f in rb.files:
                if f.restore is None:
                    dirs = [
                        host.path(target.resolve_in_root(host, d)) for d in f.record.created_dirs
                    ]
                    _remove(host, f.real, dirs)
                else:
                    _write(host, f.real, f.restore)
                done.append(_redo_file(host, f))
            for rr in reversed(rb.runtime):
                write_sysctl(host, rr.key, rr.before)
                done.append(_redo_runtime(host, rr))
        except Exception as exc:
            for redo in reversed(done):
                with contextlib.suppress(Exception):
                    redo()
            reason = exc.message if isinstance(exc, AuditorError) else _os_reason(exc)
            raise FixError(f"rollback failed: {reason}; the fix is left in place") from None
        journal.set_state(rb.changeset.id, "rolled-back")


def _redo_file(host: HostRoot, f: FileUndo) -> Callable[[], None]:
    def redo() -> None:
        if f.current is not None:
            _write(host, f.real, f.current)

    return redo


def _redo_runtime(host: HostRoot, rr: RuntimeRecord) -> Callable[[], None]:
    return lambda: write_sysctl(host, rr.key, rr.after)
