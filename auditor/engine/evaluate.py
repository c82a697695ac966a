"""Evaluate rules over the facts: every rule and subject ends as fail, pass, skipped or error.

A rule that cannot be checked is reported as skipped with the reason (a fact unavailable, a
counter this kernel does not have), never as a pass: an audit that says "clean" must mean it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from auditor.config import Config
from auditor.engine.expr import EvalError, Skip, Value, table_lookup
from auditor.engine.load import Rule
from auditor.engine.names import global_table
from auditor.engine.report import Finding, Fix, Outcome, Report, Status
from auditor.errors import InputError
from auditor.facts.model import Facts, Unavailable


def check_config(rules: Sequence[Rule], config: Config) -> None:
    """Config naming an unknown rule or param, or overriding a number with text, is bad input."""
    by_id = {r.id: r for r in rules}
    for rule_id, rc in config.rules.items():
        rule = by_id.get(rule_id)
        if rule is None:
            raise InputError(config.path, rc.line, f"rules: unknown rule id {rule_id!r}")
        for pname, pval in rc.params.items():
            if pname not in rule.params:
                known = ", ".join(sorted(rule.params)) or "none"
                raise InputError(
                    config.path,
                    rc.line,
                    f"rules.{rule_id}.params: unknown param {pname!r} ({known})",
                )
            default = rule.params[pname]
            numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
            if numeric and (isinstance(pval, bool) or not isinstance(pval, (int, float))):
                raise InputError(
                    config.path, rc.line, f"rules.{rule_id}.params.{pname}: expected a number"
                )


def effective_params(rule: Rule, config: Config) -> dict[str, Any]:
    """The rule's params with the operator's overrides applied (checked by `check_config`)."""
    return {**rule.params, **config.for_rule(rule.id).params}


def _jsonable(value: Value) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _evaluate_one(
    rule: Rule,
    tables: tuple[dict[str, Value], Mapping[str, Value], Mapping[str, Value]],
    subject_row: bool,
    skip_subjects: frozenset[str],
    netns: str,
) -> tuple[Outcome, Finding | None]:
    lets = tables[0]
    lookup = table_lookup(*tables)
    subject = ""
    try:
        for name, expr in rule.lets:
            lets[name] = expr.evaluate(lookup)
        subject = rule.subject.render(lookup)
        if subject_row and subject in skip_subjects:
            return Outcome(rule.id, Status.SKIPPED, subject, "skipped by config"), None
        fired = None
        for sev, cond in rule.severity:
            if cond.evaluate(lookup):
                fired = sev
                break
        if fired is None:
            return Outcome(rule.id, Status.PASS, subject), None
        message = rule.message.render(lookup)
        evidence = {name: _jsonable(expr.evaluate(lookup)) for name, expr in rule.evidence}
        # A fix value that renders empty means "nothing to set for this key on this host"
        # (TW-003 on a kernel without tcp_tw_recycle): the key is left out, not written empty.
        sysctl = {key: t.render(lookup) for key, t in rule.fix_sysctl}
        fix = Fix(
            sysctl={key: value for key, value in sysctl.items() if value.strip()},
            advice=" ".join(rule.fix_advice.render(lookup).split()),
            applicability=rule.applicability,
        )
    except Skip as exc:
        return Outcome(rule.id, Status.SKIPPED, subject, exc.reason), None
    except EvalError as exc:
        return Outcome(rule.id, Status.ERROR, subject, str(exc)), None
    finding = Finding(
        id=rule.id,
        name=rule.name,
        severity=fired,
        title=rule.title,
        subject=subject,
        message=message,
        evidence=evidence,
        fix=fix,
        sources=rule.sources,
        netns=netns,
    )
    return Outcome(rule.id, Status.FAIL, subject), finding


def _rows(
    rule: Rule, facts: Facts, config: Config, made: dict[str, list[dict[str, Value]]]
) -> Iterable[dict[str, Value]] | str:
    """The subject rows of a for_each rule, or the reason there are none to check. Rows are
    made once per kind (`made`) and shared: expressions only read them."""
    kind = rule.kind
    if kind is None:
        return [{}]
    for group in kind.requires:
        value = getattr(facts, group)
        if isinstance(value, Unavailable):
            return f"{group}: {value.reason}"
    if kind.prefix not in made:
        made[kind.prefix] = list(kind.rows(facts, config))
    return made[kind.prefix]


def evaluate(rules: Sequence[Rule], facts: Facts, config: Config, netns: str = "") -> Report:
    check_config(rules, config)
    table = global_table(facts, config)
    findings: list[Finding] = []
    outcomes: list[Outcome] = []
    rows_made: dict[str, list[dict[str, Value]]] = {}
    for rule in rules:
        rc = config.for_rule(rule.id)
        if rc.skip:
            outcomes.append(Outcome(rule.id, Status.SKIPPED, "", "skipped by config"))
            continue
        missing = [g for g in rule.requires if isinstance(getattr(facts, g), Unavailable)]
        if missing:
            reason = "; ".join(f"{g}: {getattr(facts, g).reason}" for g in missing)
            outcomes.append(Outcome(rule.id, Status.SKIPPED, "", reason))
            continue
        params = {f"params.{k}": v for k, v in effective_params(rule, config).items()}
        base = {**table, **params}
        rows = _rows(rule, facts, config, rows_made)
        if isinstance(rows, str):
            outcomes.append(Outcome(rule.id, Status.SKIPPED, "", rows))
            continue
        for row in rows:
            outcome, finding = _evaluate_one(
                rule, ({}, row, base), rule.kind is not None, rc.skip_subjects, netns
            )
            outcomes.append(outcome)
            if finding is not None:
                findings.append(finding)
    findings.sort(key=lambda f: (-f.severity, f.id, f.subject))
    return Report(facts=facts, findings=tuple(findings), outcomes=tuple(outcomes))
