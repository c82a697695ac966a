"""Atomic file replacement: temp file in the same directory, fsync, rename, fsync the directory.

A reader (node_exporter's textfile collector, systemd-sysctl at boot) sees the old bytes or the
new bytes, never half of either. The temp name never ends in the target's suffix (`.prom`,
`.conf`) so a collector globbing `*.prom` or `*.conf` can never pick it up mid-write. The work
is done by `auditor.safepath`, relative to the directory's descriptor.
"""

from __future__ import annotations

import os
from pathlib import Path

from auditor.safepath import Dir, LinkRefused, NotRegularFile

__all__ = ["LinkRefused", "NotRegularFile", "fsync_dir", "write_atomic"]


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `path` with `data` atomically, keeping its mode and owner when it exists.

    The directory is the caller's; the last component is never followed: a link there, a
    device, FIFO or directory raises NotRegularFile (LinkRefused for a link). Writers below a
    root that other users can change open the root with `auditor.safepath` instead.
    """
    with Dir.open(path.parent) as d:
        d.replace(path.name, data, mode=mode)
