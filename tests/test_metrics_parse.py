"""`audit --format prometheus` as node_exporter's textfile collector and Prometheus see it:
parseable, no duplicate series, bounded cardinality, stable names, rates between runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import REPO, ROOTS, copy_root, root_args, run_cli
from tests.test_prometheus_rules import METRICS

FIXTURES = sorted(p.name for p in ROOTS.iterdir() if (p / "proc").is_dir())
promtool = shutil.which("promtool")

Series = tuple[str, tuple[tuple[str, str], ...]]


def samples(text: str) -> dict[Series, float]:
    """Every sample by (name, labels); fails on a duplicate series."""
    seen: Counter[Series] = Counter()
    out: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            seen[key] += 1
            out[key] = s.value
    dupes = [k for k, n in seen.items() if n > 1]
    assert not dupes, f"duplicate series: {dupes[:5]}"
    return out


def audit_prom(root: Path, out: Path, *extra: str) -> str:
    got = run_cli(
        "audit",
        *root_args(root),
        "--format",
        "prometheus",
        "-o",
        str(out),
        "--fail-on",
        "never",
        *extra,
    )
    assert got.returncode == 0, got.stderr
    return out.read_text()


@pytest.mark.parametrize("name", FIXTURES)
def test_output_parses_without_duplicates(tmp_path: Path, name: str) -> None:
    out = tmp_path / "textfile" / "portaudit.prom"
    out.parent.mkdir()
    text = audit_prom(ROOTS / name, out, "--no-state")
    got = samples(text)
    names = {n for n, _ in got}
    assert names <= METRICS, names - METRICS
    for required in (
        "portaudit_findings",
        "portaudit_last_run_timestamp_seconds",
        "portaudit_last_run_success",
        "portaudit_time_wait_sockets",
        "portaudit_rules_skipped",
        "portaudit_findings_truncated",
    ):
        assert required in names, required
    severities = {dict(labels)["severity"] for n, labels in got if n == "portaudit_findings"}
    assert severities == {"info", "warn", "crit"}
    assert got[("portaudit_last_run_success", ())] == 1.0
    facts = json.loads((REPO / "tests" / "golden" / f"facts-{name}.json").read_text())
    assert got[("portaudit_time_wait_sockets", ())] == facts["sockstat"]["TCP"]["tw"]
    for (metric, labels), value in got.items():
        if metric == "portaudit_destination_port_use_ratio":
            assert 0.0 <= value <= 1.0, (labels, value)
            used = got[("portaudit_destination_ports_used", labels)]
            capacity = got[("portaudit_destination_ports_capacity", labels)]
            assert value == pytest.approx(used / capacity)
    # Replaced atomically: nothing but the file itself is left in the textfile directory.
    assert sorted(p.name for p in out.parent.iterdir()) == ["portaudit.prom"]


@pytest.mark.skipif(promtool is None, reason="promtool not installed (Debian package 'prometheus')")
@pytest.mark.parametrize("name", FIXTURES)
def test_promtool_check_metrics_accepts_it(tmp_path: Path, name: str) -> None:
    assert promtool is not None
    text = audit_prom(ROOTS / name, tmp_path / "portaudit.prom", "--no-state")
    got = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.strip() == "" and got.stderr.strip() == "", got.stdout + got.stderr


def crowded_snapshot(tmp_path: Path, destinations: int) -> Path:
    """The busy-client snapshot with many nearly full destinations (a worst case for labels)."""
    facts = json.loads((REPO / "tests" / "golden" / "facts-busy-client.json").read_text())
    usable = facts["ports"]["usable"]
    facts["sockets"]["destinations"] = [
        {
            "src": "10.0.0.2",
            "dst": f"10.1.{i // 250}.{i % 250 + 1}",
            "dport": 443,
            "by_state": {"TIME_WAIT": usable - 1 - i % 10},
        }
        for i in range(destinations)
    ]
    path = tmp_path / "crowded.json"
    path.write_text(json.dumps(facts))
    return path


def test_cardinality_is_bounded(tmp_path: Path) -> None:
    snapshot = crowded_snapshot(tmp_path, 300)
    got = run_cli("audit", "--facts", str(snapshot), "--format", "prometheus", "--fail-on", "never")
    assert got.returncode == 0, got.stderr
    series = samples(got.stdout)
    per_dest = [k for k in series if k[0] == "portaudit_destination_port_use_ratio"]
    assert len(per_dest) == 20
    findings = sum(v for (n, _), v in series.items() if n == "portaudit_findings")
    per_finding = [k for k in series if k[0] == "portaudit_finding"]
    assert len(per_finding) <= 50
    assert len(per_finding) + series[("portaudit_findings_truncated", ())] == findings
    rule_total = sum(v for (n, _), v in series.items() if n == "portaudit_rule_findings")
    assert rule_total == findings


# --- rates between runs, end to end --------------------------------------------------------


def set_tcp_counter(root: Path, field: str, value: int) -> None:
    snmp = root / "proc" / "net" / "snmp"
    lines = snmp.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Tcp:") and field in line.split():
            col = line.split().index(field)
            values = lines[i + 1].split()
            values[col] = str(value)
            lines[i + 1] = " ".join(values)
            break
    else:
        raise AssertionError(f"no Tcp {field} in {snmp}")
    snmp.write_text("\n".join(lines) + "\n")


def tcp_counter(root: Path, field: str) -> int:
    lines = (root / "proc" / "net" / "snmp").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Tcp:") and field in line.split():
            return int(lines[i + 1].split()[line.split().index(field)])
    raise AssertionError(field)


def backdate_state(root: Path, seconds: float) -> float:
    """Pretend the last run happened `seconds` earlier; returns its new collected_at."""
    (path,) = (root / "var" / "lib" / "portaudit" / "counters").glob("net-*.json")
    state = json.loads(path.read_text())
    state["collected_at"] -= seconds
    path.write_text(json.dumps(state))
    return float(state["collected_at"])


def con001(root: Path) -> list[dict[str, object]]:
    """CON-001's findings from a JSON audit that compares with (and replaces) the saved state."""
    got = run_cli("audit", *root_args(root), "--format", "json", "--state", "--fail-on", "never")
    assert got.returncode == 0, got.stderr
    return [f for f in json.loads(got.stdout)["findings"] if f["id"] == "CON-001"]


