"""Which file `fix` may write, resolved inside `--root`, and what boot would make of the result.

Symlinks are followed as a chroot would: an absolute link target means `<root>/target`, and `..`
never climbs above the root. So `/etc/sysctl.d/99-sysctl.conf -> ../sysctl.conf` under a
temp root writes the temp root's `sysctl.conf`, never the host's, and a link to `/dev/null`
(a masked name) is refused instead of followed.

Before anything is written, the next boot is *simulated* in memory: the sysctl files are read
once into a `SysctlTree`, the planned bytes replace theirs (`with_edits`), and the pure boot
model decides every key. The plan is kept only when boot would then apply the proposed value;
the same check runs again on the real files after the write.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import PurePosixPath

from auditor.errors import InputError, RefusedError, UsageError
from auditor.facts.model import PersistedSysctl, Unavailable
from auditor.facts.persisted import collect_persisted, persisted_from_model
from auditor.hostfs import HostRoot
from auditor.sysctl import tree as sysctl_tree
from auditor.sysctl.boot import boot_view
from auditor.sysctl.tree import SysctlTree, chase, read_config_file

SYSCTL_CONF = PurePosixPath(sysctl_tree.SYSCTL_CONF)
SYSCTL_D = PurePosixPath("/etc/sysctl.d")


def resolve_in_root(host: HostRoot, host_path: str | PurePosixPath) -> PurePosixPath:
    """The host path `host_path` finally names, links followed inside the root (as boot does)."""
    try:
        return PurePosixPath(chase(host, str(host_path)))
    except OSError as exc:
        raise InputError(str(host_path), None, exc.strerror or str(exc)) from None


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
    real = host.path(resolved)
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        return resolved
    if not stat.S_ISREG(st.st_mode):
        raise RefusedError(f"{named}: not a regular file; refusing to write it")
    return resolved


def read_bytes(host: HostRoot, resolved: PurePosixPath) -> bytes | None:
    try:
        return read_config_file(host.path(resolved))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(str(resolved), None, exc.strerror or str(exc)) from None


def persisted_model(host: HostRoot) -> PersistedSysctl:
    got = collect_persisted(host)
    if isinstance(got, Unavailable):
        raise RefusedError(f"cannot read the persistent sysctl files: {got.reason}")
    return got


def simulate_boot(
    host: HostRoot, edits: Mapping[PurePosixPath, bytes], tree: SysctlTree | None = None
) -> PersistedSysctl:
    """The boot model as it would be with `edits` (resolved host path -> new bytes) written.

    Pure once the tree is read: pass the `tree` read at the start of planning to check many
    candidate edits without reading the files again.
    """
    base = tree if tree is not None else SysctlTree.read(host)
    model = boot_view(base.with_edits({str(p): data for p, data in edits.items()}))
    if model.denied:
        raise RefusedError(
            f"cannot read the persistent sysctl files: {model.denied[0]}: permission denied"
        )
    return persisted_from_model(model)
