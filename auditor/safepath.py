"""Writing as root into trees other users can change: never through a link, never out of the root.

portaudit writes into directories it does not own (node_exporter's textfile directory, an image
tree given as `--root`, `/etc/sysctl.d`). A path string is resolved again by the kernel at every
`open`, so a link planted between a check and the write leads the write anywhere. Here a
directory is opened once, as a descriptor, and every name below it is resolved relative to that
descriptor without following any link: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where
the kernel has it (Linux 5.6), else one `openat(O_NOFOLLOW | O_DIRECTORY)` per component. The
final name is never opened for writing: a temp file is created beside it with
`O_CREAT | O_EXCL | O_NOFOLLOW` and renamed over it with `renameat`, which replaces a link
rather than following it. Links that portaudit means to follow (the boot model's
`99-sysctl.conf -> ../sysctl.conf`) are resolved by the caller, inside the root, before the
resolved path comes here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from auditor.inputfile import read_fd

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_SYS_OPENAT2 = 437
"""The same number on every architecture: openat2 came after the syscall tables were unified."""

TEMP_MARK = ".portaudit-tmp."
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.portaudit-tmp\.(?P<pid>[0-9]+)(?:\.[0-9a-f]+)?$")
"""Our temp names: `.NAME.portaudit-tmp.PID[.RANDOM]`. Never ends in `.conf` or `.prom`."""

MAX_OWN_FILE = 64 * 1024 * 1024
"""Portaudit's own files (journal, backups, units, counters) are far smaller than this."""


class NotRegularFile(OSError):
    """The path is a device, FIFO, socket or directory: replacing it would destroy it (a rename
    over `/dev/null` leaves a regular file there, for every process on the host)."""

    def __init__(self, path: str | Path, what: str = "not a regular file") -> None:
        super().__init__(errno.EPERM, f"{what}: refusing to replace it", str(path))


class LinkRefused(NotRegularFile):
    """A symbolic link where portaudit writes or reads its own files: it could lead anywhere."""

    def __init__(self, path: str | Path) -> None:
        OSError.__init__(
            self,
            errno.ELOOP,
            "a symbolic link, not a regular file: refusing to follow it",
            str(path),
        )


class _Openat2:
    """`openat2(2)` through libc's `syscall`; None where the kernel or a seccomp filter lacks it.

    ctypes is loaded on first use only: most runs (an audit to stdout) never write a file.
    """

    available: bool | None = None
    _call: Callable[..., int] | None = None

    @classmethod
    def open(cls, dirfd: int, rel: str, flags: int) -> int | None:
        if cls.available is False:
            return None
        try:
            import ctypes

            if cls._call is None:
                cls._call = ctypes.CDLL(None, use_errno=True).syscall
        except (ImportError, OSError, AttributeError):
            cls.available = False  # no ctypes or no libc to call through: walk instead
            return None

        class How(ctypes.Structure):
            _fields_ = (
                ("flags", ctypes.c_uint64),
                ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64),
            )

        call = cls._call
        resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
        how = How(flags | os.O_CLOEXEC, 0, resolve)
        fd = int(
            call(
                ctypes.c_long(_SYS_OPENAT2),
                ctypes.c_int(dirfd),
                ctypes.c_char_p(os.fsencode(rel)),
                ctypes.byref(how),
                ctypes.c_size_t(ctypes.sizeof(how)),
            )
        )
        if fd >= 0:
            cls.available = True
            return fd
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EPERM) and not cls.available:
            # No openat2 here (old kernel, or a seccomp filter answering EPERM): walk instead.
            cls.available = False
            return None
        raise OSError(err, os.strerror(err), rel)


