"""From failed rules to the sysctl changes `fix` proposes: selection, the plan, its rendering.

Pure: nothing here reads the host. `prepare.py` gathers the host state (runtime values, the
boot model, namespaces) and `proposals.py` decides the values, so every refusal is tested on
plain values.

Which fixes are applied (ruff's applicability model, docs/rules.md):
- `safe`: applied by `portaudit fix` (with `--only`, only when the rule is named);
- `unsafe`: trades one risk for another; applied when `--only` names the rule, with
  `--include-unsafe`, or when the operator says yes to it at the terminal;
- `display-only`: never applied; the advice is shown.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from auditor.engine.report import Applicability, Finding
from auditor.fix import keys
from auditor.hostfs import shown, validate_sysctl_key

DEFAULT_FILE = "/etc/sysctl.d/99-zz-portaudit.conf"


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
    reasons: tuple[str, ...] = ()
    """Why this value (what a reservation protects, what a range change does)."""


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
    left_out: tuple[LeftOut, ...] = ()
    failing: int = 0
    """How many findings fail, whether or not this run fixes them."""
    runtime_only: str = ""
    """Why nothing is persisted under --root (a namespace that is not the host's), or ""."""
    persist_advice: tuple[str, ...] = ()
    """How this namespace's owner persists the runtime changes instead (with runtime_only)."""

    @property
    def empty(self) -> bool:
        return not any(c.write_runtime for c in self.changes) and not self.files


@dataclass(frozen=True, slots=True)
class LeftOut:
    """A failing rule whose fix this run does not apply, and how to include it."""

    rule: str
    why: str
    include: str
    """The option that includes it ("" when `fix` never applies it)."""
    change: str = ""
    """The change it would make (`net.core.somaxconn = 8192`), with its risk."""


@dataclass(frozen=True, slots=True)
class Selection:
    findings: tuple[Finding, ...]
    left_out: tuple[LeftOut, ...]
    notes: tuple[str, ...]
    failing: int
    """How many failing findings there are, with a fix or not."""


def unsafe_candidates(findings: Iterable[Finding], only: frozenset[str] | None) -> list[Finding]:
    """Failing findings with an `unsafe` sysctl fix that --only does not already name."""
    return [
        f
        for f in findings
        if f.fix.sysctl and f.fix.applicability == Applicability.UNSAFE and only is None
    ]


def _change(f: Finding) -> str:
    parts = []
    for k, v in f.fix.sysctl.items():
        spec = keys.KEYS.get(k)
        risk = f" (risk: {spec.risk})" if spec is not None and spec.risk else ""
        parts.append(f"{k} = {v}{risk}")
    return "; ".join(parts)


def select_findings(
    findings: Iterable[Finding],
    only: frozenset[str] | None,
    *,
    include_unsafe: bool = False,
    approved: frozenset[str] = frozenset(),
) -> Selection:
    """The failing findings whose fixes this run applies, and the ones it leaves out.

    `safe` fixes are applied; `unsafe` ones when --only names the rule, --include-unsafe is
    given or the operator said yes to that rule (`approved`); `display-only` never.
    """
    chosen: list[Finding] = []
    left: dict[str, LeftOut] = {}
    notes: list[str] = []
    seen: set[str] = set()
    failing = 0
    for f in findings:
        failing += 1
        seen.add(f.id)
        if only is not None and f.id not in only:
            continue
        if not f.fix.sysctl or f.fix.applicability == Applicability.DISPLAY_ONLY:
            left.setdefault(
                f.id,
                LeftOut(f.id, "no sysctl fix (advice only)", f"portaudit rules show {f.id}"),
            )
            continue
        if f.fix.applicability == Applicability.UNSAFE and not (
            include_unsafe or f.id in approved or (only is not None and f.id in only)
        ):
            left.setdefault(
                f.id,
                LeftOut(f.id, "unsafe fix", f"--only {f.id} or --include-unsafe", _change(f)),
            )
            continue
        for raw in f.fix.sysctl:
            validate_sysctl_key(raw)
        chosen.append(f)
    for rule_id in sorted((only or frozenset()) - seen):
        notes.append(f"{rule_id}: no failing finding, nothing to fix")
    return Selection(tuple(chosen), tuple(left.values()), tuple(notes), failing)


def file_diff(edit: FileEdit, root: Path = Path("/")) -> str:
    """A unified diff of one file, as `diff -u` would show it (bytes decoded as UTF-8)."""
    old = (edit.before or b"").decode("utf-8", "replace").splitlines(keepends=True)
    new = edit.after.decode("utf-8", "replace").splitlines(keepends=True)
    name = shown(root, edit.path)
    old_name = name if edit.before is not None else "/dev/null"
    lines = list(difflib.unified_diff(old, new, old_name, name))
    return "".join(x if x.endswith("\n") else x + "\n\\ No newline at end of file\n" for x in lines)


def render_left_out(left: Iterable[LeftOut]) -> list[str]:
    """One line per failing rule this run does not fix, with the option that includes it."""
    out: list[str] = []
    for lo in left:
        how = f"; include with {lo.include}" if lo.include.startswith("--") else ""
        see = f" (see: {lo.include})" if lo.include and not how else ""
        out.append(f"left out: {lo.rule}: {lo.why}{how}{see}")
        if lo.change:
            out.append(f"  would set {lo.change}")
    return out


def render_plan(plan: Plan, root: Path = Path("/")) -> str:
    """What `fix` will do: one line per key with its reasons, the runtime writes, the diffs."""
    out: list[str] = []
    for note in plan.notes:
        out.append(f"note: {note}")
    if plan.empty:
        if plan.failing == 0:
            out.append("nothing to do: no rule fails")
        elif plan.runtime_only:
            out.append(f"nothing to change at runtime, and not persisted: {plan.runtime_only}")
        elif plan.selected:
            out.append("already done: runtime and boot values match the selected fixes")
        out.extend(render_left_out(plan.left_out))
        return "\n".join(out) + "\n"
    for c in plan.changes:
        scope = "per-netns" if c.per_netns else "global"
        boot_at = c.boot_at
        if boot_at:
            file, _, line = boot_at.rpartition(":")
            boot_at = f"{shown(root, file)}:{line}"
        boot = f"{c.boot!r} ({boot_at})" if c.boot is not None else "unset"
        where = f" in {shown(root, c.target)}" if c.target else ""
        out.append(
            f"{c.key} [{scope}] ({', '.join(c.rules)}): runtime {c.runtime!r}, boot {boot}"
            f" -> {c.proposed!r}{where}"
        )
        out.extend(f"  {r}" for r in c.reasons)
    runtime = [c for c in plan.changes if c.write_runtime]
    if runtime:
        out.append("")
        out.append("runtime:")
        out.extend(f"  {c.key}: {c.runtime!r} -> {c.proposed!r}" for c in runtime)
    if plan.runtime_only:
        out.append("")
        out.append(f"not persisted under {root}: {plan.runtime_only}")
        out.extend(plan.persist_advice)
    for edit in plan.files:
        out.append("")
        out.append(file_diff(edit, root).rstrip("\n"))
    left = render_left_out(plan.left_out)
    if left:
        out.append("")
        out.extend(left)
    return "\n".join(out) + "\n"