RATE_KEY = ("portaudit_counter_rate_per_minute", (("counter", "AttemptFails"), ("group", "Tcp")))


def test_rates_between_two_runs_reach_metrics_and_rules(tmp_path: Path) -> None:
    root = copy_root("busy-client", tmp_path)
    out = tmp_path / "portaudit.prom"
    before = tcp_counter(root, "AttemptFails")
    first = samples(audit_prom(root, out, "--state"))
    assert not [k for k in first if k[0] == "portaudit_counter_rate_per_minute"]

    then = backdate_state(root, 300)
    set_tcp_counter(root, "AttemptFails", before + 1000)
    series = samples(audit_prom(root, out, "--state"))
    now = series[("portaudit_last_run_timestamp_seconds", ())]
    assert series[RATE_KEY] == pytest.approx(1000 * 60 / (now - then))

    # No new failures: the 1000 since boot would be reported without rates; with them, quiet.
    backdate_state(root, 300)
    assert con001(root) == []

    # 1000 more in "5 minutes" is about 200 a minute: critical, and it says per minute.
    backdate_state(root, 300)
    set_tcp_counter(root, "AttemptFails", before + 2000)
    (finding,) = con001(root)
    assert finding["severity"] == "crit"
    assert "per minute since the last run" in str(finding["title"])
    evidence = finding["evidence"]
    assert isinstance(evidence, dict)
    assert evidence["attempt_fails_total"] == before + 2000
    assert evidence["attempt_fails_per_minute"] == pytest.approx(200, rel=0.05)


