"""What survives a reboot: the boot model (`auditor.sysctl.boot`) joined with the running kernel.

The files are read once into a `SysctlTree`; which file decides each key comes from the pure
`boot_view`, what procps `sysctl --system` would do differently from `procps_view`. This module
adds what only the running host knows: the runtime value of every key the files name, and which
of those keys this kernel does not have.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from auditor.errors import UsageError
from auditor.facts.model import (
    BootValue,
    PersistedSysctl,
    SysctlAssignment,
    SysctlLineProblem,
    Unavailable,
)
from auditor.facts.sysctlvalue import fold, held_integers, kernel_ints
from auditor.hostfs import HostRoot
from auditor.record import dataclass
from auditor.sysctl import boot
from auditor.sysctl.boot import BootModel, Decision, glob_matches, model_of
from auditor.sysctl.tree import (
    BOOT_DIRS,
    PROCPS_DIRS,
    SYSCTL_CONF,
    SysctlTree,
    chase,
)
from auditor.sysctlfile import is_glob

__all__ = [
    "BOOT_DIRS",
    "PROCPS_DIRS",
    "SYSCTL_CONF",
    "BootFile",
    "BootFiles",
    "boot_file_map",
    "boot_files",
    "chase",
    "collect_persisted",
    "effective",
    "effective_all",
    "glob_matches",
    "persisted_from_model",
    "procps_files",
    "read_boot_files",
]


@dataclass(frozen=True, slots=True)
class BootFile:
    """One file in the read order, after basename merging, with where it lives on disk."""

    host_path: str
    """Where it is listed, as the host names it (`/etc/sysctl.d/99-sysctl.conf`)."""
    real_path: Path
    """The file to open or to write: every symlink followed, under the root."""
    masked: bool
    """It applies nothing (a link to /dev/null, or to nothing) but still hides its basename."""
    target: str = ""
    """The host path after following symlinks (`/etc/sysctl.conf` for 99-sysctl.conf)."""


def _with_real(host: HostRoot, files: list[boot.Listed]) -> list[BootFile]:
    return [BootFile(f.path, host.path(f.target or f.path), f.masked, f.target) for f in files]


def boot_files(host: HostRoot) -> list[BootFile]:
    """The files systemd-sysctl reads at boot, in the order it reads them (masked ones too)."""
    return _with_real(host, boot.boot_files(SysctlTree.read(host)))


def boot_file_map(host: HostRoot) -> dict[str, BootFile]:
    """host path as assignments name it (`SysctlAssignment.file`) -> the file to open or edit."""
    return {f.host_path: f for f in boot_files(host)}


def procps_files(host: HostRoot) -> list[BootFile]:
    """The files `sysctl --system` reads, in its order: /etc/sysctl.conf last when regular."""
    return _with_real(host, boot.procps_files(SysctlTree.read(host)))


def _model(persisted: PersistedSysctl) -> BootModel:
    return model_of(persisted.assignments)


def effective(persisted: PersistedSysctl, key: str) -> SysctlAssignment | None:
    """The deciding line for `key` at boot (globs and `default` copies resolved), or None."""
    return _model(persisted).effective(key)


def effective_all(persisted: PersistedSysctl) -> dict[str, SysctlAssignment]:
    """Every explicitly named key (no globs) that boot sets, with its deciding line."""
    m = _model(persisted)
    out: dict[str, SysctlAssignment] = {}
    for k in m.explicit_keys():
        a = m.effective(k)
        if a is not None:
            out[k] = a
    return out


def boot_value(d: Decision) -> BootValue:
    """The facts form of a decision."""
    return BootValue(
        value=fold(d.value),
        file=d.by.file,
        line=d.by.line,
        via=d.via,
        unless_value=None if d.unless is None else fold(d.unless.value),
        unless_where="" if d.unless is None else f"{d.unless.by.file}:{d.unless.by.line}",
    )


def _unread(tree: SysctlTree, model: BootModel) -> dict[str, SysctlAssignment]:
    """Keys only /etc/sysctl.conf sets, when boot does not read that file at all."""
    data = tree.content(tree.sysctl_conf)
    if not isinstance(data, bytes):
        return {}
    if any(f.target == tree.sysctl_conf for f in boot.boot_files(tree)):
        return {}
    assignments, _ = boot.parse_file(SYSCTL_CONF, data)
    out: dict[str, SysctlAssignment] = {}
    for a in assignments:
        if is_glob(a.key):
            continue
        if a.exclude:
            out.pop(a.key, None)
        elif model.decide(a.key) is None:
            out[a.key] = a
    return out


def persisted_from_model(model: BootModel) -> PersistedSysctl:
    """The boot facts of a model alone (no runtime values, no procps view): what `fix` checks."""
    return PersistedSysctl(
        files=model.files,
        assignments=model.assignments,
        problems=model.problems,
        masked=model.masked,
        effective=_effective_map(model),
    )


def _effective_map(model: BootModel) -> dict[str, BootValue]:
    out: dict[str, BootValue] = {}
    for k in sorted(model.explicit_keys()):
        d = model.decide(k)
        if d is not None:
            out[k] = boot_value(d)
    return out


@dataclass(frozen=True, slots=True)
class BootFiles:
    """The sysctl files read and modelled: the same for every network namespace of a host."""

    model: BootModel
    procps_differences: dict[str, str]
    unread: dict[str, SysctlAssignment]
    effective: dict[str, BootValue]
    keys: tuple[str, ...]
    """Every key whose runtime value the snapshot records (explicit in the files, or unread)."""


def read_boot_files(host: HostRoot) -> BootFiles | Unavailable:
    """The part of `collect_persisted` that reads only files: done once for all namespaces."""
    try:
        tree = SysctlTree.read(host)
    except OSError as exc:
        return Unavailable(f"sysctl.d: {exc.strerror or exc}")
    model = boot.boot_view(tree)
    if model.denied:
        return Unavailable(f"{model.denied[0]}: permission denied (run as root)")
    explicit_keys = sorted({a.key for a in model.assignments if not is_glob(a.key)})
    unread = _unread(tree, model)
    procps = boot.procps_view(tree)
    differences: dict[str, str] = {}
    keys = explicit_keys + sorted(
        {a.key for a in procps.assignments if not is_glob(a.key)} - set(explicit_keys)
    )
    for key in keys:
        b = model.effective(key)
        p = procps.value(key)
        bv = None if b is None else fold(b.value)
        pv = None if p is None else fold(p)
        if bv != pv:
            differences[key] = "(not set)" if pv is None else pv
    return BootFiles(
        model=model,
        procps_differences=differences,
        unread=unread,
        effective=_effective_map(model),
        keys=tuple(sorted(set(explicit_keys) | set(unread))),
    )


def _refused(
    lines: Iterable[SysctlAssignment], runtime: str, flagged: set[tuple[str, int]]
) -> Iterator[SysctlLineProblem]:
    """Of the lines setting one key, those that set a key of integers (its running value is
    integers) to a value the kernel does not read as them (`1_000`, `+5`): the write fails
    with EINVAL at boot and the key keeps its value. Lines already flagged for another reason
    are not told twice."""
    now = held_integers(runtime)
    if now is None:
        return
    for a in lines:
        if (a.file, a.line) not in flagged and kernel_ints(a.value, len(now)) is None:
            yield SysctlLineProblem(a.file, a.line, "refused-value", f"{a.key} = {a.value}")


def collect_persisted(
    host: HostRoot, files: BootFiles | Unavailable | None = None
) -> PersistedSysctl | Unavailable:
    """The boot view of every sysctl file under `host.root`, with procps' differences, and the
    runtime value of every key the files name, read in the current network namespace.

    `files`: what `read_boot_files` returned, when the caller reads many namespaces."""
    if files is None:
        files = read_boot_files(host)
    if isinstance(files, Unavailable):
        return files
    model = files.model
    problems = list(model.problems)
    flagged = {(p.file, p.line) for p in problems}
    setting: dict[str, list[SysctlAssignment]] = {}
    for a in model.assignments:
        if not a.exclude:
            setting.setdefault(a.key, []).append(a)
    runtime: dict[str, str] = {}
    have_proc = host.proc_path("sys").is_dir()
    for key in files.keys:
        if not have_proc:
            break
        try:
            path = host.sysctl_path(key)
        except UsageError:
            continue
        if not os.path.lexists(path):
            problems.extend(
                SysctlLineProblem(a.file, a.line, "unknown-key", a.key)
                for a in setting.get(key, ())
            )
            continue
        got = host.read_sysctl(key)
        if not isinstance(got, Unavailable):
            runtime[key] = got
            problems.extend(_refused(setting.get(key, ()), got, flagged))
    order = {f: i for i, f in enumerate(model.files)}
    problems.sort(key=lambda p: (order.get(p.file, len(order)), p.line))
    return PersistedSysctl(
        files=model.files,
        assignments=model.assignments,
        problems=tuple(problems),
        procps_differences=dict(files.procps_differences),
        runtime=runtime,
        masked=model.masked,
        effective=dict(files.effective),
        unread=dict(files.unread),
    )
