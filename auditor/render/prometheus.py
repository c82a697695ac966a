"""`audit --format prometheus`: text exposition for node_exporter's textfile collector.

Label cardinality is bounded: per-destination series only for the busiest destinations, and at
most `MAX_FINDING_SERIES` per-finding series (crit first), with the remainder counted, so a host
with 50,000 destinations cannot blow up the fleet's Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from auditor.engine.report import AuditReport, Severity, Status
from auditor.facts.model import PortRange, SocketTable

MAX_DESTINATIONS = 20
MAX_FINDING_SERIES = 50
RATE_SERIES: frozenset[tuple[str, str]] = frozenset(
    {
        ("TcpExt", "ListenOverflows"),
        ("TcpExt", "ListenDrops"),
        ("TcpExt", "TCPTimeWaitOverflow"),
        ("Tcp", "AttemptFails"),
        ("Tcp", "ActiveOpens"),
        ("Tcp", "PassiveOpens"),
        ("Tcp", "EstabResets"),
    }
)
"""The counters whose rates are exported: the ones rules judge, plus the connection rates that
explain them. Every counter would be about 300 series per host for no alert."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _num(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, help_text: str, samples: Sequence[tuple[Iterable[tuple[str, str]], float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels)} {_num(value)}")


def render_prometheus(audit: AuditReport) -> str:
    """One exposition for the audit; with --all-netns every per-namespace series has `netns`."""
    reports = audit.reports
    success = audit.complete
    multi = audit.all_netns
    out = _Exposition()
    used, capacity, ratio, tw = [], [], [], []
    findings_by_sev: dict[str, int] = {str(s): 0 for s in Severity}
    per_rule: dict[tuple[str, str], int] = {}
    per_finding: list[tuple[tuple[tuple[str, str], ...], float]] = []
    all_findings = []
    skipped = 0
    rates = []
    for report in reports:
        facts = report.facts
        ns: list[tuple[str, str]] = [("netns", facts.host.netns)] if multi else []
        sockets, ports = facts.sockets, facts.ports
        if isinstance(sockets, SocketTable) and isinstance(ports, PortRange):
            for d in sockets.destinations[:MAX_DESTINATIONS]:
                labels = [*ns, ("src", d.src), ("dst", d.dst), ("dport", str(d.dport))]
                used.append((labels, float(d.used)))
                capacity.append((labels, float(ports.usable)))
                ratio.append((labels, d.ratio(ports)))
        if isinstance(facts.sockstat, dict) and "tw" in facts.sockstat.get("TCP", {}):
            tw.append((ns, float(facts.sockstat["TCP"]["tw"])))
        elif isinstance(sockets, SocketTable):
            tw.append((ns, float(sockets.total_by_state.get("TIME_WAIT", 0))))
        if isinstance(facts.rates, dict):
            for group, row in sorted(facts.rates.items()):
                for counter, value in sorted(row.items()):
                    if (group, counter) in RATE_SERIES:
                        rates.append(([*ns, ("group", group), ("counter", counter)], value))
        skipped += len({o.rule_id for o in report.outcomes if o.status is Status.SKIPPED})
        for f in report.findings:
            findings_by_sev[str(f.severity)] += 1
            key = (f.id, str(f.severity))
            per_rule[key] = per_rule.get(key, 0) + 1
            all_findings.append((ns, f))
    all_findings.sort(key=lambda nf: (-nf[1].severity, nf[1].id, nf[1].subject))
    seen: set[tuple[tuple[str, str], ...]] = set()
    for ns_labels, f in all_findings:
        flabels = (
            *ns_labels,
            ("id", f.id),
            ("severity", str(f.severity)),
            ("subject", f.subject),
        )
        if flabels in seen or len(per_finding) >= MAX_FINDING_SERIES:
            continue
        seen.add(flabels)
        per_finding.append((flabels, 1.0))
    truncated = len(all_findings) - len(per_finding)

    out.family(
        "portaudit_destination_ports_used",
        "Sockets with an ephemeral local port to this destination (busiest destinations).",
        used,
    )
    out.family(
        "portaudit_destination_ports_capacity",
        "Usable ephemeral ports per destination (range minus reserved).",
        capacity,
    )
    out.family(
        "portaudit_destination_port_use_ratio",
        "Ephemeral port use per destination: used / capacity.",
        ratio,
    )
    out.family("portaudit_time_wait_sockets", "TCP sockets in TIME_WAIT.", tw)
    out.family(
        "portaudit_findings",
        "Findings by severity.",
        [([("severity", s)], float(n)) for s, n in sorted(findings_by_sev.items())],
    )
    out.family(
        "portaudit_rule_findings",
        "Findings per rule that fired.",
        [([("id", i), ("severity", s)], float(n)) for (i, s), n in sorted(per_rule.items())],
    )
    out.family("portaudit_finding", "One series per finding (bounded; crit first).", per_finding)
    out.family(
        "portaudit_findings_truncated",
        "Findings left out of portaudit_finding by the series bound.",
        [([], float(truncated))],
    )
    out.family(
        "portaudit_rules_skipped",
        "Rules skipped because a fact was unavailable.",
        [([], float(skipped))],
    )
    out.family(
        "portaudit_counter_rate_per_minute",
        "Kernel counter increase per minute since the last run.",
        rates,
    )
    stamp = max((r.facts.collected_at for r in reports), default=0.0)
    out.family(
        "portaudit_last_run_timestamp_seconds",
        "When the facts were collected (unix time).",
        [([], stamp)],
    )
    out.family(
        "portaudit_last_run_success",
        "1 when the audit read the socket table and port range and every rule evaluated.",
        [([], 1.0 if success else 0.0)],
    )
    return "\n".join(out.lines) + "\n"
