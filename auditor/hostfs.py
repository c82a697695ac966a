"""Every host path goes through one object, so `--proc` and `--root` are honoured everywhere.

Tests and image builds point `proc` at a fixture tree and `root` at a temp dir; nothing else in
portaudit may open `/proc/...` or `/etc/...` directly. Sysctl keys become paths only here, after
validation, so a key from a rule or a config file can never walk out of `/proc/sys`.
"""

from __future__ import annotations

import errno
import functools
import os
import posixpath
import re
from pathlib import Path, PurePosixPath

from auditor.errors import InputError, UsageError
from auditor.facts.model import Unavailable
from auditor.facts.sysctlvalue import fold
from auditor.inputfile import MAX_KERNEL_FILE, NotRegular, TooLarge, read_text
from auditor.record import dataclass

_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@+\-/]*$")


_SWAP = str.maketrans("./", "/.")


def systemd_normalize(key: str) -> str:
    """The slash form systemd-sysctl uses internally (`sysctl_normalize()` in sysctl-util.c).

    The first separator decides the form: if it is `.`, dots are separators and a slash is a
    dot inside a name (a VLAN interface `eth0.100` written `eth0/100`), so the two swap; if it
    is `/`, the key is already a path. Repeated slashes and `.` components then collapse.
    """
    first = re.search(r"[./]", key)
    if first is not None and first.group() == ".":
        key = key.translate(_SWAP)
    return "/".join(p for p in key.split("/") if p not in ("", "."))


def normalize_sysctl_key(key: str) -> str:
    """The dotted form of a sysctl key, as `sysctl -a` prints it, from either form."""
    return systemd_normalize(key.strip()).translate(_SWAP)


def validate_sysctl_key(key: str) -> str:
    """Return the dotted key or raise UsageError: no `..`, no empty component, no odd bytes.

    Checked on the key as written, before normalising would quietly collapse `net..ipv4`:
    a key from a rule or a command line that needs collapsing is a mistake worth naming.
    """
    raw = key.strip()
    if not raw or any(p in ("", "..") for p in re.split(r"[./]", raw.lstrip("/"))):
        raise UsageError(f"invalid sysctl key {key!r}")
    k = normalize_sysctl_key(raw)
    if not _KEY_RE.match(k):
        raise UsageError(f"invalid sysctl key {key!r}")
    return k


def sysctl_relpath(key: str) -> PurePosixPath:
    """`net.ipv4.tcp_tw_reuse` -> `net/ipv4/tcp_tw_reuse` (dots inside a component were `/`)."""
    k = validate_sysctl_key(key)
    parts = [p.replace("/", ".") for p in k.split(".")]
    return PurePosixPath(*parts)


@functools.lru_cache(maxsize=4096)
def _sysctl_path(proc: Path, key: str) -> Path:
    """Made once per key: `--all-netns` reads the same keys in every namespace."""
    return proc / "sys" / sysctl_relpath(key)


_ABSENT = ": not present"


def absent(path: str | Path) -> Unavailable:
    """The reason for a file that does not exist (for a sysctl: a key this kernel lacks)."""
    return Unavailable(f"{path}{_ABSENT}")


def is_absent(reason: str) -> bool:
    """True for a reason made by `absent`, as opposed to one for a file we may not read."""
    return reason.endswith(_ABSENT)


STATE_DIR = "/var/lib/portaudit"
"""Where portaudit keeps state under the root: `fix`'s journal and backups, the counters of
the last audit per network namespace (`counters/net-<inode>.json`)."""


def shown(root: Path, host_path: str) -> str:
    """A host path as the operator must look for it: under --root when that is not `/`."""
    if not host_path.startswith("/") or root == Path("/"):
        return host_path
    return str(root.joinpath(*Path(host_path).parts[1:]))


@dataclass(frozen=True, slots=True)
class HostRoot:
    """Where the host is: `proc` is what `/proc` means, `root` what `/` means for config files."""

    proc: Path = Path("/proc")
    root: Path = Path("/")

    @property
    def is_live(self) -> bool:
        """True when reading the running kernel's own /proc (netlink and pid scans make sense)."""
        return self.proc.resolve() == Path("/proc")

    def proc_path(self, rel: str) -> Path:
        return self.proc / rel.lstrip("/")

    def sysctl_path(self, key: str) -> Path:
        return _sysctl_path(self.proc, key)

    def path(self, host_path: str | PurePosixPath) -> Path:
        """The real path of a host path (`/etc/sysctl.conf`) under `root`; refuses `..` escapes."""
        p = PurePosixPath(host_path)
        if not p.is_absolute():
            raise UsageError(f"expected an absolute path, got {str(host_path)!r}")
        if ".." in p.parts:
            raise UsageError(f"path {str(host_path)!r} must not contain '..'")
        return self.root.joinpath(*p.parts[1:])

    def host_view(self, real: Path) -> str:
        """The inverse of `path`: how the host names a file that lives under `root`."""
        try:
            rel = real.relative_to(self.root)
        except ValueError:
            return str(real)
        return "/" + rel.as_posix() if rel.as_posix() != "." else "/"

    def read_text(self, path: str | Path) -> str | Unavailable:
        """The file's text, or Unavailable with the reason it could not be read.

        Absent and forbidden files are facts about the host (an old kernel, no root); only
        content that is there but malformed is an error, and that is the parser's to raise.
        """
        try:
            return read_text(path, MAX_KERNEL_FILE)
        except FileNotFoundError:
            return absent(path)
        except PermissionError:
            return Unavailable(f"{path}: permission denied (run as root)")
        except IsADirectoryError:
            return Unavailable(f"{path}: is a directory")
        except UnicodeDecodeError as exc:
            raise InputError(path, None, f"not UTF-8 text ({exc.reason})") from None
        except (NotRegular, TooLarge) as exc:
            raise InputError(path, None, exc.strerror or str(exc)) from None
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EINVAL, errno.EACCES, errno.EPERM, errno.ENOENT):
                return Unavailable(f"{path}: {exc.strerror}")
            raise InputError(path, None, exc.strerror or str(exc)) from None

    def netns(self) -> str:
        """`net:[inode]` of the network namespace this process runs in, as
        `readlink /proc/self/ns/net` shows it ("" when unknown or a fixture has none)."""
        try:
            return os.readlink(self.proc_path("self/ns/net"))
        except OSError:
            return ""

    def read_proc(self, rel: str) -> str | Unavailable:
        return self.read_text(self.proc_path(rel))

    def read_sysctl(self, key: str) -> str | Unavailable:
        """The runtime value of a sysctl, whitespace folded (`32768\\t60999` -> `32768 60999`)."""
        # `sysctl_path(key)` as text: three `Path` objects per key were a tenth of the time
        # reading the forty sysctls of an audit took
        rel = [p.replace("/", ".") for p in validate_sysctl_key(key).split(".")]
        text = self.read_text(posixpath.join(str(self.proc), "sys", *rel))
        if isinstance(text, Unavailable):
            return text
        return fold(text)
