"""The `portaudit` command line (typer). Thin: parse flags, call one function, map errors.

Every command's work lives elsewhere; this module only turns flags into calls and the error
hierarchy in `auditor.errors` into one line on stderr and an exit code. Heavy modules are
imported inside the commands so that `portaudit audit` on an idle host starts fast.
"""

from __future__ import annotations

import enum
import os
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from auditor.errors import AuditorError, InputError, UsageError

if TYPE_CHECKING:
    from auditor.config import Config
    from auditor.engine.load import Rule
    from auditor.engine.report import Finding
    from auditor.facts.model import Facts
    from auditor.hostfs import HostRoot

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Audit the kernel settings and socket state behind failed client connections.",
)
rules_app = typer.Typer(
    no_args_is_help=True, help="The rule catalog and each rule's documentation."
)
app.add_typer(rules_app, name="rules")

_state = {"debug": bool(os.environ.get("PORTAUDIT_DEBUG"))}


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    PROMETHEUS = "prometheus"


class FailOn(enum.StrEnum):
    INFO = "info"
    WARN = "warn"
    CRIT = "crit"
    NEVER = "never"


ProcOpt = Annotated[Path, typer.Option("--proc", help="Where /proc is read from.")]
RootOpt = Annotated[
    Path, typer.Option("--root", help="Filesystem root for config files (/etc/...).")
]
OutputOpt = Annotated[
    Path | None, typer.Option("-o", "--output", help="Write here (atomically) instead of stdout.")
]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    if debug:
        _state["debug"] = True


def _host(proc: Path, root: Path) -> HostRoot:
    from auditor.hostfs import HostRoot

    if not proc.is_dir():
        raise UsageError(f"--proc {proc}: not a directory")
    if not root.is_dir():
        raise UsageError(f"--root {root}: not a directory")
    return HostRoot(proc=proc, root=root)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from auditor.atomicfile import write_atomic

    try:
        if output.exists() and not output.is_file() and not output.is_dir():
            # /dev/stdout, /dev/null, a FIFO: write into it as a shell redirection would
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            write_atomic(output, text.encode())
    except OSError as exc:
        raise InputError(output, None, f"cannot write: {exc.strerror or exc}") from None


def _split_ids(only: str | None) -> list[str]:
    return [p.strip() for p in (only or "").split(",") if p.strip()]


def _check_ids(rules: list[Rule], ids: Iterable[str]) -> None:
    known = {r.id for r in rules}
    for rule_id in ids:
        if rule_id not in known:
            raise UsageError(f"--only: unknown rule id {rule_id!r}")


def _select(rules: list[Rule], only: str | None) -> list[Rule]:
    wanted = _split_ids(only)
    if not wanted:
        return rules
    _check_ids(rules, wanted)
    return [r for r in rules if r.id in wanted]


def _exit_on(findings: Iterable[Finding], fail_on: FailOn) -> None:
    """Exit 1 when a finding reaches `--fail-on` (severities are ordered)."""
    from auditor.engine.report import Severity

    if fail_on is FailOn.NEVER:
        return
    threshold = Severity.parse(fail_on.value)
    if any(f.severity >= threshold for f in findings):
        raise typer.Exit(1)


def _load_facts(path: Path) -> Facts:
    import json

    from auditor.facts.model import SnapshotError, facts_from_json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, None, f"cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, exc.lineno, f"not JSON: {exc.msg}") from None
    try:
        return facts_from_json(data)
    except SnapshotError as exc:
        raise InputError(path, None, f"not a portaudit facts snapshot: {exc}") from None


