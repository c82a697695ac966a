"""What the next boot applies, as a pure function of the files' bytes (`SysctlTree`).

`boot_view` follows systemd-sysctl v252 and later (src/sysctl/sysctl.c `run()`,
src/basic/conf-files.c `conf_files_list_strv()`):

- every `*.conf` in BOOT_DIRS, merged by basename: the first directory that has a name wins
  (/etc over /run over /usr/local/lib over /usr/lib), even when that file is a link to
  /dev/null or to nothing, which is how a file is masked; hidden and backup names are skipped;
- the files are read in `strcmp` order of their basenames, whatever directory they are in;
- lines end at "\\n", "\\r\\n", a lone CR or a NUL (`read_line()`), and a leading `/` of a key is
  dropped (`sysctl_normalize()`), see `auditor.sysctlfile`;
- one ordered map from key to value: a repeat with the same value keeps its place, a new value
  moves the key to the end; a `-key` line without `=` keeps every glob off `key`;
- the map is applied in order; a glob is expanded over /proc/sys when its turn comes and skips
  every key the map names explicitly;
- a write that would not change the file is skipped (`WRITE_STRING_FILE_SUPPRESS_REDUNDANT_VIRTUAL`,
  v246 and later). For `net.ipv4.conf.<interface>.*` this matters: the kernel copies each write of
  `net.ipv4.conf.default.X` into every interface whose X was never written, so an interface line
  that is skipped because the interface already holds its value leaves the interface open to a
  later `default` line (devinet_conf_proc() / devinet_copy_dflt_conf() in net/ipv4/devinet.c).

/etc/sysctl.conf is read only through a sysctl.d file that links to it (Debian <= 12 and RHEL
ship `/etc/sysctl.d/99-sysctl.conf -> ../sysctl.conf`; Debian 13 does not).

Older systemd differs: the v227-era sysctl.c has no globs, no `-` prefix, no skipped writes (an
interface line always sticks), no leading-`/` stripping, and applies a plain hashmap whose order
is not the file order. tests/test_boot_differential.py pins the model to the installed systemd.

`procps_view` is procps-ng 4.0 `sysctl --system` (`PreloadSystem()`): hidden files too,
/lib/sysctl.d as a fifth directory, /etc/sysctl.conf last whenever it is a regular file, every
line written in order (so the last line of a key wins), lines cut only at "\\n".
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from fnmatch import fnmatchcase

from auditor.facts.model import SysctlAssignment, SysctlLineProblem
from auditor.hostfs import systemd_normalize
from auditor.record import dataclass, field
from auditor.sysctl.tree import BOOT_DIRS, PROCPS_DIRS, SYSCTL_CONF, SysctlTree, Unreadable
from auditor.sysctlfile import SysctlLine, is_glob, parse_sysctl_text

_BACKUP_SUFFIXES = (
    "~",
    ".rpmnew",
    ".rpmsave",
    ".rpmorig",
    ".dpkg-old",
    ".dpkg-new",
    ".dpkg-tmp",
    ".dpkg-dist",
    ".dpkg-bak",
    ".dpkg-backup",
    ".dpkg-remove",
    ".ucf-new",
    ".ucf-old",
    ".ucf-dist",
    ".swp",
    ".bak",
    ".old",
    ".new",
)
"""systemd's `hidden_or_backup_file()`; only hidden names matter once `.conf` is required."""

_NOT_COPIED_FROM_DEFAULT = frozenset(
    {
        "forwarding",
        "mc_forwarding",
        "disable_xfrm",
        "disable_policy",
        "promote_secondaries",
        "route_localnet",
        "drop_unicast_in_l2_multicast",
    }
)
"""net.ipv4.conf keys whose handler is not devinet_conf_proc() (forwarding's own handler, the
flushing entries): writing `default` does not reach existing interfaces (measured on 6.x)."""