def _parts(rel: str | PurePosixPath) -> list[str]:
    """The components of a path relative to a directory; `..` is refused, not resolved."""
    parts = [p for p in PurePosixPath(rel).parts if p not in ("/", ".")]
    if ".." in parts:
        raise OSError(errno.EPERM, "'..' in a path below the root", str(rel))
    return parts


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (in our PID namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _step(at: int, name: str, create: bool, mode: int) -> tuple[int, bool]:
    """Open the directory `name` in `at` without following a link, making it (with exactly
    `mode`) when `create`; returns the descriptor and whether it was made."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=at), False
    except FileNotFoundError:
        if not create:
            raise
    made = True
    try:
        os.mkdir(name, mode, dir_fd=at)
    except FileExistsError:
        made = False
    fd = os.open(name, flags, dir_fd=at)
    if made:
        os.fchmod(fd, mode)
    return fd, made


class Dir:
    """An open directory; every name below it is resolved without following a link."""

    def __init__(self, fd: int, shown: str) -> None:
        self.fd = fd
        self.shown = shown.rstrip("/") or "/"
        self.created: list[str] = []
        """Directories `subdir(create=True)` made, outermost first, as paths from the start dir."""

    @classmethod
    def open(cls, path: str | Path) -> Dir:
        """The directory the operator named (`--root`, the `-o` file's directory).

        Links in this path are the operator's own choice and are followed; nothing below it is.
        """
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return cls(fd, str(path))

    def __enter__(self) -> Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def path(self, name: str | PurePosixPath = "") -> str:
        """How a name below this directory is shown to the operator."""
        name = str(name)
        if not name:
            return self.shown
        return f"{self.shown}/{name}" if self.shown != "/" else f"/{name}"

    def _refusal(self, at: int, name: str, shown: str) -> OSError:
        try:
            st = os.stat(name, dir_fd=at, follow_symlinks=False)
        except OSError as exc:
            return exc
        if stat.S_ISLNK(st.st_mode):
            return LinkRefused(shown)
        return NotADirectoryError(errno.ENOTDIR, "not a directory", shown)

    def subdir(self, rel: str | PurePosixPath, *, create: bool = False, mode: int = 0o755) -> Dir:
        """The directory `rel` below this one, opened without following any link.

        With `create`, missing directories are made with exactly `mode` for the last one and
        0755 for those on the way, whatever the umask (systemd-sysctl and node_exporter run as
        other users and must be able to list them), and recorded in `created`.
        A link anywhere on the way raises LinkRefused.
        """
        parts = _parts(rel)
        if not parts:
            return Dir(os.dup(self.fd), self.shown)
        if not create:
            with contextlib.suppress(OSError):
                fd = _Openat2.open(self.fd, "/".join(parts), os.O_RDONLY | os.O_DIRECTORY)
                if fd is not None:
                    return Dir(fd, self.path("/".join(parts)))
        cur = os.dup(self.fd)
        done: list[str] = []
        created: list[str] = []
        try:
            for name in parts:
                done.append(name)
                shown = self.path("/".join(done))
                want = mode if len(done) == len(parts) else 0o755
                try:
                    nxt, made = _step(cur, name, create, want)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise self._refusal(cur, name, shown) from None
                    # the name alone would not tell the operator where
                    raise OSError(exc.errno, exc.strerror, shown) from None
                if made:
                    created.append("/".join(done))
                os.close(cur)
                cur = nxt
        except BaseException:
            os.close(cur)
            raise
        out = Dir(cur, self.path("/".join(parts)))
        out.created = created
        return out

    def only_ours(self) -> bool:
        """True when no other user can add or swap names here (owned by root or us, and not
        group- or world-writable): links found here were made by root or by us."""
        st = os.fstat(self.fd)
        return st.st_uid in (0, os.geteuid()) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)

    def lstat(self, name: str) -> os.stat_result | None:
        """The name itself (a link is not followed), or None when absent."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def readlink(self, name: str) -> str | None:
        """A link's target text, or None when `name` is not a link."""
        try:
            return os.readlink(name, dir_fd=self.fd)
        except OSError:
            return None

    def read(self, name: str, limit: int = MAX_OWN_FILE) -> bytes | None:
        """A regular file's bytes, or None when absent; a link or anything else is refused."""
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd
            )
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LinkRefused(self.path(name)) from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFile(self.path(name))
            return read_fd(fd, limit, self.path(name))
        finally:
            os.close(fd)

    def remove_stale_temps(self) -> list[str]:
        """Delete our own temp files here whose writer is gone (killed mid-write).

        Only regular files with our exact naming and the pid of a process that no longer
        exists are removed; a concurrent writer's temp file is left alone.
        """
        removed: list[str] = []
        try:
            names = os.listdir(self.fd)
        except OSError:
            return removed
        for entry in names:
            m = _TEMP_RE.match(entry)
            if m is None or pid_alive(int(m["pid"])):
                continue
            st = self.lstat(entry)
            if st is None or not stat.S_ISREG(st.st_mode):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry, dir_fd=self.fd)
                removed.append(entry)
        return removed

    def replace(
        self,
        name: str,
        data: bytes,
        *,
        mode: int | None = None,
        replace_link: bool = False,
    ) -> None:
        """Replace the file `name` with `data` atomically, keeping its mode and owner.

        A link at `name` is refused, or with `replace_link` replaced by the new file (the
        textfile convention: the rename makes a regular file where the link was); it is never
        written through. A device, FIFO or directory is refused. Readers see the old bytes or
        the new, never half of either.
        """
        if "/" in name or name in ("", ".", ".."):
            raise OSError(errno.EINVAL, "not a file name", name)
        st = self.lstat(name)
        if st is not None and stat.S_ISLNK(st.st_mode):
            if not replace_link:
                raise LinkRefused(self.path(name))
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(self.path(name))
        self.remove_stale_temps()
        tmp = f".{name}{TEMP_MARK}{os.getpid()}.{os.urandom(4).hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600, dir_fd=self.fd)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, self.path(name)) from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if st is not None:
                    os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o777)  # never set-id
                    with contextlib.suppress(PermissionError):
                        os.fchown(fd, st.st_uid, st.st_gid)
                else:
                    os.fchmod(fd, 0o644 if mode is None else mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            now = self.lstat(name)
            if now is not None and stat.S_ISLNK(now.st_mode) and not replace_link:
                raise LinkRefused(self.path(name))
            if now is not None and not stat.S_ISREG(now.st_mode) and not stat.S_ISLNK(now.st_mode):
                raise NotRegularFile(self.path(name))
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self.fd)
            raise
        os.fsync(self.fd)

    def remove(self, name: str) -> bool:
        """Unlink `name` (a link itself, never its target); False when it was not there."""
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        os.fsync(self.fd)
        return True

    def listdir(self) -> list[str]:
        return os.listdir(self.fd)

    def rmdir(self, name: str) -> None:
        os.rmdir(name, dir_fd=self.fd)

    def symlink(self, target: str, name: str) -> None:
        os.symlink(target, name, dir_fd=self.fd)

    def open_file(self, name: str, flags: int, mode: int = 0o600) -> int:
        """`openat` of a file in this directory that refuses a link (lock files)."""
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LinkRefused(self.path(name)) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotRegularFile(self.path(name))
        return fd


