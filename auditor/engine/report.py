"""What evaluating the rules produces: findings, and the outcome of every rule and subject."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from auditor.facts.model import Facts, Unavailable


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
    subject: str
    message: str
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
