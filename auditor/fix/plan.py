"""From failed rules to the sysctl changes `fix` proposes: selection, validation, the plan.

Pure: nothing here reads the host. `prepare.py` gathers the host state (runtime values, the
boot model, namespaces) and passes it in, so every refusal below is tested on plain values.

Which fixes are applied (ruff's applicability model, DESIGN.md "Rules"):
- `safe`: applied by `portaudit fix` (with `--only`, only when the rule is named);
- `unsafe`: applied only when `--only` names the rule explicitly, since it trades one risk
  for another (the operator must have read the rule's docs);
- `display-only`: never applied; the advice is shown.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from auditor.engine.report import Applicability, Finding
from auditor.errors import InputError, RefusedError, UsageError
from auditor.facts.sysctlvalue import same_value
from auditor.hostfs import validate_sysctl_key

DEFAULT_FILE = "/etc/sysctl.d/99-zz-portaudit.conf"

_DECIMAL = re.compile(r"^(?:0|-?[1-9][0-9]*)$")
"""The kernel parses sysctl integers with base 0 (`proc_get_long` -> `strtoul_lenient(.., 0)`),
so `010` is 8 and `0x10` is 16: only plain decimal is accepted, leading zeros included."""

_STRING_VALUE = re.compile(r"^[A-Za-z0-9_.:,+@/ \-]+$")

PORT_RANGE = "net.ipv4.ip_local_port_range"
UNPRIV_START = "net.ipv4.ip_unprivileged_port_start"
RESERVED = "net.ipv4.ip_local_reserved_ports"

INT_BOUNDS: dict[str, tuple[int, int]] = {
    "net.ipv4.tcp_tw_reuse": (0, 2),
    "net.ipv4.tcp_timestamps": (0, 2),
    "net.ipv4.tcp_syncookies": (0, 2),
    "net.ipv4.ip_unprivileged_port_start": (0, 65535),
    "net.ipv4.tcp_fin_timeout": (1, 2_147_483_647),
    "net.ipv4.tcp_max_tw_buckets": (0, 2_147_483_647),
    "net.ipv4.tcp_max_syn_backlog": (1, 2_147_483_647),
    "net.core.somaxconn": (1, 2_147_483_647),
    "net.core.netdev_max_backlog": (1, 2_147_483_647),
    "fs.file-max": (1, 2**63 - 1),
    "fs.nr_open": (1, 2_147_483_584),
    "net.netfilter.nf_conntrack_max": (1, 2_147_483_647),
}
"""Ranges documented in Documentation/networking/ip-sysctl.rst and admin-guide/sysctl/fs.rst."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """One key the failed rules want changed, and the rules that want it."""

    key: str
    value: str
    rules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Selection:
    wanted: tuple[Wanted, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KeyChange:
    """One key: where it stands now, what it becomes, and where that is written."""

    key: str
    proposed: str
    runtime: str | None
    boot: str | None
    boot_at: str
    """`file:line` deciding the boot value now ("" when nothing persists it)."""
    target: str
    """The host path written for this key ("" when its boot value is already right)."""
    per_netns: bool
    rules: tuple[str, ...]
    write_runtime: bool

    @property
    def write_file(self) -> bool:
        return bool(self.target)


@dataclass(frozen=True, slots=True)
class FileEdit:
    """A file `fix` rewrites: the name the host sees, the real file written, old and new bytes."""

    path: str
    real: Path
    before: bytes | None
    """None when the file does not exist yet."""
    after: bytes


@dataclass(frozen=True, slots=True)
class Plan:
    changes: tuple[KeyChange, ...]
    files: tuple[FileEdit, ...]
    notes: tuple[str, ...] = field(default=())
    selected: int = 0
    """How many keys the selected fixes name (0: no failing rule has a fix to apply)."""

    @property
    def empty(self) -> bool:
        return not any(c.write_runtime for c in self.changes) and not self.files


def parse_only(text: str | None) -> frozenset[str] | None:
    """`--only EPH-001,TW-001` -> {"EPH-001", "TW-001"} (None when not given)."""
    if text is None:
        return None
    ids = frozenset(p.strip().upper() for p in text.split(",") if p.strip())
    if not ids:
        raise UsageError("--only needs at least one rule id")
    return ids


def select_fixes(findings: Iterable[Finding], only: frozenset[str] | None) -> Selection:
    """The sysctl values wanted by failed rules, merged per key; conflicting values refuse."""
    wanted: dict[str, tuple[str, list[str]]] = {}
    notes: list[str] = []
    seen_ids: set[str] = set()
    for f in findings:
        seen_ids.add(f.id)
        if only is not None and f.id not in only:
            continue
        if not f.fix.sysctl:
            continue
        applicability = f.fix.applicability
        if applicability == Applicability.DISPLAY_ONLY:
            notes.append(
                f"{f.id}: display-only fix, not applied (advice: portaudit rules show {f.id})"
            )
            continue
        if applicability == Applicability.UNSAFE and (only is None or f.id not in only):
            notes.append(f"{f.id}: unsafe fix, applied only with --only {f.id}")
            continue
        for raw_key, value in f.fix.sysctl.items():
            key = validate_sysctl_key(raw_key)
            if key in wanted and not same_value(wanted[key][0], value):
                other = ",".join(wanted[key][1])
                raise RefusedError(
                    f"{f.id} wants {key} = {value!r} but {other} wants {wanted[key][0]!r};"
                    " choose one with --only"
                )
            rules = wanted.setdefault(key, (value, []))[1]
            if f.id not in rules:
                rules.append(f.id)
    for rule_id in sorted((only or frozenset()) - seen_ids):
        notes.append(f"{rule_id}: no failing finding, nothing to fix")
    out = tuple(Wanted(k, v, tuple(r)) for k, (v, r) in wanted.items())
    return Selection(out, tuple(dict.fromkeys(notes)))


def norm(value: str) -> str:
    """Whitespace folded as the kernel prints multi-value sysctls (`32768\\t60999`)."""
    return " ".join(value.split())


def _int(key: str, text: str, rules: str) -> int:
    if not _DECIMAL.match(text):
        raise InputError(None, None, f"{rules}: {key}: {text!r} is not a decimal integer")
    return int(text)


def parse_reserved(text: str) -> list[tuple[int, int]]:
    """`ip_local_reserved_ports` ("8080,9000-9009") as inclusive ranges."""
    out: list[tuple[int, int]] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


def usable_ports(low: int, high: int, reserved: Iterable[tuple[int, int]]) -> int:
    """Ports in [low, high] connect() may pick: the range minus reserved ports."""
    taken: set[int] = set()
    for lo, hi in reserved:
        taken.update(range(max(lo, low), min(hi, high) + 1))
    return high - low + 1 - len(taken)


def validate_value(key: str, value: str, runtime: Mapping[str, str], rules: str = "fix") -> str:
    """The value to write for `key` (whitespace folded), or InputError naming key and value.

    Runs before anything is written: a value the kernel would reject, or that boot would read
    differently (quotes, `#`, control characters), never reaches a file or /proc/sys.
    """
    if not isinstance(value, str) or not value.strip():
        raise InputError(None, None, f"{rules}: {key}: empty value")
    if any((ord(c) < 32 and c not in " \t") or ord(c) == 127 for c in value):
        raise InputError(None, None, f"{rules}: {key}: value {value!r} has control characters")
    v = norm(value)
    fields = v.split(" ")
    if key == PORT_RANGE:
        if len(fields) != 2:
            raise InputError(None, None, f"{rules}: {key}: {value!r} is not two integers")
        low, high = (_int(key, x, rules) for x in fields)
        if not (1 <= low <= 65535 and 1 <= high <= 65535):
            raise InputError(None, None, f"{rules}: {key}: {v!r}: ports must be 1..65535")
        if low > high:
            raise InputError(None, None, f"{rules}: {key}: {v!r}: low is above high")
        unpriv = runtime.get(UNPRIV_START)
        if unpriv is not None and _DECIMAL.match(norm(unpriv)) and low < int(norm(unpriv)):
            raise InputError(
                None,
                None,
                f"{rules}: {key}: {v!r}: low {low} is below"
                f" ip_unprivileged_port_start {norm(unpriv)} (the kernel refuses it)",
            )
        reserved = parse_reserved(runtime.get(RESERVED, ""))
        if usable_ports(low, high, reserved) < 1:
            raise InputError(
                None, None, f"{rules}: {key}: {v!r}: no usable port left after reserved ones"
            )
        return v
    if key in INT_BOUNDS:
        if len(fields) != 1:
            raise InputError(None, None, f"{rules}: {key}: {value!r} is not one integer")
        n = _int(key, fields[0], rules)
        lo, hi = INT_BOUNDS[key]
        if not lo <= n <= hi:
            raise InputError(None, None, f"{rules}: {key}: {n} is outside {lo}..{hi}")
        return v
    current = runtime.get(key)
    if current is not None and all(_DECIMAL.match(x) for x in norm(current).split(" ")):
        # A numeric key we have no table entry for: same number of decimal integers.
        if len(fields) != len(norm(current).split(" ")):
            raise InputError(
                None, None, f"{rules}: {key}: {v!r} does not have the shape of {norm(current)!r}"
            )
        for x in fields:
            _int(key, x, rules)
        return v
    if not _STRING_VALUE.match(v):
        raise InputError(None, None, f"{rules}: {key}: value {v!r} has characters boot would lose")
    return v


def narrows_port_range(current: str | None, proposed: str, reserved: str) -> bool:
    """True when `proposed` leaves fewer usable ports than the range in force now."""
    if current is None:
        return False
    try:
        lo, hi = (int(x) for x in norm(current).split(" "))
        plo, phi = (int(x) for x in norm(proposed).split(" "))
    except ValueError:
        return False
    res = parse_reserved(reserved)
    return usable_ports(plo, phi, res) < usable_ports(lo, hi, res)


def file_diff(edit: FileEdit) -> str:
    """A unified diff of one file, as `diff -u` would show it (bytes decoded as UTF-8)."""
    old = (edit.before or b"").decode("utf-8", "replace").splitlines(keepends=True)
    new = edit.after.decode("utf-8", "replace").splitlines(keepends=True)
    old_name = edit.path if edit.before is not None else "/dev/null"
    lines = list(difflib.unified_diff(old, new, old_name, edit.path))
    return "".join(x if x.endswith("\n") else x + "\n\\ No newline at end of file\n" for x in lines)


def render_plan(plan: Plan) -> str:
    """What `fix` will do: one line per key, the runtime writes, then a diff per file."""
    out: list[str] = []
    for note in plan.notes:
        out.append(f"note: {note}")
    if plan.empty:
        if plan.selected:
            out.append("nothing to do: runtime and boot values already match the fixes")
        else:
            out.append("nothing to do: no failing rule has a fix that fix may apply")
        return "\n".join(out) + "\n"
    for c in plan.changes:
        scope = "per-netns" if c.per_netns else "global"
        boot = f"{c.boot!r} ({c.boot_at})" if c.boot is not None else "unset"
        out.append(
            f"{c.key} [{scope}] ({', '.join(c.rules)}): runtime {c.runtime!r}, boot {boot}"
            f" -> {c.proposed!r}" + (f" in {c.target}" if c.target else "")
        )
    runtime = [c for c in plan.changes if c.write_runtime]
    if runtime:
        out.append("")
        out.append("runtime:")
        out.extend(f"  {c.key}: {c.runtime!r} -> {c.proposed!r}" for c in runtime)
    for edit in plan.files:
        out.append("")
        out.append(file_diff(edit).rstrip("\n"))
    return "\n".join(out) + "\n"
