"""Which file `fix` may write, resolved inside `--root`, and what boot would make of the result.

Symlinks are followed as a chroot would: an absolute link target means `<root>/target`, and `..`
never climbs above the root. So `/etc/sysctl.d/99-sysctl.conf -> ../sysctl.conf` under a
temp root writes the temp root's `sysctl.conf`, never the host's, and a link to `/dev/null`
(a masked name) is refused instead of followed.

Before anything is written, the boot order is *simulated*: the sysctl trees are copied to a
scratch root, the planned bytes are written there, and the persistent model is recomputed. The
plan is kept only when boot would then apply the proposed value; the same check runs again on
the real files after the write.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from auditor.errors import InputError, RefusedError, UsageError
from auditor.facts.model import PersistedSysctl, Unavailable
from auditor.facts.persisted import chase, collect_persisted
from auditor.hostfs import HostRoot

SYSCTL_CONF = PurePosixPath("/etc/sysctl.conf")
SYSCTL_D = PurePosixPath("/etc/sysctl.d")
BOOT_TREES: tuple[str, ...] = (
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
)
"""systemd-sysctl's directories (sysctl.d(5)), plus procps' /lib/sysctl.d."""


def real_root(host: HostRoot) -> Path:
    return host.root


def resolve_in_root(host: HostRoot, host_path: str | PurePosixPath) -> PurePosixPath:
    """The host path `host_path` finally names, links followed inside the root (as boot does)."""
    try:
        return PurePosixPath(chase(host, str(host_path)))
    except OSError as exc:
        raise InputError(str(host_path), None, exc.strerror or str(exc)) from None


def host_view(host: HostRoot, real: Path) -> str:
    """How the host names a real file under the root (the inverse of `real_path`)."""
    rel = real.relative_to(real_root(host)).as_posix()
    return "/" if rel == "." else "/" + rel


def real_path(host: HostRoot, resolved: PurePosixPath) -> Path:
    """The real file behind a resolved host path (no link left to follow)."""
    return real_root(host).joinpath(*resolved.parts[1:])


def check_named_file(text: str) -> PurePosixPath:
    """`--file` as the host sees it: `/etc/sysctl.conf` or `/etc/sysctl.d/NAME.conf` only."""
    if any(ord(c) < 32 for c in text):
        raise UsageError(f"--file {text!r}: control characters in the path")
    p = PurePosixPath(text)
    if not p.is_absolute() or ".." in p.parts:
        raise UsageError(
            f"--file {text!r}: expected an absolute host path without '..'"
            " (/etc/sysctl.d/NAME.conf or /etc/sysctl.conf)"
        )
    if p == SYSCTL_CONF:
        return p
    if p.parent == SYSCTL_D and p.name.endswith(".conf") and not p.name.startswith("."):
        return p
    raise UsageError(
        f"--file {text!r}: fix writes only /etc/sysctl.d/NAME.conf or /etc/sysctl.conf"
        " (under --root)"
    )


def writable_target(host: HostRoot, named: str | PurePosixPath) -> PurePosixPath:
    """The resolved host path `fix` may write for `named`, or RefusedError saying why not.

    Only files under `/etc` belong to the administrator: `/usr/lib/sysctl.d` is the package
    manager's (an upgrade would undo the edit) and `/run/sysctl.d` is gone at the next boot.
    """
    resolved = resolve_in_root(host, named)
    if resolved == PurePosixPath("/dev/null"):
        raise RefusedError(f"{named}: masked (a link to /dev/null); refusing to write through it")
    ok = resolved == SYSCTL_CONF or (
        resolved.parent == SYSCTL_D
        and resolved.name.endswith(".conf")
        and not resolved.name.startswith(".")
    )
    if not ok:
        via = f" (a link to {resolved})" if resolved != PurePosixPath(named) else ""
        raise RefusedError(
            f"{named}{via}: not an administrator's sysctl file"
            " (/etc/sysctl.d/NAME.conf or /etc/sysctl.conf); refusing to write it"
        )
    real = real_path(host, resolved)
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        return resolved
    if not stat.S_ISREG(st.st_mode):
        raise RefusedError(f"{named}: not a regular file; refusing to write it")
    return resolved


def read_bytes(host: HostRoot, resolved: PurePosixPath) -> bytes | None:
    try:
        return real_path(host, resolved).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(str(resolved), None, exc.strerror or str(exc)) from None


def persisted_model(host: HostRoot) -> PersistedSysctl:
    got = collect_persisted(host)
    if isinstance(got, Unavailable):
        raise RefusedError(f"cannot read the persistent sysctl files: {got.reason}")
    return got


def _copy_tree(host: HostRoot, scratch: Path, tree: str) -> None:
    resolved = resolve_in_root(host, tree)
    src = real_path(host, resolved)
    if not src.is_dir():
        return
    dst = scratch.joinpath(*PurePosixPath(tree).parts[1:])
    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True, ignore=_not_files)


def _not_files(directory: str, names: list[str]) -> set[str]:
    """FIFOs, sockets and devices: copying would hang or fail, and boot reads nothing from them
    that the model counts (they are "unreadable" problems in the real tree)."""
    skip = set()
    for name in names:
        mode = os.lstat(os.path.join(directory, name)).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            skip.add(name)
    return skip


def simulate_boot(host: HostRoot, edits: Mapping[PurePosixPath, bytes]) -> PersistedSysctl:
    """The boot model as it would be with `edits` (resolved host path -> new bytes) written."""
    with tempfile.TemporaryDirectory(prefix="portaudit-plan-") as tmp:
        scratch = Path(tmp)
        for tree in BOOT_TREES:
            _copy_tree(host, scratch, tree)
        conf = read_bytes(host, resolve_in_root(host, SYSCTL_CONF))
        if conf is not None:
            (scratch / "etc").mkdir(exist_ok=True)
            (scratch / "etc" / "sysctl.conf").write_bytes(conf)
        for resolved, data in edits.items():
            dst = scratch.joinpath(*resolved.parts[1:])
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink():
                dst.unlink()
            dst.write_bytes(data)
        return persisted_model(HostRoot(proc=host.proc, root=scratch))
