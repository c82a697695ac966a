"""docs/schema/*.json is the published interface: the facts schema is the dataclasses', and
every JSON output validates (goldens here; every `run_cli` JSON output in tests/helpers.py)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOTS, json_schema_of, root_args, run_cli
from tests.jsonschema_lite import SCHEMA_DIR, dump, errors, facts_schema

GOLDEN = Path(__file__).parent / "golden"
live_netns = pytest.mark.skipif(
    not Path("/proc/self/ns/net").exists(), reason="this kernel has no network namespaces"
)


def test_facts_schema_is_generated_from_the_model() -> None:
    committed = (SCHEMA_DIR / "facts.json").read_text()
    assert committed == dump(facts_schema()), (
        "docs/schema/facts.json differs from auditor/facts/model.py: regenerate it with "
        "python -c 'from tests.jsonschema_lite import *; "
        'open(SCHEMA_DIR / "facts.json", "w").write(dump(facts_schema()))\''
    )


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.name)
def test_goldens_conform(path: Path) -> None:
    schema = "audit.json" if path.name.startswith("audit-") else "facts.json"
    assert errors(json.loads(path.read_text()), schema) == []


def test_validator_reports_what_is_wrong() -> None:
    good: dict[str, Any] = json.loads((GOLDEN / "audit-busy-client.json").read_text())
    bad = json.loads(json.dumps(good))
    bad["findings"][0]["severity"] = "high"
    bad["findings"][0]["extra"] = 1
    del bad["summary"]["warn"]
    bad["host"]["kernel"] = 6
    got = errors(bad, "audit.json")
    assert any("$.findings[0].severity: 'high' not in" in e for e in got), got
    assert "$.findings[0]: unexpected key 'extra'" in got
    assert "$.summary: missing 'warn'" in got
    assert any(e.startswith("$.host.kernel: expected string") for e in got), got
    facts = json.loads((GOLDEN / "facts-busy-client.json").read_text())
    facts["ports"] = {"unavailable": 3}
    assert errors(facts, "facts.json") == ["$.ports: matches none of anyOf"]


def test_schema_of_each_command_line() -> None:
    assert json_schema_of(["audit", "--format", "json"]) == "audit.json"
    assert json_schema_of(["audit", "-f", "table"]) is None
    assert json_schema_of(["facts", "--all-netns"]) == "facts-all-netns.json"
    assert json_schema_of(["diagnose", "x:1", "--format", "json"]) == "diagnose.json"


def test_fixture_facts_and_audits_conform() -> None:
    """run_cli validates; this makes sure it did for every fixture tree and both shapes."""
    for tree in sorted(p for p in ROOTS.iterdir() if (p / "proc").is_dir()):
        for args in (("facts",), ("audit", "--format", "json", "--fail-on", "never")):
            run = run_cli(*args, *root_args(tree))
            assert run.returncode == 0, run.stderr
            schema = json_schema_of(args)
            assert schema is not None
            assert errors(json.loads(run.stdout), schema) == []


@live_netns
def test_live_all_netns_outputs_conform(tmp_path: Path) -> None:
    facts = run_cli("facts", "--all-netns", "--root", str(tmp_path))
    assert facts.returncode == 0, facts.stderr
    assert errors(json.loads(facts.stdout), "facts-all-netns.json") == []
    audit = run_cli(
        "audit", "--all-netns", "--root", str(tmp_path), "--format", "json", "--fail-on", "never"
    )
    assert audit.returncode == 0, audit.stderr
    report = json.loads(audit.stdout)
    assert errors(report, "audit.json") == [] and "namespaces" in report


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_diagnose_output_conforms() -> None:
    run = run_cli("diagnose", f"127.0.0.1:{_closed_port()}", "--format", "json", "--timeout", "2")
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)
    assert doc["verdict"] == "refused"
    assert errors(doc, "diagnose.json") == []


DESIGN = Path(__file__).resolve().parent.parent / "docs" / "design.md"


def test_design_doc_example_conforms_and_readme_links_it() -> None:
    text = DESIGN.read_text()
    example = text.split("```json\n", 1)[1].split("```", 1)[0]
    doc = json.loads(example)
    doc["findings"][0]["fix"]["advice"] = "..."
    assert errors(doc, "audit.json") == []
    readme = (DESIGN.parent.parent / "README.md").read_text()
    assert "(docs/design.md)" in readme and "DESIGN.md" not in readme


def test_design_doc_names_every_command_flag_and_exit_code() -> None:
    import typer.main

    from auditor.cli import app
    from auditor.exitcodes import ExitCode

    text = DESIGN.read_text()

    def walk(cmd: Any, path: str) -> list[tuple[str, Any]]:
        subs = getattr(cmd, "commands", None)
        if subs:
            return [x for name, sub in subs.items() for x in walk(sub, f"{path} {name}")]
        return [(path, cmd)]

    commands = walk(typer.main.get_command(app), "portaudit")
    assert len(commands) >= 9
    for path, cmd in commands:
        assert path.split()[1] in text, path
        for param in cmd.params:
            for flag in [*param.opts, *param.secondary_opts]:
                if flag.startswith("--") and flag != "--help":
                    assert flag in text, (path, flag)
    for code in ExitCode:
        assert f"| {code.value} | {code.name} |" in text or code is ExitCode.INTERNAL_ERROR, code