@app.command()
def audit(
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.TABLE,
    output: OutputOpt = None,
    rules: Annotated[
        list[Path] | None, typer.Option("--rules", help="Extra rule files or dirs.")
    ] = None,
    only: Annotated[
        str | None, typer.Option("--only", help="Only these rule ids (comma-separated).")
    ] = None,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", help="Exit 1 from this severity.")
    ] = FailOn.WARN,
    facts_file: Annotated[
        Path | None, typer.Option("--facts", help="Audit a saved snapshot.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Config file (default /etc/portaudit/config.yaml)."),
    ] = None,
    all_netns: Annotated[
        bool, typer.Option("--all-netns", help="Audit every network namespace.")
    ] = False,
    root: RootOpt = Path("/"),
    proc: ProcOpt = Path("/proc"),
    log_findings: Annotated[
        bool,
        typer.Option(
            "--log-findings",
            help="Also print one line per finding on stderr, prefixed <3> crit, <4> warn, "
            "<6> info (journal priorities, for the systemd unit).",
        ),
    ] = False,
    state: Annotated[
        bool | None,
        typer.Option(
            "--state/--no-state",
            help="Compare counters with the last run (/var/lib/portaudit/counters.json under "
            "--root) for per-minute rates, and save this run's. Default: on for the live /proc.",
        ),
    ] = None,
) -> None:
    """Check this host (or a saved snapshot) against the rules and report the findings."""
    from auditor.config import load_config
    from auditor.engine.evaluate import evaluate
    from auditor.engine.load import load_rules

    host = _host(proc, root)
    selected = _select(load_rules(rules or []), only)
    cfg = load_config(host, config)
    if all_netns:
        if facts_file is not None:
            raise UsageError("--all-netns reads the running kernel; it cannot audit --facts")
        _audit_all_netns(host, selected, cfg, format, output, fail_on)
        return
    if facts_file is not None:
        facts = _load_facts(facts_file)
    else:
        from auditor.facts.collect import collect_facts

        facts = collect_facts(host)
        if host.is_live if state is None else state:
            from auditor.facts.rates import with_rates

            facts, warning = with_rates(facts, host, save=True)
            if warning:
                sys.stderr.write(f"{'<4>' if log_findings else ''}portaudit: warning: {warning}\n")
    report = evaluate(selected, facts, cfg)
    if format is Format.JSON:
        from auditor.render.json import render_json

        text = render_json(report)
    elif format is Format.PROMETHEUS:
        from auditor.render.prometheus import render_prometheus

        text = render_prometheus([report])
    else:
        from auditor.render.table import render_table

        text = render_table(report)
    _emit(text, output)
    if log_findings:
        from auditor.render.journal import journal_lines

        sys.stderr.write("".join(line + "\n" for line in journal_lines([report])))
        sys.stderr.flush()
    _exit_on(report.findings, fail_on)


def _audit_all_netns(
    host: HostRoot,
    selected: list[Rule],
    cfg: Config,
    format: Format,
    output: Path | None,
    fail_on: FailOn,
) -> None:
    """`audit --all-netns`: one report per network namespace (auditor/allnetns.py)."""
    from auditor import allnetns

    result = allnetns.audit_all_netns(host, selected, cfg)
    if format is Format.JSON:
        text = allnetns.render_json_all(result)
    elif format is Format.PROMETHEUS:
        text = allnetns.render_prometheus_all(result)
    else:
        text = allnetns.render_table_all(result)
    _emit(text, output)
    _exit_on(result.merged().findings, fail_on)


@app.command()
def facts(
    output: OutputOpt = None,
    all_netns: Annotated[
        bool, typer.Option("--all-netns", help="Every network namespace.")
    ] = False,
    root: RootOpt = Path("/"),
    proc: ProcOpt = Path("/proc"),
) -> None:
    """Print the collected facts snapshot as JSON (input for `audit --facts`)."""
    import json

    from auditor.facts.collect import collect_facts
    from auditor.facts.model import to_jsonable

    if all_netns:
        from auditor.allnetns import facts_all_netns_json

        _emit(facts_all_netns_json(_host(proc, root)), output)
        return
    snapshot = collect_facts(_host(proc, root))
    _emit(json.dumps(to_jsonable(snapshot), indent=2) + "\n", output)


