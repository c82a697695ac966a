"""Atomic file replacement: temp file in the same directory, fsync, rename, fsync the directory.

A reader (node_exporter's textfile collector, systemd-sysctl at boot) sees the old bytes or the
new bytes, never half of either. The temp name never ends in the target's suffix (`.prom`,
`.conf`) so a collector globbing `*.prom` or `*.conf` can never pick it up mid-write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class NotRegularFile(OSError):
    """The path is a device, FIFO, socket or directory: replacing it would destroy it (a rename
    over `/dev/null` leaves a regular file there, for every process on the host)."""

    def __init__(self, path: Path) -> None:
        super().__init__(errno.EPERM, "not a regular file: refusing to replace it", str(path))


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `path` with `data` atomically, keeping its mode and owner when it exists.

    A symlinked `path` is followed: the link's target is replaced and the link stays a link.
    Only a regular file (or nothing) is ever replaced: anything else raises NotRegularFile.
    """
    target = Path(os.path.realpath(path))
    directory = target.parent
    try:
        st: os.stat_result | None = target.stat()
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(target)
    tmp = directory / f".{target.name}.portaudit-tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if st is not None:
                os.fchmod(fd, stat.S_IMODE(st.st_mode))
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, st.st_uid, st.st_gid)
            else:
                os.fchmod(fd, 0o644 if mode is None else mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(directory)