@contextlib.contextmanager
def under(
    root: str | Path, rel: str | PurePosixPath, *, create: bool = False, mode: int = 0o755
) -> Iterator[Dir]:
    """The directory `rel` below `root`, no link followed below `root` itself."""
    with Dir.open(root) as top, top.subdir(rel, create=create, mode=mode) as d:
        yield d


def split(host_path: str | PurePosixPath) -> tuple[PurePosixPath, str]:
    """`/etc/sysctl.d/x.conf` -> (`etc/sysctl.d`, `x.conf`): the parent below the root, the name."""
    p = PurePosixPath(host_path)
    parts = _parts(p)
    if not parts:
        raise OSError(errno.EINVAL, "not a file path", str(host_path))
    return PurePosixPath(*parts[:-1]) if len(parts) > 1 else PurePosixPath("."), parts[-1]


MAX_LINKS = 40
"""Links followed on one path before giving up, as the kernel does (ELOOP)."""


def _made_by_us(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def open_output_dir(path: str | Path) -> Dir:
    """The `-o` file's directory, walked one component at a time.

    A link on the way is the operator's choice, and followed, only where no other user could
    have made it: a link root or we own, or one in a directory only we can write. A link
    another user planted (in a world-writable directory, or in a textfile directory's parent
    that a service user owns) is refused: it would send root's write anywhere.
    """
    text = os.fspath(path)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    fd = os.open("/" if text.startswith("/") else ".", flags)
    todo = [c for c in text.split("/") if c not in ("", ".")]
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", text)
                here = os.fstat(fd)
                trusted_dir = _made_by_us(here) and not here.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
                if not (_made_by_us(st) or trusted_dir):
                    raise LinkRefused(f"{text} (a link another user owns: {name})")
                target = os.readlink(name, dir_fd=fd)
                if target.startswith("/"):
                    nfd = os.open("/", flags)
                    os.close(fd)
                    fd = nfd
                todo = [c for c in target.split("/") if c not in ("", ".")] + todo
                continue
            nfd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return Dir(fd, text)
    except BaseException:
        os.close(fd)
        raise


def write_output(path: Path, data: bytes) -> None:
    """`-o FILE`: atomically replace FILE, or write into it when it is a FIFO or a device.

    A FIFO or a character device (`/dev/stdout`, a pipe a collector reads) is written into, as
    a shell redirection would; replacing it would destroy it. In a directory other users may
    write (node_exporter's textfile directory), a link at FILE may be theirs: it is replaced by
    the rename, never followed; a FIFO there is refused (only root makes device nodes). In a
    directory only we can write, a link is the operator's or the system's (`/dev/stdout`) and
    is followed.
    """
    with open_output_dir(path.parent) as d:
        st = d.lstat(path.name)
        via_link = st is not None and stat.S_ISLNK(st.st_mode)
        trusted = d.only_ours()
        if via_link and trusted:
            try:
                st = os.stat(path.name, dir_fd=d.fd)
            except FileNotFoundError:
                st = None
            if st is None or stat.S_ISREG(st.st_mode):
                real = Path(os.path.realpath(path))
                if real != path:
                    write_output(real, data)
                    return
        if st is not None and (stat.S_ISCHR(st.st_mode) or (stat.S_ISFIFO(st.st_mode) and trusted)):
            flags = os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC | (0 if via_link else os.O_NOFOLLOW)
            fd = os.open(path.name, flags, dir_fd=d.fd)
            try:
                got = os.fstat(fd).st_mode
                if stat.S_ISFIFO(got) or stat.S_ISCHR(got):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    return
            finally:
                os.close(fd)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        d.replace(path.name, data, mode=0o644, replace_link=True)


def read_below(
    root: Path, host_path: str | PurePosixPath, limit: int = MAX_OWN_FILE
) -> bytes | None:
    """A regular file below `root`, no link followed; None when it (or a directory) is absent."""
    parent, name = split(host_path)
    try:
        with under(root, parent) as d:
            return d.read(name, limit)
    except FileNotFoundError:
        return None


def replace_below(
    root: Path, host_path: str | PurePosixPath, data: bytes, *, mode: int | None = None
) -> list[PurePosixPath]:
    """Atomically replace a file below `root`; return the directories made for it (host paths).

    Nothing on the way is followed: a link, at the file or at any directory above it, raises
    LinkRefused at the moment of writing.
    """
    parent, name = split(host_path)
    with under(root, parent, create=True) as d:
        made = [PurePosixPath("/", c) for c in d.created]
        try:
            d.replace(name, data, mode=mode)
        except BaseException:
            _rmdirs(root, made)
            raise
        return made


def remove_below(
    root: Path, host_path: str | PurePosixPath, created: list[PurePosixPath] | None = None
) -> None:
    """Unlink a file below `root` (a link itself, never its target), then the now-empty
    directories made for it, innermost first."""
    parent, name = split(host_path)
    with contextlib.suppress(FileNotFoundError), under(root, parent) as d:
        d.remove(name)
    _rmdirs(root, created or [])


def _rmdirs(root: Path, created: list[PurePosixPath]) -> None:
    for c in reversed(created):
        up, base = split(c)
        with contextlib.suppress(OSError), under(root, up) as d:
            d.rmdir(base)
