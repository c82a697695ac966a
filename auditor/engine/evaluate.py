"""Evaluate rules over the facts: every rule and subject ends as fail, pass, skipped or error.

A rule that cannot be checked is reported as skipped with the reason (a fact unavailable, a
counter this kernel does not have), never as a pass: an audit that says "clean" must mean it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from auditor.config import Config
from auditor.engine.expr import EvalError, Expr, Lookup, Missing, Skip, Value
from auditor.engine.load import Rule
from auditor.engine.names import LazyRow, NameTable, SubjectKind, global_table
from auditor.engine.report import Finding, Fix, Outcome, Report, Severity, Status
from auditor.errors import InputError
from auditor.facts.model import DestinationRows, Facts, Unavailable

if TYPE_CHECKING:
    from auditor.engine.prefilter import CanFire


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


_ABSENT = object()


def scope(
    lets: Mapping[str, Expr], row: Mapping[str, Value], row_names: frozenset[str], base: NameTable
) -> Lookup:
    """The names one rule sees for one subject. A `let` is computed the first time something
    reads it, and once: a verdict that only compares `dest.ratio` never evaluates the lets its
    message or fix need, so a fact only those need cannot stop the judgement."""
    memo: dict[str, Value] = {}

    def lookup(name: str) -> Value:
        if name in row_names:
            value = row[name]
        elif name in lets:
            value = memo.get(name, _ABSENT)
            if value is _ABSENT:
                try:
                    value = lets[name].evaluate(lookup)
                except Skip as exc:
                    value = Missing(exc.reason)
                memo[name] = value
        else:
            value = base.get(name, _ABSENT)
            if value is _ABSENT:
                value = base.missing(name)
        if value.__class__ is Missing:
            raise Skip(value.reason)
        return value

    return lookup


class Unknown:
    """What a message shows in place of a fact this host could not provide."""

    __slots__ = ()

    def __str__(self) -> str:
        return "unknown"


_UNKNOWN = Unknown()


def _describing(lookup: Lookup, gaps: list[str]) -> Lookup:
    """`lookup` for text: a missing fact prints as "unknown" and its reason is kept in `gaps`."""

    def describe(name: str) -> Value:
        try:
            return lookup(name)
        except Skip as exc:
            if exc.reason not in gaps:
                gaps.append(exc.reason)
            return _UNKNOWN

    return describe


def _evidence_value(expr: Expr, lookup: Lookup) -> Value:
    try:
        return _jsonable(expr.evaluate(lookup))
    except Skip:
        return None


def _describe(rule: Rule, level: Severity, lookup: Lookup, subject: str, netns: str) -> Finding:
    """The finding for a verdict already reached. Missing facts degrade the text (shown as
    "unknown") and drop only the fix values that need them, never the verdict."""
    gaps: list[str] = []
    text = _describing(lookup, gaps)
    message = rule.message.render(text)
    evidence = {name: _evidence_value(expr, lookup) for name, expr in rule.evidence}
    sysctl: dict[str, str] = {}
    dropped: list[str] = []
    for key, template in rule.fix_sysctl:
        try:
            value = template.render(lookup)
        except Skip as exc:
            dropped.append(f"No value is proposed for {key}: {exc.reason}.")
            continue
        # A value that renders empty means "nothing to set for this key on this host" (TW-003
        # on a kernel without tcp_tw_recycle): the key is left out, not written empty.
        if value.strip():
            sysctl[key] = value
    advice = " ".join([*rule.fix_advice.render(text).split(), *dropped])
    return Finding(
        id=rule.id,
        name=rule.name,
        severity=level,
        title=rule.title,
        subject=subject,
        message=message,
        evidence=evidence,
        fix=Fix(sysctl=sysctl, advice=advice, applicability=rule.applicability),
        sources=rule.sources,
        netns=netns,
    )


def _evaluate_one(
    rule: Rule,
    lookup: Lookup,
    subject_row: bool,
    skip_subjects: frozenset[str],
    netns: str,
    passing: bool = True,
) -> tuple[Outcome | None, Finding | None]:
    """Judge first (the severity conditions, highest level first), then describe.

    A passing subject's outcome is None unless `passing` asks for it: the subject line is
    rendered only for an outcome someone reads."""
    try:
        subject = ""
        if subject_row and skip_subjects:
            subject = rule.subject.render(_describing(lookup, []))
            if subject in skip_subjects:
                return Outcome(rule.id, Status.SKIPPED, subject, "skipped by config"), None
        level = None
        for sev, cond in rule.severity:
            if cond.evaluate(lookup):
                level = sev
                break
        if level is None and not passing:
            return None, None
        if not subject:
            subject = rule.subject.render(_describing(lookup, []))
        if level is None:
            return Outcome(rule.id, Status.PASS, subject), None
        finding = _describe(rule, level, lookup, subject, netns)
    except Skip as exc:
        if not subject:
            subject = rule.subject.render(_describing(lookup, []))
        return Outcome(rule.id, Status.SKIPPED, subject, exc.reason), None
    except EvalError as exc:
        return Outcome(rule.id, Status.ERROR, subject, str(exc)), None
    return Outcome(rule.id, Status.FAIL, subject), finding


class _Rows:
    """One kind's subjects, with each row built the first time a rule evaluates it and kept
    for the next rule, so a field two rules read is computed once; a row no rule evaluates
    is never built, and for destinations (`DestinationRows`) never even made."""

    __slots__ = ("_built", "_ceilings", "_distinct", "_picked", "ctx", "items", "kind", "packed")

    def __init__(self, kind: SubjectKind, facts: Facts, config: Config) -> None:
        items, self.ctx = kind.items(facts, config)
        self.kind = kind
        self.packed = items if isinstance(items, DestinationRows) else None
        self.items: Sequence[Any] = self.packed if self.packed is not None else list(items)
        self._built: dict[int, LazyRow] = {}
        self._ceilings: list[float] | None = None
        self._distinct: list[float] | None = None
        self._picked: dict[frozenset[float], list[int]] = {}

    def row(self, i: int) -> LazyRow:
        """Row `i` (a storage index for packed rows, see `order`)."""
        got = self._built.get(i)
        if got is None:
            item = self.packed.at(i) if self.packed is not None else self.items[i]
            got = self._built[i] = LazyRow(item, self.ctx, self.kind.by_name)
        return got

    def order(self, picked: list[int] | None = None) -> list[int]:
        """The indices `picked` (every row when None) in the subjects' order."""
        if self.packed is not None:
            return self.packed.order() if picked is None else self.packed.in_order(picked)
        return list(range(len(self.items))) if picked is None else picked

    def ceilings(self) -> list[float]:
        if self._ceilings is None:
            assert self.kind.ceilings is not None
            self._ceilings = self.kind.ceilings(self.items, self.ctx)
        return self._ceilings

    def picked(self, test: CanFire) -> list[int]:
        """The indices of the rows whose ceiling passes `test` (asked once per distinct
        ceiling; the same answer for the next rule with the same one is not computed again)."""
        ceilings = self.ceilings()
        distinct = self._distinct
        if distinct is None:
            distinct = self._distinct = sorted(set(ceilings))
        fire = frozenset(c for c in distinct if test(c))
        got = self._picked.get(fire)
        if got is None:
            got = self._picked[fire] = (
                [i for i, c in enumerate(ceilings) if c in fire] if fire else []
            )
        return got