@dataclass(frozen=True, slots=True)
class Listed:
    """One file in the read order, after basename merging."""

    path: str
    """Where it is listed (`/etc/sysctl.d/99-sysctl.conf`)."""
    target: str
    """The host path after links (`/etc/sysctl.conf`); "" when the links could not be followed."""
    masked: bool
    """It applies nothing (a link to /dev/null or to nothing) but still hides its basename."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What one key holds after boot, and the line that decides it."""

    key: str
    value: str
    """As boot writes it (not folded)."""
    by: SysctlAssignment
    """The deciding line: the key's own line, a glob line, or a `net.ipv4.conf.default` line."""
    unless: Decision | None = None
    """For an interface key: the outcome when the interface already holds `value` when boot
    writes it (the write is skipped, and a later `default` line then reaches the interface)."""

    @property
    def via(self) -> str:
        """ "" for the key's own line, "glob", or "default" (copied by the kernel)."""
        if self.by.key == self.key:
            return ""
        return "glob" if is_glob(self.by.key) else "default"


@dataclass(frozen=True, slots=True)
class BootModel:
    """The files boot reads and every assignment in them, with systemd-sysctl's ordered map."""

    files: tuple[str, ...]
    """The files read, in order (after basename merging and masking)."""
    masked: tuple[str, ...]
    assignments: tuple[SysctlAssignment, ...]
    """Every assignment in read order."""
    problems: tuple[SysctlLineProblem, ...]
    denied: tuple[str, ...] = ()
    """Files boot reads that could not be read for lack of permission."""
    options: Mapping[str, SysctlAssignment] = field(default_factory=dict)
    """systemd-sysctl's ordered map after parsing: key -> deciding line, in application order."""

    def writes(self, key: str) -> list[tuple[int, SysctlAssignment]]:
        """(position in the map, line) of every write boot makes to `key`, in order."""
        explicit = self.options.get(key)
        if explicit is not None:
            if explicit.exclude:
                return []
            return [(list(self.options).index(key), explicit)]
        return [
            (i, a)
            for i, (k, a) in enumerate(self.options.items())
            if is_glob(k) and not a.exclude and glob_matches(k, key)
        ]

    def decide(self, key: str, initial: Mapping[str, str] | None = None) -> Decision | None:
        """What `key` holds after boot, or None when boot leaves the kernel's value.

        `initial` is what the kernel holds before boot writes (text as /proc/sys shows it);
        without it a write is assumed to change the value, and `Decision.unless` gives the
        outcome when it would not.
        """
        twin = default_twin(key)
        own = self.writes(key)
        if twin is None:
            return Decision(key, own[-1][1].value, own[-1][1]) if own else None
        dflt = self.writes(twin)
        first = own[0][1].value if own else None
        cur = None if initial is None else initial.get(key)
        got = _simulate(key, twin, own, dflt, cur, None if initial is None else initial.get(twin))
        if got is None:
            return None
        value, by = got
        unless = None
        if initial is None and first is not None:
            alt = _simulate(key, twin, own, dflt, first, first)
            if alt is not None and alt[0] != value:
                unless = Decision(key, alt[0], alt[1])
        return Decision(key, value, by, unless)

    def effective(self, key: str) -> SysctlAssignment | None:
        """The deciding line for `key` (a write assumed to change the value), or None."""
        d = self.decide(key)
        return None if d is None else d.by

    def explicit_keys(self) -> list[str]:
        """Every key the files name without a glob, in map order (exclusions included)."""
        return [k for k in self.options if not is_glob(k)]


def _simulate(
    key: str,
    twin: str,
    own: list[tuple[int, SysctlAssignment]],
    dflt: list[tuple[int, SysctlAssignment]],
    cur: str | None,
    cur_twin: str | None,
) -> tuple[str, SysctlAssignment] | None:
    """Replay the writes to an interface key and its `default` twin, as boot and the kernel do."""
    # Within one glob's expansion glob(3) returns paths sorted by strcmp.
    twin_first = _path(twin) < _path(key)
    events = [(pos, 0 if not twin_first else 1, False, a) for pos, a in own]
    events += [(pos, 1 if not twin_first else 0, True, a) for pos, a in dflt]
    events.sort(key=lambda e: (e[0], e[1]))
    written = False
    result: tuple[str, SysctlAssignment] | None = None
    for _, _, is_twin, a in events:
        if is_twin:
            if cur_twin == a.value:
                continue
            cur_twin = a.value
            if not written:
                cur = a.value
                result = (a.value, a)
        else:
            if cur == a.value:
                continue
            cur = a.value
            written = True
            result = (a.value, a)
    return result