@rules_app.command("list")
def rules_list(
    rules: Annotated[
        list[Path] | None, typer.Option("--rules", help="Extra rule files or dirs.")
    ] = None,
) -> None:
    """List every rule: id, default severities, name, title."""
    from tabulate import tabulate

    from auditor.engine.load import load_rules

    rows = [
        [r.id, "/".join(str(s) for s, _ in r.severity), r.name, r.title]
        for r in load_rules(rules or [])
    ]
    typer.echo(tabulate(rows, headers=["ID", "SEVERITY", "NAME", "TITLE"], tablefmt="simple"))


@rules_app.command("show")
def rules_show(
    rule_id: Annotated[str, typer.Argument(metavar="ID", help="A rule id such as EPH-001.")],
    rules: Annotated[
        list[Path] | None, typer.Option("--rules", help="Extra rule files or dirs.")
    ] = None,
) -> None:
    """Show one rule's full documentation."""
    from auditor.engine.load import load_rules
    from auditor.render.ruledoc import render_rule_doc

    for r in load_rules(rules or []):
        if r.id == rule_id.upper():
            typer.echo(render_rule_doc(r), nl=False)
            return
    raise UsageError(f"unknown rule id {rule_id!r} (see: portaudit rules list)")


# --- fix and rollback (issue 4) ---


def _confirm(yes: bool, question: str) -> bool:
    """True to go ahead: --yes, or an operator at a terminal who says yes."""
    from auditor.errors import RefusedError

    if yes:
        return True
    if not sys.stdin.isatty():
        raise RefusedError("no terminal to confirm on: re-run with --yes (or --dry-run)")
    return typer.confirm(question, default=False)


@app.command()
def fix(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the diff; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
    only: Annotated[
        str | None,
        typer.Option("--only", help="Only these rule ids; needed for `unsafe` fixes."),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            help="Persist here (/etc/sysctl.d/NAME.conf or /etc/sysctl.conf, under --root)"
            " instead of /etc/sysctl.d/99-zz-portaudit.conf.",
        ),
    ] = None,
    no_runtime: Annotated[
        bool, typer.Option("--no-runtime", help="Only persist; leave runtime values alone.")
    ] = False,
    root: RootOpt = Path("/"),
    proc: ProcOpt = Path("/proc"),
) -> None:
    """Apply the failed rules' sysctl fixes at runtime and for the next boot (diff, confirm)."""
    from auditor.config import load_config
    from auditor.engine.evaluate import evaluate
    from auditor.engine.load import load_rules
    from auditor.facts.collect import collect_facts
    from auditor.fix.apply import apply_plan
    from auditor.fix.plan import parse_only, render_plan
    from auditor.fix.prepare import build_plan

    host = _host(proc, root)
    wanted = parse_only(only)
    rules = load_rules()
    if wanted is not None:
        _check_ids(rules, sorted(wanted))
    report = evaluate(rules, collect_facts(host), load_config(host, None))
    plan = build_plan(host, report.findings, only=wanted, file=file, runtime=not no_runtime)
    typer.echo(render_plan(plan), nl=False)
    if plan.empty or dry_run:
        return
    if not _confirm(yes, "Apply these changes?"):
        typer.echo("nothing changed")
        return
    cs = apply_plan(host, plan)
    typer.echo(f"applied (journal {cs.id}; undo with: portaudit rollback)")


@app.command()
def rollback(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Roll back without asking.")] = False,
    root: RootOpt = Path("/"),
    proc: ProcOpt = Path("/proc"),
) -> None:
    """Undo the last change set `fix` applied (files and runtime values), from its journal."""
    from auditor.fix.apply import apply_rollback, plan_rollback, render_rollback

    host = _host(proc, root)
    rb = plan_rollback(host)
    if rb is None:
        typer.echo("nothing to roll back")
        return
    typer.echo(render_rollback(rb), nl=False)
    if not _confirm(yes, "Roll back these changes?"):
        typer.echo("nothing changed")
        return
    apply_rollback(host, rb)
    typer.echo(f"rolled back fix {rb.changeset.id}")


