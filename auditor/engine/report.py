"""What evaluating the rules produces: findings, and the outcome of every rule and subject.

`Report` is one namespace's result, as `evaluate` returns it. `AuditReport` is what an audit
hands to a renderer: one `Report` for a single namespace, or one per namespace with
`--all-netns` (or a `facts --all-netns` snapshot), so every renderer, the journal lines and the
exit code read one shape and there is one audit pipeline whatever the number of namespaces.
"""

from __future__ import annotations

import enum
from typing import Any

from auditor.facts.model import Facts, Unavailable
from auditor.record import dataclass, field


class Severity(enum.IntEnum):
    """Ordered, so `--fail-on warn` is `severity >= Severity.WARN`."""

    INFO = 1
    WARN = 2
    CRIT = 3

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r} (info, warn, crit)") from None


class Applicability(enum.StrEnum):
    """As ruff's fixes: may `portaudit fix` apply it unasked, only when asked, or never."""

    SAFE = "safe"
    UNSAFE = "unsafe"
    DISPLAY_ONLY = "display-only"


@dataclass(frozen=True, slots=True)
class Fix:
    sysctl: dict[str, str]
    """key -> recommended value; empty when the fix is advice only."""
    advice: str
    applicability: Applicability


@dataclass(frozen=True, slots=True)
class Finding:
    id: str
    name: str
    severity: Severity
    title: str
    """The rule's title (what the rule finds, the same for every finding of the rule)."""
    subject: str
    message: str
    """This finding's one line, rendered from the rule's `message` template."""
    evidence: dict[str, Any]
    fix: Fix
    sources: tuple[str, ...]
    netns: str = ""
    """The namespace the finding belongs to, when auditing more than one (`--all-netns`)."""


class Status(enum.StrEnum):
    FAIL = "fail"
    PASS = "pass"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One rule (and subject, for `for_each` rules) and what came of it, with the reason."""

    rule_id: str
    status: Status
    subject: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    facts: Facts
    findings: tuple[Finding, ...]
    outcomes: tuple[Outcome, ...] = field(default=())

    @property
    def complete(self) -> bool:
        """The core facts were read and no rule failed to evaluate.

        Without the socket table or the port range, port exhaustion cannot be judged at all;
        a dashboard must see that as a failed audit, not as a quiet host.
        """
        core = (self.facts.sockets, self.facts.ports)
        if any(isinstance(fact, Unavailable) for fact in core):
            return False
        return not any(o.status is Status.ERROR for o in self.outcomes)

    def summary(self) -> dict[str, int]:
        counts = {str(s): 0 for s in sorted(Severity, reverse=True)}
        for f in self.findings:
            counts[str(f.severity)] += 1
        return counts


@dataclass(frozen=True, slots=True)
class NetnsInfo:
    """Which network namespace a report belongs to, as `--all-netns` found it."""

    label: str
    """How output names it: the `ip netns` name, else `pid P net:[inode]`, or `net:[inode]`."""
    inode: int
    name: str | None = None
    pid: int | None = None
    owner: str | None = None
    """The container or pod that owns it, when its processes' cgroups tell it
    (`docker 3f2a1b2c3d4e`)."""


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The whole audit: the reports of one or many namespaces and the namespaces not read."""

    reports: tuple[Report, ...]
    """The current namespace first; never empty."""
    namespaces: tuple[NetnsInfo, ...] = ()
    """One per report for a many-namespace audit; empty for a single-namespace one."""
    skipped_netns: tuple[tuple[str, str], ...] = ()
    """(namespace or place, reason) for each namespace that could not be read."""

    def __post_init__(self) -> None:
        if not self.reports:
            raise ValueError("an audit has at least one report")
        if self.namespaces and len(self.namespaces) != len(self.reports):
            raise ValueError("one NetnsInfo per report")

    @classmethod
    def single(cls, report: Report) -> AuditReport:
        return cls(reports=(report,))

    @property
    def all_netns(self) -> bool:
        """True when the audit covered every namespace: renderers then name each one."""
        return bool(self.namespaces)

    @property
    def facts(self) -> Facts:
        """The facts that head the output (the namespace portaudit runs in)."""
        return self.reports[0].facts

    def labelled(self) -> list[tuple[str, Report]]:
        """(namespace label, report) pairs; the label is "" for a single-namespace audit."""
        labels = [n.label for n in self.namespaces] or [""]
        return list(zip(labels, self.reports, strict=True))

    @property
    def findings(self) -> tuple[Finding, ...]:
        """Every finding, sorted as one namespace's are (severity, id), then namespace."""
        if len(self.reports) == 1:
            return self.reports[0].findings
        found = [f for r in self.reports for f in r.findings]
        found.sort(key=lambda f: (-f.severity, f.id, f.netns, f.subject))
        return tuple(found)

    @property
    def complete(self) -> bool:
        return all(r.complete for r in self.reports)

    def summary(self) -> dict[str, int]:
        counts = {str(s): 0 for s in sorted(Severity, reverse=True)}
        for r in self.reports:
            for key, n in r.summary().items():
                counts[key] += n
        return counts

    def skipped_rules(self) -> set[str]:
        """Rule ids skipped in any namespace (config skips included)."""
        return {o.rule_id for r in self.reports for o in r.outcomes if o.status is Status.SKIPPED}
