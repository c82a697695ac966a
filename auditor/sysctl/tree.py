"""The sysctl.d directories and /etc/sysctl.conf, read once into memory.

This is the only place the boot model touches the disk: it lists the directories, chases each
symlink inside the root and reads each regular file it reaches. Paths are host paths
(`/etc/sysctl.d/99-sysctl.conf`) resolved under `HostRoot.root` as a chroot would resolve them:
an absolute link target restarts at the root and `..` never climbs above it, so a fixture tree or
an image never leaks into the running host's files (systemd's `chase(..., CHASE_PREFIX_ROOT)`).

`SysctlTree.with_edits` returns the tree as it would be after writing some files, which is how
`fix` checks a plan against the next boot without writing anything.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from auditor.hostfs import HostRoot
from auditor.inputfile import MAX_CONFIG_FILE, read_bytes
from auditor.record import dataclass, replace

BOOT_DIRS: tuple[str, ...] = (
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
)
"""systemd's CONF_PATHS("sysctl.d") without split-usr, highest precedence first (systemd 252 on
Debian 12 lists exactly these four; a split-usr build adds /lib/sysctl.d last)."""

PROCPS_DIRS: tuple[str, ...] = (*BOOT_DIRS, "/lib/sysctl.d")
"""procps-ng 4.0 `sysctl --system`: systemd's directories and /lib/sysctl.d."""

SYSCTL_CONF = "/etc/sysctl.conf"
MASKED = "/dev/null"
_MAX_HOPS = 40


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A file that exists but could not be read, and why."""

    reason: str
    denied: bool = False
    """Permission denied: the whole boot view is then unknown (run as root)."""


@dataclass(frozen=True, slots=True)
class SysctlTree:
    """The sysctl directories as boot sees them, held in memory.

    A listed file is *masked* when its link target is /dev/null or does not exist: it applies
    nothing but still hides a same-named file of a later directory.
    """

    dirs: Mapping[str, str]
    """Configured directory -> the host path it resolves to ("" when it does not resolve)."""
    names: Mapping[str, tuple[str, ...]]
    """Resolved directory -> the `*.conf` names listed in it."""
    links: Mapping[str, str]
    """Listed path (configured directory + name) -> host path after links ("" on failure)."""
    contents: Mapping[str, bytes | Unreadable]
    """Host path (links followed) -> the bytes of every file reached."""
    sysctl_conf: str
    """Where /etc/sysctl.conf leads ("" when chasing fails)."""

    @classmethod
    def read(cls, host: HostRoot) -> SysctlTree:
        """List, chase and read everything boot or procps may read under `host.root`."""
        dirs: dict[str, str] = {}
        names: dict[str, tuple[str, ...]] = {}
        links: dict[str, str] = {}
        contents: dict[str, bytes | Unreadable] = {}
        for d in PROCPS_DIRS:
            try:
                canonical = chase(host, d)
            except OSError:
                dirs[d] = ""
                continue
            dirs[d] = canonical
            if canonical not in names:
                try:
                    listed = os.listdir(host.path(canonical))
                except OSError:
                    listed = []
                names[canonical] = tuple(sorted(n for n in listed if n.endswith(".conf")))
            for name in names[canonical]:
                path = f"{d}/{name}"
                try:
                    links[path] = chase(host, path)
                except OSError:
                    links[path] = ""
                    continue
                _load(host, links[path], contents)
        try:
            conf = chase(host, SYSCTL_CONF)
        except OSError:
            conf = ""
        if conf:
            _load(host, conf, contents)
        return cls(dirs, names, links, contents, conf)

    def with_edits(self, edits: Mapping[str, bytes]) -> SysctlTree:
        """The tree after writing `edits` (host path, links already followed -> new bytes).

        A new `*.conf` file in one of the directories is listed there, as it would be at boot.
        """
        contents = dict(self.contents)
        names = {d: list(n) for d, n in self.names.items()}
        links = dict(self.links)
        for path, data in edits.items():
            contents[path] = data
            parent, name = str(PurePosixPath(path).parent), PurePosixPath(path).name
            if parent in names and name.endswith(".conf") and name not in names[parent]:
                names[parent].append(name)
                for d, canonical in self.dirs.items():
                    if canonical == parent:
                        links[f"{d}/{name}"] = path
        return replace(
            self,
            names={d: tuple(sorted(n)) for d, n in names.items()},
            links=links,
            contents=contents,
        )

    def content(self, target: str) -> bytes | Unreadable | None:
        """The bytes at a resolved host path; None when nothing is there (or it is /dev/null)."""
        if not target or target == MASKED:
            return None
        return self.contents.get(target)


def chase(host: HostRoot, host_path: str) -> str:
    """The host path `host_path` ends at after following every symlink inside the root.

    Like systemd's `chase_symlinks(..., CHASE_PREFIX_ROOT)`: absolute targets restart at the
    root and `..` never climbs above it. The result need not exist.
    """
    pending: deque[str] = deque(PurePosixPath(host_path).parts[1:])
    done: list[str] = []
    hops = 0
    while pending:
        name = pending.popleft()
        if name in ("", "."):
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        real = host.root.joinpath(*done, name)
        try:
            target = os.readlink(real)
        except OSError:
            done.append(name)
            continue
        hops += 1
        if hops > _MAX_HOPS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", host_path)
        tparts = PurePosixPath(target).parts
        if target.startswith("/"):
            done = []
            tparts = tparts[1:]
        pending.extendleft(reversed(tparts))
    return "/" + "/".join(done)


def read_config_file(path: Path) -> bytes:
    """The bytes of one configuration file; OSError when it is not a readable regular file or is
    larger than any real sysctl file (a FIFO or device placed where a file belongs is refused
    instead of hanging the read, `/dev/zero` instead of filling memory)."""
    return read_bytes(path, MAX_CONFIG_FILE)


def _load(host: HostRoot, target: str, into: dict[str, bytes | Unreadable]) -> None:
    if target == MASKED or target in into:
        return
    real = host.path(target)
    if not os.path.lexists(real):
        return
    try:
        into[target] = read_config_file(real)
    except PermissionError:
        into[target] = Unreadable("permission denied (run as root)", denied=True)
    except OSError as exc:
        into[target] = Unreadable(exc.strerror or str(exc))