def _path(key: str) -> bytes:
    return os.fsencode(systemd_normalize(key))


def default_twin(key: str) -> str | None:
    """`net.ipv4.conf.default.X` for an interface key `net.ipv4.conf.IF.X` the kernel copies
    `default` writes into; None for every other key."""
    parts = key.split(".")
    if len(parts) != 5 or parts[:3] != ["net", "ipv4", "conf"] or is_glob(key):
        return None
    if parts[3] in ("all", "default") or parts[4] in _NOT_COPIED_FROM_DEFAULT:
        return None
    return f"net.ipv4.conf.default.{parts[4]}"


def glob_matches(pattern: str, key: str) -> bool:
    """Whether glob(3) over /proc/sys would find `key` for `pattern` (`*` stays in one name)."""
    pp = systemd_normalize(pattern.translate(str.maketrans("./", "/."))).split("/")
    kp = systemd_normalize(key.translate(str.maketrans("./", "/."))).split("/")
    return len(pp) == len(kp) and all(fnmatchcase(k, p) for k, p in zip(kp, pp, strict=True))


def ordered_options(assignments: tuple[SysctlAssignment, ...]) -> dict[str, SysctlAssignment]:
    """systemd-sysctl's ordered map after parsing: key -> deciding line, in application order.

    A repeat with the same value keeps the first one's place (only the deciding line moves to
    the later one, which is what an edit must change); a new value moves the key to the end.
    """
    opts: dict[str, SysctlAssignment] = {}
    for a in assignments:
        old = opts.get(a.key)
        if old is not None and old.exclude == a.exclude and old.value == a.value:
            opts[a.key] = a
            continue
        opts.pop(a.key, None)
        opts[a.key] = a
    return opts


def model_of(
    assignments: tuple[SysctlAssignment, ...],
    files: tuple[str, ...] = (),
    masked: tuple[str, ...] = (),
    problems: tuple[SysctlLineProblem, ...] = (),
    denied: tuple[str, ...] = (),
) -> BootModel:
    """A BootModel over assignments already in read order."""
    return BootModel(files, masked, assignments, problems, denied, ordered_options(assignments))


def _hidden_or_backup(name: str) -> bool:
    return name.startswith(".") or name.endswith(_BACKUP_SUFFIXES)


def listed_files(
    tree: SysctlTree, dirs: tuple[str, ...], *, skip_hidden: bool, dedupe_dirs: bool
) -> list[Listed]:
    """The files read from `dirs`, merged by basename, in `strcmp` order of the basename."""
    seen: dict[str, str] = {}
    visited: set[str] = set()
    for d in dirs:
        canonical = tree.dirs.get(d, "")
        if not canonical:
            continue
        if dedupe_dirs:
            # path_strv_resolve_uniq(): /lib/sysctl.d and /usr/lib/sysctl.d are one directory
            # on a merged-/usr system and are listed once.
            if canonical in visited:
                continue
            visited.add(canonical)
        for name in tree.names.get(canonical, ()):
            if name in seen or (skip_hidden and _hidden_or_backup(name)):
                continue
            seen[name] = f"{d}/{name}"
    out = []
    for name in sorted(seen, key=os.fsencode):
        path = seen[name]
        target = tree.links.get(path, "")
        out.append(Listed(path, target, tree.content(target) is None))
    return out


def boot_files(tree: SysctlTree) -> list[Listed]:
    """The files systemd-sysctl reads at boot, in the order it reads them (masked ones too)."""
    return listed_files(tree, BOOT_DIRS, skip_hidden=True, dedupe_dirs=True)


def procps_files(tree: SysctlTree) -> list[Listed]:
    """The files `sysctl --system` reads, in its order: /etc/sysctl.conf last when regular."""
    files = listed_files(tree, PROCPS_DIRS, skip_hidden=False, dedupe_dirs=False)
    if isinstance(tree.content(tree.sysctl_conf), bytes):
        files.append(Listed(SYSCTL_CONF, tree.sysctl_conf, False))
    return files