def _fail(exc: BaseException, code: int) -> NoReturn:
    if _state["debug"]:
        traceback.print_exc()
    sys.stderr.write(f"portaudit: {exc}\n")
    sys.exit(code)


def main() -> None:
    """Console entry point: one line on stderr for every error, a traceback only with --debug."""
    if "--debug" in sys.argv[1:]:
        _state["debug"] = True
    try:
        app()
    except AuditorError as exc:
        _fail(exc, exc.exit_code)
    except KeyboardInterrupt:
        _fail(KeyboardInterrupt("interrupted"), 130)
    except Exception as exc:
        _fail(RuntimeError(f"internal error: {type(exc).__name__}: {exc} (run with --debug)"), 1)


# --- diagnose (issue 5) ---


class DiagnoseFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


class DiagnoseProtocol(enum.StrEnum):
    TCP = "tcp"
    HTTP = "http"
    WS = "ws"
    TLS = "tls"


@app.command()
def diagnose(
    target: Annotated[
        str,
        typer.Argument(
            metavar="HOST:PORT",
            help="HOST:PORT, [IPv6]:PORT, or a ws://, wss://, http://, https:// URL.",
        ),
    ],
    protocol: Annotated[
        DiagnoseProtocol | None,
        typer.Option("--protocol", help="Protocol to speak (default: from the URL, else tcp)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for each connect and reply.")
    ] = 3.0,
    expect_ip: Annotated[
        str | None, typer.Option("--expect-ip", help="The address the name should resolve to.")
    ] = None,
    format: Annotated[
        DiagnoseFormat, typer.Option("--format", "-f", help="Output format.")
    ] = DiagnoseFormat.TABLE,
    local: Annotated[
        bool, typer.Option("--local", help="The target is this host: check listeners, firewall.")
    ] = False,
    insecure: Annotated[
        bool, typer.Option("--insecure", "-k", help="Do not verify TLS certificates (curl -k).")
    ] = False,
    attempts: Annotated[
        int, typer.Option("--attempts", help="Connects to the first address (differing: flapping).")
    ] = 3,
) -> None:
    """Try a connection as the client would; name the failure, its likely causes, the fix.

    Exits 1 when the connection fails or any cause is likely (even when TCP connected)."""
    from auditor.diagnose import Options
    from auditor.diagnose import diagnose as run_diagnosis
    from auditor.diagnose.model import Protocol
    from auditor.diagnose.render import render_json, render_table

    result = run_diagnosis(
        Options(
            target=target,
            protocol=Protocol(protocol.value) if protocol is not None else None,
            timeout=timeout,
            expect_ip=expect_ip,
            local=local,
            insecure=insecure,
            attempts=attempts,
        )
    )
    text = render_json(result) if format is DiagnoseFormat.JSON else render_table(result)
    _emit(text, None)
    raise typer.Exit(result.exit_code)


# --- systemd (issue 6) ---
systemd_app = typer.Typer(
    no_args_is_help=True,
    help="Install or remove the hardened timer that audits this host every 5 minutes.",
)
app.add_typer(systemd_app, name="systemd")


def _units_call(root: Path, action: str, enable: bool = True) -> None:
    from auditor import units

    if not root.is_dir():
        raise UsageError(f"--root {root}: not a directory")
    try:
        done = units.install(root, enable=enable) if action == "install" else units.uninstall(root)
    except OSError as exc:
        raise InputError(exc.filename or root, None, exc.strerror or str(exc)) from None
    for line in done:
        typer.echo(line)


@systemd_app.command("install")
def systemd_install(
    root: RootOpt = Path("/"),
    no_enable: Annotated[
        bool, typer.Option("--no-enable", help="Write the units, do not enable the timer.")
    ] = False,
) -> None:
    """Write portaudit.service and portaudit.timer for this installation and enable the timer."""
    _units_call(root, "install", enable=not no_enable)


@systemd_app.command("uninstall")
def systemd_uninstall(root: RootOpt = Path("/")) -> None:
    """Stop and disable the timer, remove both units and portaudit's textfile and state."""
    _units_call(root, "uninstall")
