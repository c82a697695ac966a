"""Reading what an operator or a `--proc` tree hands us: regular files only, and never too much.

A FIFO blocks `open()` and `read()` forever; `/dev/zero` never ends; a directory is no file.
Every input is opened with O_NONBLOCK (so a FIFO's open returns at once), checked with `fstat`
on the open descriptor (so a link swapped after a check changes nothing), refused unless it is a
regular file, and read up to a limit. Kernel files under `/proc` are regular files whose size
is reported as 0, so the limit, not the size, is what bounds them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from functools import partial
from pathlib import Path

MAX_KERNEL_FILE = 16 * 1024 * 1024
"""One `/proc` file read whole (netstat, snmp, sockstat, a sysctl): real ones are kilobytes."""
MAX_CONFIG_FILE = 4 * 1024 * 1024
"""A rule file, the config file or a sysctl.d file."""
MAX_SNAPSHOT = 256 * 1024 * 1024
"""A `facts` snapshot; large hosts have many destinations, but not this many."""
MAX_LINE = 4096
"""A `/proc/net/tcp` line is 150 bytes; a longer "line" is not one the kernel printed."""


class NotRegular(OSError):
    """A FIFO, device or socket where a file was expected."""

    def __init__(self, path: str | Path, mode: int) -> None:
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        super().__init__(errno.EINVAL, f"{kind}, not a regular file", str(path))


class TooLarge(OSError):
    def __init__(self, path: str | Path, limit: int) -> None:
        super().__init__(
            errno.EFBIG, f"larger than {limit // 1024} KiB; refusing to read it", str(path)
        )


def open_regular(path: str | Path) -> int:
    """A read-only descriptor of the regular file `path`; IsADirectoryError, NotRegular else."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        if not stat.S_ISREG(mode):
            raise NotRegular(path, mode)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: str | Path, limit: int) -> bytes:
    """The whole regular file, or TooLarge past `limit` bytes (checked while reading: `/proc`
    files report size 0)."""
    fd = open_regular(path)
    try:
        return read_fd(fd, limit, path)
    finally:
        os.close(fd)


def read_fd(fd: int, limit: int, path: str | Path) -> bytes:
    """Everything left in `fd`, or TooLarge (naming `path`) past `limit` bytes.

    Reads start small and double: the kernel allocates and zeroes a buffer the size of each
    read of a `/proc/sys` file, so asking for a megabyte to get `32768\t60999` cost eight
    times a 4 KiB read, on each of the forty sysctls an audit reads.
    """
    chunks: list[bytes] = []
    total = 0
    size = 4096
    while chunk := os.read(fd, min(size, limit + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise TooLarge(path, limit)
        size = min(size * 2, 1 << 20)
    return b"".join(chunks)


def read_text(path: str | Path, limit: int) -> str:
    """`read_bytes` decoded as strict UTF-8 (UnicodeDecodeError for anything else)."""
    return read_bytes(path, limit).decode("utf-8")


@contextlib.contextmanager
def open_lines(path: str | Path, encoding: str = "ascii") -> Iterator[Iterator[str]]:
    """The lines of a regular file, streamed; a line longer than MAX_LINE comes in pieces.

    For files too large to read whole (`/proc/net/tcp` with a million sockets): memory stays
    bounded by MAX_LINE however the file is shaped.
    """
    fd = open_regular(path)
    with open(fd, encoding=encoding, errors="strict") as fh:
        yield iter(partial(fh.readline, MAX_LINE), "")