def _assignment(path: str, ln: SysctlLine) -> SysctlAssignment:
    assert ln.key is not None
    return SysctlAssignment(
        file=path,
        line=ln.lineno,
        key=ln.key,
        value=ln.value or "",
        ignore_errors=ln.ignore_errors,
        exclude=ln.value is None,
        problem=ln.problem,
    )


def parse_file(path: str, data: bytes) -> tuple[list[SysctlAssignment], list[SysctlLineProblem]]:
    """Assignments and problems of one file's bytes, named `path` in both."""
    problems: list[SysctlLineProblem] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = data[: exc.start].count(b"\n") + 1
        problems.append(
            SysctlLineProblem(path, bad_line, "bad-encoding", f"not UTF-8: {exc.reason}")
        )
        text = data.decode("utf-8", errors="replace")
    assignments: list[SysctlAssignment] = []
    lines = parse_sysctl_text(text)
    for i, ln in enumerate(lines):
        if ln.split is not None:
            whole = "".join(x.raw for x in lines[i:] if x.lineno == ln.lineno)
            shown = whole.rstrip("\n").replace("\r", "\\r").replace("\0", "\\0")
            problems.append(SysctlLineProblem(path, ln.lineno, ln.split, shown))
        if ln.problem is not None:
            problems.append(SysctlLineProblem(path, ln.lineno, ln.problem, ln.raw.strip("\r\n")))
        if ln.key is not None:
            assignments.append(_assignment(path, ln))
    return assignments, problems


@functools.lru_cache(maxsize=64)
def _parsed(
    path: str, data: bytes
) -> tuple[tuple[SysctlAssignment, ...], tuple[SysctlLineProblem, ...]]:
    """`parse_file`, once per file content: the boot and the procps views read mostly the
    same files, and `fix` runs the boot model again for every placement it tries."""
    a, p = parse_file(path, data)
    return tuple(a), tuple(p)


def _read(files: list[Listed], tree: SysctlTree) -> BootModel:
    assignments: list[SysctlAssignment] = []
    problems: list[SysctlLineProblem] = []
    read: list[str] = []
    masked: list[str] = []
    denied: list[str] = []
    for f in files:
        data = tree.content(f.target)
        if data is None:
            masked.append(f.path)
            continue
        if isinstance(data, Unreadable):
            if data.denied:
                denied.append(f.path)
            problems.append(SysctlLineProblem(f.path, 0, "unreadable", data.reason))
            continue
        read.append(f.path)
        a, p = _parsed(f.path, data)
        assignments.extend(a)
        problems.extend(p)
    return model_of(tuple(assignments), tuple(read), tuple(masked), tuple(problems), tuple(denied))


def boot_view(tree: SysctlTree) -> BootModel:
    """What systemd-sysctl reads and applies at the next boot."""
    return _read(boot_files(tree), tree)


@dataclass(frozen=True, slots=True)
class ProcpsModel:
    """What `sysctl --system` reads: every line is written in order."""

    files: tuple[str, ...]
    assignments: tuple[SysctlAssignment, ...]

    def value(self, key: str) -> str | None:
        """The value `sysctl --system` leaves for `key` (None: it does not set it)."""
        explicit = [a for a in self.assignments if a.key == key]
        if explicit:
            return None if explicit[-1].exclude else explicit[-1].value
        value = None
        for a in self.assignments:
            if is_glob(a.key) and not a.exclude and glob_matches(a.key, key):
                value = a.value
        return value


def procps_view(tree: SysctlTree) -> ProcpsModel:
    """What procps `sysctl --system` reads (it cuts lines only at "\\n": a line that a lone CR
    or NUL splits for systemd is left out here, its meaning to procps being unclear)."""
    m = _read(procps_files(tree), tree)
    split = {(p.file, p.line) for p in m.problems if p.kind in ("bare-cr", "nul-byte")}
    kept = tuple(a for a in m.assignments if (a.file, a.line) not in split)
    return ProcpsModel(m.files, kept)
