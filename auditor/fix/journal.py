"""The record of every change `fix` makes, with backups, under `<root>/var/lib/portaudit/`.

Written *before* the first change (state `applying`), so a crash mid-apply still leaves enough
to undo it; `rollback` reads it back. Never inside a sysctl directory: a backup named `*.conf`
there would be applied at boot. One lock file serialises `fix` and `rollback` (flock, so a
killed process never leaves it held).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from auditor.errors import InputError, RefusedError
from auditor.facts.model import SnapshotError, from_jsonable, to_jsonable
from auditor.hostfs import STATE_DIR, HostRoot
from auditor.safepath import Dir

SCHEMA = 1


def digest(data: bytes | None) -> str:
    """sha256 of a file's bytes; "" for a file that does not exist."""
    return "" if data is None else hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class FileRecord:
    path: str
    """The host path the plan named (`/etc/sysctl.d/99-zz-portaudit.conf`)."""
    real: str
    """The real file written, as a host path (links resolved inside --root)."""
    backup: str
    """The backup's name in `backups/`; "" when the file did not exist before."""
    sha256_before: str
    """"" when the file did not exist."""
    sha256_after: str
    created_dirs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuntimeRecord:
    key: str
    before: str
    after: str


@dataclass(frozen=True, slots=True)
class ChangeSet:
    id: str
    time: float
    netns: str
    state: str
    """applying | applied | failed (restored) | restore-failed | rolled-back"""
    rules: tuple[str, ...]
    files: tuple[FileRecord, ...]
    runtime: tuple[RuntimeRecord, ...]
    keys: tuple[str, ...] = ()
    """Every key the change set set, at runtime or in a file."""


@dataclass(frozen=True, slots=True)
class JournalFile:
    schema: int
    changesets: tuple[ChangeSet, ...]


def new_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


class Journal:
    """`journal.json`, `backups/` and `lock` in the state directory under --root.

    Every file is reached from the root's descriptor without following a link (auditor.safepath):
    a planted `var/lib/portaudit`, `backups`, `journal.json` or `lock` link is refused, never
    followed out of the root.
    """

    def __init__(self, host: HostRoot) -> None:
        self.host = host
        self.dir: Path = host.path(STATE_DIR)
        self.file = self.dir / "journal.json"
        self.backups = self.dir / "backups"

    def _open(self, sub: str = "", *, create: bool = False) -> Dir:
        rel = STATE_DIR.lstrip("/") + (f"/{sub}" if sub else "")
        with Dir.open(self.host.root) as top:
            return top.subdir(rel, create=create, mode=0o700)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        try:
            with self._open(create=True) as d:
                fd = d.open_file("lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            where = exc.filename or self.dir
            raise RefusedError(
                f"{where}: cannot create the lock file: {exc.strerror or exc}"
            ) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RefusedError(
                    f"{self.dir / 'lock'}: another portaudit fix or rollback is running"
                ) from None
            yield
        finally:
            os.close(fd)

    def load(self) -> list[ChangeSet]:
        try:
            with self._open() as d:
                data = d.read("journal.json")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise InputError(
                exc.filename or self.file, None, f"cannot read the journal: {exc.strerror or exc}"
            ) from None
        if data is None:
            return []
        try:
            doc = from_jsonable(JournalFile, json.loads(data.decode("utf-8")))
        except (ValueError, RecursionError, SnapshotError) as exc:
            raise InputError(self.file, None, f"not a portaudit journal: {exc}") from None
        return list(doc.changesets)

    def save(self, sets: list[ChangeSet]) -> None:
        body = json.dumps(to_jsonable(JournalFile(SCHEMA, tuple(sets))), indent=1) + "\n"
        with self._open(create=True) as d:
            d.replace("journal.json", body.encode("utf-8"), mode=0o600)

    def add(self, cs: ChangeSet, keep: int = 50) -> None:
        """Append `cs`, keeping the newest `keep` change sets; the pruned ones' backups go."""
        sets = [*self.load(), cs]
        pruned, kept = sets[:-keep], sets[-keep:]
        self.save(kept)
        for old in pruned:
            for r in old.files:
                if r.backup and "/" not in r.backup and not r.backup.startswith("."):
                    with contextlib.suppress(OSError):
                        (self.backups / r.backup).unlink()

    def set_state(self, cs_id: str, state: str) -> None:
        self.save([replace(c, state=state) if c.id == cs_id else c for c in self.load()])

    def last(self) -> ChangeSet | None:
        """The last change set that changed something (a failed, restored one did not)."""
        sets = [c for c in self.load() if c.state != "failed"]
        return sets[-1] if sets else None

    def get(self, cs_id: str) -> ChangeSet | None:
        return next((c for c in self.load() if c.id == cs_id), None)

    def write_backup(self, cs_id: str, index: int, data: bytes) -> str:
        name = f"{cs_id}.{index}.bak"
        with self._open("backups", create=True) as d:
            d.replace(name, data, mode=0o600)
        return name

    def read_backup(self, name: str) -> bytes:
        if "/" in name or name.startswith("."):
            raise InputError(self.file, None, f"bad backup name {name!r}")
        try:
            with self._open("backups") as d:
                data = d.read(name)
        except OSError as exc:
            raise InputError(self.backups / name, None, f"backup unreadable: {exc}") from None
        if data is None:
            raise InputError(self.backups / name, None, "backup unreadable: no such file")
        return data
