"""Load YAML rules into `Rule` objects, validating everything up front with file:line.

A rule that would fail at run time (unknown name, bad template, bad sysctl key, impossible
severity) fails here instead, when its author is looking, not on a production host at 3 a.m.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from auditor.engine.expr import Expr, ExprSyntaxError
from auditor.engine.names import FACT_GROUPS, SUBJECT_KINDS, SubjectKind, is_known
from auditor.engine.report import Applicability, Severity
from auditor.engine.template import Template
from auditor.errors import AuditorError, InputError
from auditor.hostfs import validate_sysctl_key
from auditor.record import dataclass
from auditor.yamlfile import LineDict, load_yaml

_ID_RE = re.compile(r"^[A-Z]{2,4}-\d{3}$")
_NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_LOCAL_RE = re.compile(r"^[a-z][a-z0-9_]*$")

REQUIRED = ("id", "name", "title", "rationale", "severity", "message", "fix", "sources")
OPTIONAL = ("example", "params", "for_each", "requires", "let", "subject", "evidence")


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    name: str
    title: str
    rationale: str
    example: str
    params: dict[str, Any]
    for_each: str | None
    requires: tuple[str, ...]
    lets: tuple[tuple[str, Expr], ...]
    severity: tuple[tuple[Severity, Expr], ...]
    subject: Template
    message: Template
    evidence: tuple[tuple[str, Expr], ...]
    fix_sysctl: tuple[tuple[str, Template], ...]
    fix_advice: Template
    applicability: Applicability
    sources: tuple[str, ...]
    path: str
    line: int

    @property
    def kind(self) -> SubjectKind | None:
        return SUBJECT_KINDS[self.for_each] if self.for_each else None


def builtin_rules_dir() -> Path:
    """`rules/` inside the installed wheel, or the source tree's top-level `rules/`.

    The wheel ships the YAML files as package data next to the code (never zipped), so a path
    beside this package is enough; importlib.resources would cost 18 ms of imports per run.
    """
    package = Path(__file__).resolve().parent.parent
    packaged = package / "rules"
    if packaged.is_dir():
        return packaged
    return package.parent / "rules"


class _RuleBuilder:
    """Validates one rule mapping; every error names the file and the offending line."""

    def __init__(self, path: Path, data: LineDict) -> None:
        self.path, self.data = path, data

    def fail(self, key: str | None, msg: str, mapping: LineDict | None = None) -> InputError:
        m = mapping if mapping is not None else self.data
        line = m.line_of(key) if key is not None else m.line
        return InputError(self.path, line, msg)

    def text(self, key: str, required: bool = True) -> str:
        value = self.data.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"{key}: expected non-empty text")
        return value.strip()

    def expr(
        self, source: Any, key: str, mapping: LineDict, names: set[str], kind: SubjectKind | None
    ) -> Expr:
        if isinstance(source, (int, float)):
            source = repr(source)
        if not isinstance(source, str):
            raise self.fail(key, f"{key}: expected an expression", mapping)
        try:
            e = Expr(source)
        except ExprSyntaxError as exc:
            raise self.fail(key, f"{key}: {exc}", mapping) from None
        self.check_names(e.names, key, mapping, names, kind)
        return e

    def template(
        self, source: Any, key: str, mapping: LineDict, names: set[str], kind: SubjectKind | None
    ) -> Template:
        if not isinstance(source, str):
            raise self.fail(key, f"{key}: expected a text template", mapping)
        try:
            t = Template(source.strip())
        except ExprSyntaxError as exc:
            raise self.fail(key, f"{key}: {exc}", mapping) from None
        self.check_names(t.names, key, mapping, names, kind)
        return t

    def check_names(
        self,
        used: Iterable[str],
        key: str,
        mapping: LineDict,
        local: set[str],
        kind: SubjectKind | None,
    ) -> None:
        for name in sorted(used):
            if name in local or is_known(name, kind):
                continue
            hint = ""
            if kind is None and any(
                name.startswith(k.prefix + ".") for k in SUBJECT_KINDS.values()
            ):
                hint = " (needs the matching for_each)"
            raise self.fail(key, f"{key}: unknown name {name!r}{hint}", mapping)

    def build(self) -> Rule:
        d = self.data
        for key in d:
            if key not in REQUIRED and key not in OPTIONAL:
                raise self.fail(key, f"unknown field {key!r}")
        for key in REQUIRED:
            if key not in d:
                raise self.fail(None, f"missing field {key!r}")
        rule_id = self.text("id")
        if not _ID_RE.match(rule_id):
            raise self.fail("id", f"id {rule_id!r}: expected AREA-NNN (e.g. EPH-001)")
        name = self.text("name")
        if not _NAME_RE.match(name):
            raise self.fail("name", f"name {name!r}: expected kebab-case")

        params = d.get("params") or LineDict()
        if not isinstance(params, LineDict):
            raise self.fail("params", "params: expected a mapping")
        for pname, pval in params.items():
            if not _LOCAL_RE.match(pname):
                raise self.fail(pname, f"params: bad name {pname!r}", params)
            if isinstance(pval, bool) or not isinstance(pval, (int, float, str)):
                raise self.fail(pname, f"params.{pname}: expected a number or text", params)

        for_each = d.get("for_each")
        if for_each is not None and (
            not isinstance(for_each, str) or for_each not in SUBJECT_KINDS
        ):
            raise self.fail(
                "for_each", f"for_each: unknown kind {for_each!r} ({', '.join(SUBJECT_KINDS)})"
            )
        kind = SUBJECT_KINDS[for_each] if for_each else None

        requires = d.get("requires") or []
        if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
            raise self.fail("requires", "requires: expected a list of fact groups")
        for r in requires:
            if r not in FACT_GROUPS:
                raise self.fail(
                    "requires",
                    f"requires: unknown fact group {r!r} ({', '.join(sorted(FACT_GROUPS))})",
                )

        local = {f"params.{p}" for p in params}
        lets: list[tuple[str, Expr]] = []
        raw_lets = d.get("let") or LineDict()
        if not isinstance(raw_lets, LineDict):
            raise self.fail("let", "let: expected a mapping of name: expression")
        for lname, lsrc in raw_lets.items():
            if not _LOCAL_RE.match(lname) or is_known(lname, kind):
                raise self.fail(lname, f"let: bad or clashing name {lname!r}", raw_lets)
            lets.append((lname, self.expr(lsrc, lname, raw_lets, local, kind)))
            local.add(lname)

        raw_sev = d.get("severity")
        if not isinstance(raw_sev, LineDict) or not raw_sev:
            raise self.fail("severity", "severity: expected a mapping of crit/warn/info: condition")
        severity: list[tuple[Severity, Expr]] = []
        for level, cond in raw_sev.items():
            try:
                sev = Severity.parse(level)
            except ValueError as exc:
                raise self.fail(level, f"severity: {exc}", raw_sev) from None
            if any(sev is seen for seen, _ in severity):
                raise self.fail(level, f"severity: {sev} given twice", raw_sev)
            severity.append((sev, self.expr(cond, level, raw_sev, local, kind)))
        # The highest true level wins, whatever order the YAML lists them in.
        severity.sort(key=lambda pair: -pair[0])

        subject = self.template(d.get("subject", ""), "subject", d, local, kind)
        message = self.template(d.get("message"), "message", d, local, kind)

        evidence: list[tuple[str, Expr]] = []
        raw_ev = d.get("evidence") or LineDict()
        if not isinstance(raw_ev, LineDict):
            raise self.fail("evidence", "evidence: expected a mapping of name: expression")
        for ename, esrc in raw_ev.items():
            evidence.append((ename, self.expr(esrc, ename, raw_ev, local, kind)))

        fix = d.get("fix")
        if not isinstance(fix, LineDict):
            raise self.fail("fix", "fix: expected a mapping with sysctl, advice, applicability")
        for key in fix:
            if key not in ("sysctl", "advice", "applicability"):
                raise self.fail(key, f"fix: unknown field {key!r}", fix)
        sysctl = fix.get("sysctl") or LineDict()
        if not isinstance(sysctl, LineDict):
            raise self.fail("sysctl", "fix.sysctl: expected a mapping of key: value", fix)
        fix_sysctl: list[tuple[str, Template]] = []
        from auditor.fix.keys import rule_key_problem

        for skey, sval in sysctl.items():
            problem = rule_key_problem(str(skey))
            if problem is not None:
                raise self.fail(skey, f"fix.sysctl: {problem}", sysctl)
            try:
                valid = validate_sysctl_key(skey)
            except AuditorError as exc:
                raise self.fail(skey, f"fix.sysctl: {exc}", sysctl) from None
            if isinstance(sval, bool) or not isinstance(sval, (str, int)):
                raise self.fail(skey, f"fix.sysctl.{skey}: expected a value", sysctl)
            fix_sysctl.append((valid, self.template(str(sval), skey, sysctl, local, kind)))
        advice = fix.get("advice")
        if not isinstance(advice, str) or not advice.strip():
            raise self.fail("advice", "fix.advice: expected non-empty text", fix)
        try:
            applicability = Applicability(fix.get("applicability", ""))
        except ValueError:
            raise self.fail(
                "applicability", "fix.applicability: expected safe, unsafe or display-only", fix
            ) from None

        sources = d.get("sources")
        if (
            not isinstance(sources, list)
            or not sources
            or not all(isinstance(s, str) and s for s in sources)
        ):
            raise self.fail("sources", "sources: expected a non-empty list of references")

        return Rule(
            id=rule_id,
            name=name,
            title=self.text("title"),
            rationale=self.text("rationale"),
            example=self.text("example", required=False),
            params=dict(params),
            for_each=for_each,
            requires=tuple(requires),
            lets=tuple(lets),
            severity=tuple(severity),
            subject=subject,
            message=message,
            evidence=tuple(evidence),
            fix_sysctl=tuple(fix_sysctl),
            fix_advice=self.template(advice, "advice", fix, local, kind),
            applicability=applicability,
            sources=tuple(sources),
            path=str(self.path),
            line=d.line,
        )


def load_rule_file(path: Path) -> Rule:
    data = load_yaml(path)
    if not isinstance(data, LineDict):
        raise InputError(path, 1, "expected one rule (a mapping) per file")
    return _RuleBuilder(path, data).build()


def _rule_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(
            p
            for p in path.iterdir()
            if p.suffix in (".yaml", ".yml") and not p.name.startswith(".")
        )
    if path.is_file():
        return [path]
    if path.exists():
        raise InputError(path, None, "not a regular file or directory (a FIFO or a device?)")
    raise InputError(path, None, "no such rule file or directory")


def load_rules(extra: Sequence[Path] = (), builtin: bool = True) -> list[Rule]:
    """The built-in catalog plus `--rules` files or dirs; duplicate ids are an error.

    The checked catalog is cached by the files' content (`auditor.engine.rulecache`): the same
    files give the same rules without parsing and checking them again.
    """
    from auditor.engine import rulecache

    paths = ([builtin_rules_dir()] if builtin else []) + list(extra)
    per_path = [_rule_files(p) for p in paths]
    directory = rulecache.cache_dir()
    key = rulecache.catalog_key([f for files in per_path for f in files]) if directory else None
    if directory is not None and key is not None:
        cached = rulecache.read(directory, key)
        if cached is not None:
            return cached
    rules: list[Rule] = []
    seen: dict[str, Rule] = {}
    for files in per_path:
        for f in files:
            rule = load_rule_file(f)
            if rule.id in seen:
                first = seen[rule.id]
                raise InputError(
                    f,
                    rule.line,
                    f"duplicate rule id {rule.id} (first in {first.path}:{first.line})",
                )
            seen[rule.id] = rule
            rules.append(rule)
    result = sorted(rules, key=lambda r: r.id)
    if directory is not None and key is not None:
        rulecache.write(directory, key, result)
    return result
