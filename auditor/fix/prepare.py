"""Turn findings into a `Plan` for this host: read runtime values, the boot model, namespaces.

Reads only. Every value is validated and every file choice is checked against a simulated boot
before the plan is shown, so what the operator confirms is exactly what `apply` writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from auditor.engine.report import Finding
from auditor.errors import InputError, RefusedError
from auditor.facts.model import PersistedSysctl, SysctlAssignment, Unavailable
from auditor.facts.persisted import effective
from auditor.facts.sysctlvalue import same_value
from auditor.fix import netns, target
from auditor.fix.plan import (
    DEFAULT_FILE,
    PORT_RANGE,
    RESERVED,
    UNPRIV_START,
    FileEdit,
    KeyChange,
    Plan,
    Wanted,
    narrows_port_range,
    norm,
    select_fixes,
    validate_value,
)
from auditor.hostfs import HostRoot
from auditor.sysctlfile import set_value


def _decode(resolved: PurePosixPath, data: bytes | None) -> str:
    if data is None:
        return ""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            str(resolved), None, f"not UTF-8 text ({exc.reason}); not editing it"
        ) from None


def _boot(persisted: PersistedSysctl, key: str) -> SysctlAssignment | None:
    return effective(persisted, key)


class _Files:
    """The planned contents of every file touched so far (resolved host path -> text)."""

    def __init__(self, host: HostRoot) -> None:
        self.host = host
        self.before: dict[PurePosixPath, bytes | None] = {}
        self.text: dict[PurePosixPath, str] = {}
        self.names: dict[PurePosixPath, str] = {}

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


def _place(
    host: HostRoot, files: _Files, named: str, w: Wanted, value: str
) -> tuple[str, SysctlAssignment | None]:
    """Edit `named` (or the later file that overrides it) so boot applies `value` for w.key."""
    comment = f"portaudit fix ({', '.join(w.rules)})"
    resolved, text = files.current(named)
    trial = {resolved: set_value(text, w.key, value, comment=comment)}
    sim = target.simulate_boot(host, files.encoded(trial))
    winner = _boot(sim, w.key)
    if winner is not None and norm(winner.value) == value:
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
    trial = {over: set_value(over_text, w.key, value, comment=comment)}
    sim = target.simulate_boot(host, files.encoded(trial))
    winner2 = _boot(sim, w.key)
    if winner2 is None or norm(winner2.value) != value:
        got = "nothing" if winner2 is None else f"{winner2.file}:{winner2.line}"
        raise RefusedError(f"{w.key}: editing {where} still leaves {got} deciding it at boot")
    files.text.update(trial)
    return winner.file, winner2


def build_plan(
    host: HostRoot,
    findings: Iterable[Finding],
    *,
    only: frozenset[str] | None = None,
    file: str | None = None,
    runtime: bool = True,
) -> Plan:
    """The changes that make runtime and boot values equal the failed rules' safe fixes."""
    named = str(target.check_named_file(file)) if file is not None else DEFAULT_FILE
    selection = select_fixes(findings, only)
    notes = list(selection.notes)
    if not selection.wanted:
        return Plan((), (), tuple(notes))

    current: dict[str, str] = {}
    for key in [w.key for w in selection.wanted] + [UNPRIV_START, RESERVED]:
        got = host.read_sysctl(key)
        if not isinstance(got, Unavailable):
            current[key] = got
    context = dict(current)
    for w in selection.wanted:
        if w.key not in current:
            raise InputError(
                None,
                None,
                f"{','.join(w.rules)}: {w.key}: no {host.sysctl_path(w.key)} (unknown to this"
                " kernel, or a global key not visible in this network namespace)",
            )
        if w.key == UNPRIV_START:
            context[UNPRIV_START] = w.value
    proposed = {
        w.key: validate_value(w.key, w.value, context, ",".join(w.rules)) for w in selection.wanted
    }
    wanted: list[Wanted] = []
    for w in selection.wanted:
        if w.key == PORT_RANGE and narrows_port_range(
            current.get(PORT_RANGE), proposed[w.key], current.get(RESERVED, "")
        ):
            notes.append(
                f"{','.join(w.rules)}: {PORT_RANGE} {proposed[w.key]!r} is narrower than"
                f" {current[PORT_RANGE]!r}; not applied"
            )
            continue
        wanted.append(w)

    scope = netns.per_netns_keys(host, [w.key for w in wanted])
    guarded = netns.kernel_backed(host) and not netns.in_initial_netns(host)
    persisted = target.persisted_model(host)
    files = _Files(host)
    changes: list[KeyChange] = []
    for w in wanted:
        value = proposed[w.key]
        now = norm(current[w.key])
        boot = _boot(persisted, w.key)
        write_runtime = runtime and not same_value(now, value)
        if write_runtime and guarded and not scope[w.key]:
            raise RefusedError(
                f"{w.key} is global: writing it from network namespace"
                f" {netns.current_netns(host) or '(non-initial)'} would change the whole host;"
                " run fix in the initial namespace, or use --no-runtime to only persist it"
            )
        dest = ""
        if boot is None or not same_value(boot.value, value):
            dest, _ = _place(host, files, named, w, value)
        if not write_runtime and not dest:
            continue
        changes.append(
            KeyChange(
                key=w.key,
                proposed=value,
                runtime=now,
                boot=None if boot is None else norm(boot.value),
                boot_at="" if boot is None else f"{boot.file}:{boot.line}",
                target=dest,
                per_netns=scope[w.key],
                rules=w.rules,
                write_runtime=write_runtime,
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
                    real=target.real_path(host, resolved),
                    before=files.before[resolved],
                    after=after,
                )
            )
    if edits:
        final = target.simulate_boot(host, files.encoded())
        for c in changes:
            decided = _boot(final, c.key)
            if decided is None or norm(decided.value) != c.proposed:
                raise RefusedError(f"{c.key}: the planned files would not apply {c.proposed!r}")
    return Plan(tuple(changes), tuple(edits), tuple(notes), len(selection.wanted))