def test_reboot_between_runs_is_no_false_alarm(tmp_path: Path) -> None:
    root = copy_root("busy-client", tmp_path)
    out = tmp_path / "portaudit.prom"
    set_tcp_counter(root, "AttemptFails", 50_000)
    audit_prom(root, out, "--state")
    backdate_state(root, 300)
    set_tcp_counter(root, "AttemptFails", 12)  # after a reboot the counter starts again
    # No rate, no warn/crit: the rule falls back to the total since boot, says why, as info.
    (finding,) = con001(root)
    assert finding["severity"] == "info"
    assert re.search(
        r"^12 TCP connection attempts failed \(refused or timed out\) since boot; "
        r"no rate: Tcp AttemptFails went down",
        str(finding["title"]),
    )
    # The run after the reset compares with it and has rates again.
    backdate_state(root, 300)
    series = samples(audit_prom(root, out, "--state"))
    assert series[RATE_KEY] == 0.0


def test_log_findings_lines_carry_journal_priorities(tmp_path: Path) -> None:
    root = copy_root("busy-client", tmp_path)
    set_tcp_counter(root, "AttemptFails", 77)
    got = run_cli(
        "audit",
        *root_args(root),
        "--format",
        "prometheus",
        "-o",
        str(tmp_path / "p.prom"),
        "--log-findings",
        "--no-state",
        "--fail-on",
        "never",
    )
    assert got.returncode == 0, got.stderr
    lines = got.stderr.splitlines()
    assert any(
        line.startswith(
            "<6>CON-001 info: 77 TCP connection attempts failed (refused or timed out) since boot"
        )
        for line in lines
    ), lines
    assert re.match(
        r"^<6>portaudit: \d+ crit, \d+ warn, [1-9]\d* info; \d+ rule\(s\) skipped$", lines[-1]
    )
    findings = [line for line in lines[:-1] if not line.startswith("<6>portaudit:")]
    assert len(findings) == len(lines) - 1
    for line in lines:
        assert re.match(r"^<[346]>\S", line), line
    assert got.stdout == ""


def test_success_is_zero_when_the_socket_table_is_unreadable(tmp_path: Path) -> None:
    root = copy_root("busy-client", tmp_path)
    (root / "proc/net/tcp").unlink()
    (root / "proc/net/tcp6").unlink()
    out = run_cli("audit", *root_args(root), "--format", "prometheus", "--fail-on", "never").stdout
    assert "\nportaudit_last_run_success 0\n" in out
    healthy = run_cli(
        "audit", *root_args(ROOTS / "busy-client"), "--format", "prometheus", "--fail-on", "never"
    )
    assert "\nportaudit_last_run_success 1\n" in healthy.stdout


def test_rate_series_are_bounded_to_the_counters_that_matter() -> None:
    import dataclasses

    from auditor.config import Config
    from auditor.engine.evaluate import evaluate
    from auditor.engine.load import load_rules
    from auditor.engine.report import AuditReport
    from auditor.facts.collect import collect_facts
    from auditor.hostfs import HostRoot
    from auditor.render.prometheus import RATE_SERIES, render_prometheus

    tree = ROOTS / "busy-server"
    facts = collect_facts(HostRoot(proc=tree / "proc", root=tree))
    assert isinstance(facts.counters, dict)
    every_rate = {g: {c: 1.0 for c in row} for g, row in facts.counters.items()}
    facts = dataclasses.replace(facts, rates=every_rate)
    text = render_prometheus(AuditReport.single(evaluate(load_rules(), facts, Config())))
    series = [ln for ln in text.splitlines() if ln.startswith("portaudit_counter_rate_per_minute{")]
    assert len(series) == len(RATE_SERIES) < sum(len(r) for r in every_rate.values())
