"""The audit pipeline: facts from one source, rules evaluated per namespace, one `AuditReport`.

Whatever the source (the live host, a saved snapshot of one namespace or of all of them, or
every namespace of the running kernel), the same steps run in the same order, so a flag that
works for one source works for all: counter rates (`--state`) are computed for the namespace
portaudit runs in, the renderers, `--log-findings` and the exit code all read the one report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from auditor import record
from auditor.config import Config
from auditor.engine.evaluate import check_config, effective_params, evaluate
from auditor.engine.load import Rule
from auditor.engine.report import AuditReport, NetnsInfo, Report
from auditor.errors import InputError, UsageError
from auditor.facts.model import Facts, SnapshotError, Unavailable, facts_from_json
from auditor.hostfs import HostRoot

if TYPE_CHECKING:
    from auditor.allnetns import NamespaceFacts

OTHER_NETNS_RATES = "counter state is kept only for the namespace portaudit runs in"
OWNERS_RULE = "EPH-001"
"""The rule whose findings name the processes behind a destination (`dest.owners`)."""

Warn = Callable[[str], None]


def read_snapshot(path: Path) -> Facts | NamespaceFacts:
    """A `facts` or `facts --all-netns` snapshot; InputError names the file and the field."""
    import json

    from auditor import allnetns
    from auditor.inputfile import MAX_SNAPSHOT, read_text

    try:
        data = json.loads(read_text(path, MAX_SNAPSHOT))
    except FileNotFoundError:
        raise InputError(path, None, "no such file") from None
    except OSError as exc:
        raise InputError(path, None, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, None, f"cannot read: not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, exc.lineno, f"not JSON: {exc.msg}") from None
    except RecursionError:
        raise InputError(path, None, "not a portaudit facts snapshot: nested too deeply") from None
    except ValueError as exc:
        raise InputError(path, None, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(path, None, "not a portaudit facts snapshot: expected an object")
    try:
        if allnetns.is_all_netns_snapshot(data):
            return allnetns.namespaces_from_json(data)
        return facts_from_json(data)
    except (SnapshotError, RecursionError, ValueError, OverflowError, TypeError) as exc:
        raise InputError(path, None, f"not a portaudit facts snapshot: {exc}") from None


def owners_threshold(rules: Sequence[Rule], config: Config) -> float | None:
    """The share of usable ports above which owners are attributed: the config-effective
    `warn_ratio` of the rule that shows them, so every destination it flags has its owners
    (and an idle host pays for no `/proc/*/fd` walk). None when that rule does not run."""
    for rule in rules:
        if rule.id == OWNERS_RULE and not config.for_rule(rule.id).skip:
            ratio = effective_params(rule, config).get("warn_ratio")
            if isinstance(ratio, (int, float)) and not isinstance(ratio, bool):
                return float(ratio)
    return None


def _with_rates(facts: Facts, host: HostRoot, warn: Warn) -> Facts:
    from auditor.facts.rates import with_rates

    facts, warning = with_rates(facts, host, save=True)
    if warning:
        warn(warning)
    return facts


def _judge(
    facts: Facts,
    current: bool,
    label: str,
    rules: Sequence[Rule],
    config: Config,
    rates: Callable[[Facts], Facts] | None,
) -> Report:
    """One namespace's report: counter rates for the namespace portaudit runs in only."""
    if rates is not None:
        if current:
            facts = rates(facts)
        elif not isinstance(facts.counters, Unavailable):
            facts = record.replace(facts, rates=Unavailable(OTHER_NETNS_RATES))
    return evaluate(rules, facts, config, netns=label, passing=False)


def _many(
    found: NamespaceFacts,
    rules: Sequence[Rule],
    config: Config,
    rates: Callable[[Facts], Facts] | None,
    where: str,
    judged: dict[int, Report] | None = None,
) -> AuditReport:
    """The report of every namespace in `found`; `judged` holds those already evaluated (by
    their index in `found`)."""
    infos: list[NetnsInfo] = []
    reports: list[Report] = []
    skipped = []
    for i, (info, facts, current) in enumerate(found.found):
        if isinstance(facts, Unavailable):
            skipped.append((info.label, facts.reason))
            continue
        infos.append(info)
        report = (judged or {}).get(i)
        if report is None:
            report = _judge(facts, current, info.label, rules, config, rates)
        reports.append(report)
    if not reports:
        raise InputError(where, None, "no namespace in it has facts to audit")
    return AuditReport(
        reports=tuple(reports),
        namespaces=tuple(infos),
        skipped_netns=tuple(skipped + found.problems),
    )


def run_audit(
    host: HostRoot,
    rules: Sequence[Rule],
    config: Config,
    *,
    facts_file: Path | None = None,
    all_netns: bool = False,
    state: bool | None = None,
    warn: Warn = lambda _text: None,
) -> AuditReport:
    """Collect (or read) the facts, evaluate every namespace, and return the one report.

    `state`: compare counters with the last run and save this one; None means "on for the
    live /proc", off for a snapshot (it keeps the rates it was taken with) or a fixture tree.
    """
    check_config(rules, config)
    if facts_file is not None:
        if all_netns:
            raise UsageError(
                "--all-netns reads the running kernel; a `facts --all-netns` snapshot is"
                " audited with --facts alone"
            )
        if state:
            raise UsageError("--state compares live counters; a --facts snapshot keeps its rates")
        snapshot = read_snapshot(facts_file)
        if not isinstance(snapshot, Facts):
            return _many(snapshot, rules, config, None, str(facts_file))
        return AuditReport.single(evaluate(rules, snapshot, config, passing=False))
    use_state = host.is_live if state is None else state

    def rates(facts: Facts) -> Facts:
        return _with_rates(facts, host, warn)

    owners_above = owners_threshold(rules, config)
    if all_netns:
        from auditor.allnetns import collect_namespaces

        judged: dict[int, Report] = {}
        with_rates = rates if use_state else None

        def judge(i: int, info: NetnsInfo, facts: Facts, current: bool) -> None:
            """Each namespace is evaluated as its facts arrive, while the workers read on."""
            judged[i] = _judge(facts, current, info.label, rules, config, with_rates)

        found = collect_namespaces(host, owners_above, judge)
        return _many(found, rules, config, with_rates, "--all-netns", judged)
    from auditor.facts.collect import collect_facts

    facts = collect_facts(host, owners_above)
    if use_state:
        facts = rates(facts)
    return AuditReport.single(evaluate(rules, facts, config, passing=False))