def _rows(rule: Rule, facts: Facts, config: Config, made: dict[str, _Rows]) -> _Rows | str | None:
    """The subject rows of a for_each rule (None for a rule without one), or the reason there
    are none to check. Made once per kind (`made`) and shared between rules."""
    kind = rule.kind
    if kind is None:
        return None
    for group in kind.requires:
        value = getattr(facts, group)
        if isinstance(value, Unavailable):
            return f"{group}: {value.reason}"
    if kind.prefix not in made:
        made[kind.prefix] = _Rows(kind, facts, config)
    return made[kind.prefix]


def _candidates(
    rule: Rule, rows: _Rows, lets: Mapping[str, Expr], lookup: Lookup, every: bool
) -> Iterator[Mapping[str, Value]]:
    """The rows to evaluate: all of them when `every` (each leaves an outcome), else only the
    rows whose ceiling lets some severity condition hold (prefilter.py)."""
    kind = rows.kind
    test = None
    if not every and kind.ceilings is not None and rows.items:
        from auditor.engine.prefilter import can_fire  # with `ast`, only when there are rows

        test = can_fire(
            [cond for _sev, cond in rule.severity], kind.bounded, kind.names, lets, lookup
        )
    if test is None:
        for i in rows.order():
            yield rows.row(i)
        return
    for i in rows.order(rows.picked(test)):
        yield rows.row(i)


def evaluate(
    rules: Sequence[Rule], facts: Facts, config: Config, netns: str = "", passing: bool = True
) -> Report:
    """Every rule over the facts. With `passing` False, the subjects that pass leave no
    `Outcome` (the renderers read findings, skips and errors only): on a host with 100,000
    destinations that is 100,000 subject lines not rendered and objects not kept."""
    check_config(rules, config)
    table = global_table(facts, config)
    findings: list[Finding] = []
    outcomes: list[Outcome] = []
    rows_made: dict[str, _Rows] = {}
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
        base = NameTable(facts)
        base.update(table)
        base.update({f"params.{k}": v for k, v in effective_params(rule, config).items()})
        rows = _rows(rule, facts, config, rows_made)
        if isinstance(rows, str):
            outcomes.append(Outcome(rule.id, Status.SKIPPED, "", rows))
            continue
        kind = rule.kind
        row_names = kind.names if kind is not None else frozenset()
        lets = dict(rule.lets)
        every = passing or bool(rc.skip_subjects)
        candidates: Iterable[Mapping[str, Value]] = (
            [{}]
            if rows is None
            else _candidates(rule, rows, lets, scope(lets, {}, frozenset(), base), every)
        )
        for row in candidates:
            outcome, finding = _evaluate_one(
                rule,
                scope(lets, row, row_names, base),
                kind is not None,
                rc.skip_subjects,
                netns,
                passing,
            )
            if outcome is not None:
                outcomes.append(outcome)
            if finding is not None:
                findings.append(finding)
    findings.sort(key=lambda f: (-f.severity, f.id, f.subject))
    return Report(facts=facts, findings=tuple(findings), outcomes=tuple(outcomes))
