"""Turn findings into a `Plan` for this host: read runtime values, the boot model, namespaces.

Reads only. Every value is validated and every file choice is checked against a simulated boot
before the plan is shown, so what the operator confirms is exactly what `apply` writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from auditor.engine.report import Finding
from auditor.errors import InputError, RefusedError
from auditor.facts.model import Facts, PersistedSysctl, PortRange, SysctlAssignment, Unavailable
from auditor.facts.persisted import effective
from auditor.facts.sysctlvalue import fold
from auditor.fix import keys, netns, target
from auditor.fix.keys import PORT_RANGE, RESERVED, UNPRIV_START
from auditor.fix.plan import DEFAULT_FILE, FileEdit, KeyChange, Plan, select_findings
from auditor.fix.proposals import NO_PORTS, Declared, Proposal, propose
from auditor.hostfs import HostRoot
from auditor.sysctl.tree import SysctlTree
from auditor.sysctlfile import set_value

COMMENT = "portaudit fix ("
"""How the comment above a line fix appended starts; the rules that set the value follow."""


def _decode(resolved: PurePosixPath, data: bytes | None) -> str:
    if data is None:
        return ""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            str(resolved), None, f"not UTF-8 text ({exc.reason}); not editing it"
        ) from None


class _Files:
    """The planned contents of every file touched so far (resolved host path -> text)."""

    def __init__(self, host: HostRoot) -> None:
        self.host = host
        self.before: dict[PurePosixPath, bytes | None] = {}
        self.text: dict[PurePosixPath, str] = {}
        self.names: dict[PurePosixPath, str] = {}
        self._tree: SysctlTree | None = None

    def current(self, named: str | PurePosixPath) -> tuple[PurePosixPath, str]:
        resolved = target.writable_target(self.host, named)
        if resolved not in self.before:
            data = target.read_bytes(self.host, resolved)
            self.before[resolved] = data
            self.text[resolved] = _decode(resolved, data)
            self.names[resolved] = str(named)
        return resolved, self.text[resolved]

    def encoded(self, extra: dict[PurePosixPath, str] | None = None) -> dict[PurePosixPath, bytes]:
        merged = {**self.text, **(extra or {})}
        return {p: t.encode("utf-8") for p, t in merged.items()}

    def simulate(self, extra: dict[PurePosixPath, str] | None = None) -> PersistedSysctl:
        """The next boot with the planned files (and `extra`) written. The sysctl.d tree is
        read once per plan; every trial after that is the pure boot model in memory."""
        if self._tree is None:
            self._tree = SysctlTree.read(self.host)
        return target.simulate_boot(self.host, self.encoded(extra), self._tree)


def _place(
    files: _Files, named: str, w: Proposal, value: str
) -> tuple[str, SysctlAssignment | None]:
    """Edit `named` (or the later file that overrides it) so boot applies `value` for w.key."""
    comment = f"{COMMENT}{', '.join(w.rules)})"
    resolved, text = files.current(named)
    trial = {resolved: set_value(text, w.key, value, comment=comment, renames=COMMENT)}
    sim = files.simulate(trial)
    winner = effective(sim, w.key)
    if winner is not None and keys.same(w.key, winner.value, value):
        files.text.update(trial)
        return str(named), winner
    if winner is None:
        raise RefusedError(
            f"{named} is not read at boot on this host (for /etc/sysctl.conf, boot reads it"
            " only through /etc/sysctl.d/99-sysctl.conf); choose another --file"
        )
    where = f"{winner.file}:{winner.line}"
    try:
        over, over_text = files.current(winner.file)
    except RefusedError as exc:
        raise RefusedError(
            f"{where} sets {w.key} = {winner.value} after {named} at boot, and {exc}"
        ) from None
    trial = {over: set_value(over_text, w.key, value, comment=comment, renames=COMMENT)}
    sim = files.simulate(trial)
    winner2 = effective(sim, w.key)
    if winner2 is None or not keys.same(w.key, winner2.value, value):
        got = "nothing" if winner2 is None else f"{winner2.file}:{winner2.line}"
        raise RefusedError(f"{w.key}: editing {where} still leaves {got} deciding it at boot")
    files.text.update(trial)
    return winner.file, winner2


def _narrows(current: str | None, proposed: str, reserved: str) -> bool:
    """True when `proposed` leaves fewer usable ports than the range in force now."""
    if current is None:
        return False
    try:
        return (
            PortRange.parse(proposed, reserved).usable < PortRange.parse(current, reserved).usable
        )
    except ValueError:
        return False


def build_plan(
    host: HostRoot,
    findings: Iterable[Finding],
    *,
    only: frozenset[str] | None = None,
    file: str | None = None,
    runtime: bool = True,
    facts: Facts | None = None,
    declared: Declared = NO_PORTS,
    include_unsafe: bool = False,
    approved: frozenset[str] = frozenset(),
    for_host: bool = False,
) -> Plan:
    """The changes that make runtime and boot values equal the selected fixes.

    In a network namespace that is not the host's (a container), per-namespace keys are
    changed at runtime only: the root's sysctl.d configures the host's namespace at boot, not
    this one. `for_host` says the root *is* this namespace's host (an image, a test namespace
    standing for a host) and persists there anyway.
    """
    named = str(target.check_named_file(file)) if file is not None else DEFAULT_FILE
    selection = select_findings(findings, only, include_unsafe=include_unsafe, approved=approved)
    notes = list(selection.notes)

    def plan_of(changes: tuple[KeyChange, ...], files: tuple[FileEdit, ...], n: int) -> Plan:
        return Plan(
            changes,
            files,
            tuple(notes),
            n,
            selection.left_out,
            selection.failing,
            runtime_only,
        )

    runtime_only = ""
    wanted_keys = list(dict.fromkeys(k for f in selection.findings for k in f.fix.sysctl))
    if not wanted_keys:
        return plan_of((), (), 0)

    current: dict[str, str] = {}
    for key in [*wanted_keys, UNPRIV_START, RESERVED, PORT_RANGE]:
        got = host.read_sysctl(key)
        if not isinstance(got, Unavailable):
            current[key] = got
    for key in wanted_keys:
        keys.spec(key, ",".join(f.id for f in selection.findings if key in f.fix.sysctl))
        if key not in current:
            rules = ",".join(f.id for f in selection.findings if key in f.fix.sysctl)
            raise InputError(
                None,
                None,
                f"{rules}: {key}: no {host.sysctl_path(key)} (unknown to this"
                " kernel, or a global key not visible in this network namespace)",
            )
    context = dict(current)
    for f in selection.findings:
        if UNPRIV_START in f.fix.sysctl:
            context[UNPRIV_START] = f.fix.sysctl[UNPRIV_START]
    proposals = propose(selection.findings, facts, context, declared)
    notes.extend(proposals.notes)
    wanted: list[Proposal] = []
    for w in proposals.items:
        if (
            w.key == PORT_RANGE
            and not set(w.rules) & {"EPH-001", "EPH-004", "EPH-005"}
            and _narrows(current.get(PORT_RANGE), w.value, current.get(RESERVED, ""))
        ):
            notes.append(
                f"{','.join(w.rules)}: {PORT_RANGE} {w.value!r} is narrower than"
                f" {current[PORT_RANGE]!r}; not applied"
            )
            continue
        if w.key not in current:
            current[w.key] = ""
        wanted.append(w)

    kernel = netns.kernel_backed(host)
    initial = netns.in_initial_netns(host) if kernel else True
    scope = {w.key: keys.KEYS[w.key].per_netns for w in wanted}
    if kernel and not initial:
        for w in wanted:
            scope[w.key] = scope[w.key] and netns.writable(host, w.key)
    container = host.is_live and not initial and not for_host
    if container:
        runtime_only = (
            f"network namespace {host.netns() or '(not the host’s)'} is not the"
            " host's, and the root's sysctl.d configures the host's namespace at boot"
            " (--for-host persists there anyway)"
        )
        kept: list[Proposal] = []
        for w in wanted:
            if scope[w.key]:
                kept.append(w)
            else:
                notes.append(
                    f"{','.join(w.rules)}: {w.key} is global: fix it on the host"
                    " (run portaudit fix in the host's namespace)"
                )
        wanted = kept
    persisted = None if container else target.persisted_model(host)
    files = _Files(host)
    changes: list[KeyChange] = []
    for w in wanted:
        value = w.value
        now = fold(current[w.key])
        boot = effective(persisted, w.key) if persisted is not None else None
        write_runtime = runtime and not keys.same(w.key, now, value)
        if write_runtime and kernel and not initial and not scope[w.key]:
            raise RefusedError(
                f"{w.key} is global: writing it from network namespace"
                f" {host.netns() or '(non-initial)'} would change the whole host;"
                " run fix in the initial namespace, or use --no-runtime to only persist it"
            )
        dest = ""
        if persisted is not None and (boot is None or not keys.same(w.key, boot.value, value)):
            dest, _ = _place(files, named, w, value)
        if not write_runtime and not dest:
            continue
        changes.append(
            KeyChange(
                key=w.key,
                proposed=value,
                runtime=now,
                boot=None if boot is None else fold(boot.value),
                boot_at="" if boot is None else f"{boot.file}:{boot.line}",
                target=dest,
                per_netns=scope[w.key],
                rules=w.rules,
                write_runtime=write_runtime,
                reasons=w.reasons,
            )
        )

    edits: list[FileEdit] = []
    for resolved, text in files.text.items():
        after = text.encode("utf-8")
        before = files.before[resolved]
        if after != (before or b""):
            edits.append(
                FileEdit(
                    path=files.names[resolved],
                    real=host.path(resolved),
                    before=files.before[resolved],
                    after=after,
                )
            )
    if edits:
        final = files.simulate()
        for c in changes:
            decided = effective(final, c.key)
            if decided is None or not keys.same(c.key, decided.value, c.proposed):
                raise RefusedError(f"{c.key}: the planned files would not apply {c.proposed!r}")
    return plan_of(tuple(changes), tuple(edits), len(wanted_keys))
