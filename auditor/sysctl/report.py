"""`portaudit boot`: for every key the boot files set, the value the next boot gives it and why.

Reads the tree and the running values once (`boot_report`), then renders purely. Where the
running value differs, or procps `sysctl --system` would leave another value (it reads files
systemd-sysctl does not, such as /etc/sysctl.conf on Debian 13), both are shown: a value that
holds only because someone ran `sysctl --system` is exactly what the next boot undoes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from tabulate import tabulate

from auditor.errors import AuditorError
from auditor.facts.model import Unavailable
from auditor.facts.sysctlvalue import fold, holds_after_write
from auditor.hostfs import HostRoot, validate_sysctl_key
from auditor.sysctl.boot import boot_view, procps_view
from auditor.sysctl.tree import SysctlTree
from auditor.sysctlfile import is_glob


@dataclass(frozen=True, slots=True)
class BootEntry:
    """One key: what boot gives it, the deciding line, and what differs from it."""

    key: str
    boot: str | None
    """Whitespace folded; None when boot leaves the kernel's value."""
    where: str
    """`file:line` of the deciding line ("" when none)."""
    via: str
    """"" (the key's own line), "glob", or "default" (copied from net.ipv4.conf.default)."""
    unless_value: str | None
    """For an interface key: the value when the interface already holds `boot` at boot."""
    unless_where: str
    runtime: str | None
    """The running value; None when it could not be read."""
    procps: str | None
    """What `sysctl --system` would leave instead, where that differs (None: the same)."""

    @property
    def runtime_differs(self) -> bool:
        if self.runtime is None or self.boot is None:
            return False
        if holds_after_write(self.boot, self.runtime):
            return False  # what boot writes leaves the running value (`1 # note` on `1`)
        return self.unless_value is None or not holds_after_write(self.unless_value, self.runtime)


@dataclass(frozen=True, slots=True)
class BootReport:
    files: tuple[str, ...]
    masked: tuple[str, ...]
    entries: tuple[BootEntry, ...]


def boot_report(host: HostRoot, keys: list[str]) -> BootReport:
    """Every key the boot files set by name (and every key `sysctl --system` would set that boot
    does not), or only `keys` (validated) when given."""
    wanted = [validate_sysctl_key(k) for k in keys]
    try:
        tree = SysctlTree.read(host)
    except OSError as exc:
        raise AuditorError(f"sysctl.d: {exc.strerror or exc}", exit_code=2) from None
    model = boot_view(tree)
    if model.denied:
        raise AuditorError(f"{model.denied[0]}: permission denied (run as root)", exit_code=2)
    procps = procps_view(tree)
    names = wanted or sorted(
        {k for k in model.explicit_keys() if model.decide(k) is not None}
        | {a.key for a in procps.assignments if not is_glob(a.key) and procps.value(a.key)}
    )
    entries = []
    for key in names:
        d = model.decide(key)
        runtime = host.read_sysctl(key)
        p = procps.value(key)
        boot = None if d is None else fold(d.value)
        pv = None if p is None else fold(p)
        entries.append(
            BootEntry(
                key=key,
                boot=boot,
                where="" if d is None else f"{d.by.file}:{d.by.line}",
                via="" if d is None else d.via,
                unless_value=None if d is None or d.unless is None else fold(d.unless.value),
                unless_where=""
                if d is None or d.unless is None
                else f"{d.unless.by.file}:{d.unless.by.line}",
                runtime=None if isinstance(runtime, Unavailable) else runtime,
                procps=None if pv == boot else ("(not set)" if pv is None else pv),
            )
        )
    assert not any(is_glob(e.key) for e in entries)
    return BootReport(model.files, model.masked, tuple(entries))


def render_boot_json(report: BootReport) -> str:
    """The report as JSON: files, masked and one object per key."""
    out = {
        "files": list(report.files),
        "masked": list(report.masked),
        "keys": [{**asdict(e), "runtime_differs": e.runtime_differs} for e in report.entries],
    }
    return json.dumps(out, indent=2) + "\n"


def render_boot_table(report: BootReport) -> str:
    """One row per key; RUNTIME and `SYSCTL --SYSTEM` filled only where they differ."""
    if not report.entries:
        return "No file boot reads sets a sysctl.\n"
    rows = []
    for e in report.entries:
        if e.boot is None:
            boot, where = "(not set)", "kernel keeps its value"
        else:
            boot = e.boot
            where = e.where + (f" (via {e.via})" if e.via else "")
            if e.unless_value is not None:
                boot += f" (or {e.unless_value})"
                where += f"; {e.unless_where} if the interface already holds {e.boot}"
        runtime = ""
        if e.runtime is None:
            runtime = "(unreadable)"
        elif e.runtime_differs or (e.boot is None and e.procps is not None):
            runtime = e.runtime
        rows.append([e.key, boot, where, runtime, e.procps or ""])
    return (
        tabulate(
            rows,
            headers=["KEY", "NEXT BOOT", "DECIDED BY", "RUNTIME (differs)", "SYSCTL --SYSTEM"],
            tablefmt="simple",
            disable_numparse=True,
        )
        + "\n"
    )
