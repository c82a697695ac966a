"""The operator's config: rule param overrides, skipped rules or subjects, public ports.

Optional `/etc/portaudit/config.yaml` under `--root` (or `--config FILE`). A bad config is an
input error like a bad rule file, with file:line, because silently ignoring a typo in a
threshold would make the audit lie.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditor.errors import InputError
from auditor.hostfs import HostRoot
from auditor.record import dataclass, field
from auditor.yamlfile import LineDict, load_yaml

DEFAULT_CONFIG = "/etc/portaudit/config.yaml"


@dataclass(frozen=True, slots=True)
class RuleConfig:
    params: dict[str, float | int | str] = field(default_factory=dict)
    skip: bool = False
    skip_subjects: frozenset[str] = frozenset()
    line: int = 0


@dataclass(frozen=True, slots=True)
class Config:
    rules: dict[str, RuleConfig] = field(default_factory=dict)
    public_ports: frozenset[int] = frozenset()
    path: str = ""
    reserve_ports: frozenset[int] = frozenset()
    """Ports `fix` reserves whenever it widens the ephemeral range (servers not running now)."""

    def for_rule(self, rule_id: str) -> RuleConfig:
        return self.rules.get(rule_id, RuleConfig())


def _expect(cond: bool, path: Path, line: int, msg: str) -> None:
    if not cond:
        raise InputError(path, line, msg)


def parse_config(path: Path, data: Any) -> Config:
    if data is None:
        return Config(path=str(path))
    _expect(isinstance(data, LineDict), path, 1, "expected a mapping at the top level")
    assert isinstance(data, LineDict)
    unknown = set(data) - {"rules", "public_ports", "reserve_ports"}
    for key in sorted(unknown):
        raise InputError(
            path, data.line_of(key), f"unknown key {key!r} (rules, public_ports, reserve_ports)"
        )
    ports = _ports(path, data, "public_ports")
    reserve = _ports(path, data, "reserve_ports")
    rules: dict[str, RuleConfig] = {}
    raw_rules = data.get("rules") or LineDict()
    _expect(
        isinstance(raw_rules, LineDict), path, data.line_of("rules"), "rules: expected a mapping"
    )
    for rule_id, body in raw_rules.items():
        line = raw_rules.line_of(rule_id)
        if body is None:
            body = LineDict()
        _expect(isinstance(body, LineDict), path, line, f"rules.{rule_id}: expected a mapping")
        bad = set(body) - {"params", "skip", "skip_subjects"}
        for key in sorted(bad):
            raise InputError(
                path,
                body.line_of(key),
                f"rules.{rule_id}: unknown key {key!r} (params, skip, skip_subjects)",
            )
        params = body.get("params", {}) or {}
        _expect(
            isinstance(params, dict),
            path,
            body.line_of("params"),
            f"rules.{rule_id}.params: expected a mapping",
        )
        skip = body.get("skip", False)
        _expect(
            isinstance(skip, bool),
            path,
            body.line_of("skip"),
            f"rules.{rule_id}.skip: expected true or false",
        )
        subjects = body.get("skip_subjects", []) or []
        _expect(
            isinstance(subjects, list) and all(isinstance(s, str) for s in subjects),
            path,
            body.line_of("skip_subjects"),
            f"rules.{rule_id}.skip_subjects: expected a list of subject strings",
        )
        rules[str(rule_id)] = RuleConfig(
            params=dict(params), skip=skip, skip_subjects=frozenset(subjects), line=line
        )
    return Config(rules=rules, public_ports=frozenset(ports), path=str(path), reserve_ports=reserve)


def _ports(path: Path, data: LineDict, key: str) -> frozenset[int]:
    """A list of ports (1-65535) under `key`, or InputError naming the line."""
    raw = data.get(key, []) or []
    _expect(isinstance(raw, list), path, data.line_of(key), f"{key}: expected a list")
    out: set[int] = set()
    for p in raw:
        ok = isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535
        _expect(ok, path, data.line_of(key), f"{key}: {p!r} is not a port (1-65535)")
        out.add(p)
    return frozenset(out)


def load_config(host: HostRoot, path: Path | None) -> Config:
    """`--config FILE` must exist; the default file is optional."""
    if path is None:
        default = host.path(DEFAULT_CONFIG)
        if not default.exists():
            return Config()
        path = default
    return parse_config(path, load_yaml(path))
