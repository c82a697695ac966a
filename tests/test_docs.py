"""The documentation that restates code is generated from it, and the committed text is current.

docs/rules.md's names section comes from the vocabulary (auditor/engine/names.py), the README's
rule table from the shipped rules; `python -m auditor.engine.docgen --write` regenerates both.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.config import load_config
from auditor.engine.docgen import (
    README,
    REPO,
    RULES_DOC,
    MarkersMissing,
    replace_section,
    rule_table_markdown,
    stale,
)
from auditor.engine.expr import Missing
from auditor.engine.load import load_rules
from auditor.engine.names import HOST_NAMES, SUBJECT_KINDS, global_table, is_known
from auditor.facts.collect import collect_facts
from auditor.hostfs import HostRoot

BUSY = REPO / "tests" / "fixtures" / "roots" / "busy-server"


def test_committed_docs_match_the_generated_text() -> None:
    assert stale() == [], "run: python -m auditor.engine.docgen --write"


def test_a_stale_or_unmarked_document_is_caught(tmp_path: Path) -> None:
    for rel in (RULES_DOC, README):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    assert stale(tmp_path) == []
    readme = tmp_path / README
    readme.write_text(readme.read_text().replace("| EPH-003 |", "| EPH-099 |"))
    assert stale(tmp_path) == [README]
    check = subprocess.run(
        [sys.executable, "-m", "auditor.engine.docgen", "--check", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 1 and "README.md is stale" in check.stdout
    with pytest.raises(MarkersMissing):
        replace_section("no markers here\n", "names", "x")


def test_the_readme_table_lists_every_shipped_rule() -> None:
    rules = load_rules()
    table = rule_table_markdown(rules)
    assert [line.split(" | ")[0][2:] for line in table.splitlines()[2:]] == [r.id for r in rules]
    assert table in (REPO / README).read_text()


LIVE_ONLY = frozenset(
    f"listener.{n}"
    for n in ("queue_full", "pid", "command", "fds", "fd_limit", "fds_free", "fd_ratio")
)
"""Listener fields only sock_diag and the live host's processes give (tested with them in
tests/test_listener_facts.py)."""


def test_every_declared_name_is_built_from_a_real_tree() -> None:
    """The declaration and the table that rules read agree: each literal host-wide name is in
    the table of a full fixture, and each row field of each kind computes on its rows."""
    host = HostRoot(proc=BUSY / "proc", root=BUSY)
    facts = collect_facts(host)
    config = load_config(host, None)
    table = global_table(facts, config)
    for name in HOST_NAMES:
        if name.pattern is None:
            assert name.shown in table, name.shown
            assert is_known(name.shown, None)
        else:
            assert any(name.pattern.match(key) for key in table) or name.shown.startswith(
                ("params.", "rates.")
            ), name.shown
    for kind in SUBJECT_KINDS.values():
        rows = list(kind.rows(facts, config))
        for row in rows[:3]:
            for full in kind.names:
                value = row[full]
                if full in LIVE_ONLY:  # a /proc tree has no backlog or process: the reason
                    assert isinstance(value, Missing), full
                    assert "sock_diag" in value.reason or "live host" in value.reason, value
                    continue
                assert not isinstance(value, Missing) or full == "setting.runtime", full
    assert not is_known("dest.nonsense", SUBJECT_KINDS["destinations"])
    assert not is_known("sysctl.net.ipv4.no_such_key", None)
