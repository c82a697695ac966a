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
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from auditor.auditcmd import AuditArgs, FailOn, run_audit_command
from auditor.auditcmd import emit as _emit
from auditor.auditcmd import host_root as _host
from auditor.errors import AuditorError, InputError, UsageError, printable
from auditor.exitcodes import ExitCode
from auditor.render import Format

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


def _path(value: str | Path) -> Path:
    """An option's path; an empty one is a usage error, not the current directory."""
    from auditor.userinput import path_text

    if isinstance(value, Path):
        return value
    try:
        return Path(path_text(value))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _int(value: str | int) -> int:
    """An option's whole number, in ASCII digits only (int() would take `١٢` and `1_000`)."""
    from auditor.userinput import whole_number

    if isinstance(value, int):
        return value
    try:
        return whole_number(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _float(value: str | float) -> float:
    """An option's number of seconds, in ASCII only."""
    from auditor.userinput import decimal_number

    if isinstance(value, (int, float)):
        return float(value)
    try:
        return decimal_number(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


_PATH: dict[str, Any] = {"parser": _path, "metavar": "<path>"}


ProcOpt = Annotated[Path, typer.Option("--proc", help="Where /proc is read from.", **_PATH)]
RootOpt = Annotated[
    Path, typer.Option("--root", help="Filesystem root for config files (/etc/...).", **_PATH)
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("-o", "--output", help="Write here (atomically) instead of stdout.", **_PATH),
]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"portaudit {version('portaudit')}")
        except PackageNotFoundError:
            typer.echo("portaudit (not installed as a package)")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    if debug:
        _state["debug"] = True


# --- audit and facts ---


@app.command()
def audit(
    format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.TABLE,
    output: OutputOpt = None,
    rules: Annotated[
        list[Path] | None, typer.Option("--rules", help="Extra rule files or dirs.", **_PATH)
    ] = None,
    only: Annotated[
        str | None, typer.Option("--only", help="Only these rule ids (comma-separated).")
    ] = None,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", help="Exit 1 from this severity.")
    ] = FailOn.WARN,
    facts_file: Annotated[
        Path | None, typer.Option("--facts", help="Audit a saved snapshot.", **_PATH)
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Config file (default /etc/portaudit/config.yaml).", **_PATH),
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
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Table: show each finding's evidence, owners and advice."
        ),
    ] = False,
    state: Annotated[
        bool | None,
        typer.Option(
            "--state/--no-state",
            help="Compare counters with the last run in this network namespace "
            "(/var/lib/portaudit/counters/ under --root) for per-minute rates, and save this "
            "run's. Default: on for the live /proc.",
        ),
    ] = None,
) -> None:
    """Check this host (or a saved snapshot) against the rules and report the findings."""
    args = AuditArgs(
        format=format,
        output=output,
        rules=rules,
        only=only,
        fail_on=fail_on,
        facts_file=facts_file,
        config=config,
        all_netns=all_netns,
        root=root,
        proc=proc,
        log_findings=log_findings,
        verbose=verbose,
        state=state,
    )
    raise typer.Exit(run_audit_command(args))


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

    host = _host(proc, root)
    owners_above = None
    if host.is_live:  # owners are looked up on the live host only, where EPH-001 would flag
        from auditor.audit import owners_threshold
        from auditor.config import load_config
        from auditor.engine.load import load_rules

        owners_above = owners_threshold(load_rules(), load_config(host, None))
    if all_netns:
        from auditor.allnetns import collect_namespaces, facts_all_netns_json

        _emit(facts_all_netns_json(collect_namespaces(host, owners_above)), output)
        return
    snapshot = collect_facts(host, owners_above)
    _emit(json.dumps(to_jsonable(snapshot), indent=2) + "\n", output)


class BootFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


@app.command()
def boot(
    keys: Annotated[
        list[str] | None, typer.Argument(metavar="[KEY]...", help="Only these sysctl keys.")
    ] = None,
    format: Annotated[
        BootFormat, typer.Option("--format", "-f", help="Output format.")
    ] = BootFormat.TABLE,
    output: OutputOpt = None,
    root: RootOpt = Path("/"),
    proc: ProcOpt = Path("/proc"),
) -> None:
    """The value each sysctl gets at the next boot, the file:line that decides it, and where
    the running value or procps `sysctl --system` differ."""
    from auditor.sysctl.report import boot_report, render_boot_json, render_boot_table

    report = boot_report(_host(proc, root), keys or [])
    text = render_boot_json(report) if format is BootFormat.JSON else render_boot_table(report)
    _emit(text, output)


# --- rules ---


@rules_app.command("list")
def rules_list(
    rules: Annotated[
        list[Path] | None, typer.Option("--rules", help="Extra rule files or dirs.", **_PATH)
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
        list[Path] | None, typer.Option("--rules", help="Extra rule files or dirs.", **_PATH)
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


# --- fix and rollback ---


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
        bool, typer.Option("--dry-run", help="Show the plan and diff; change nothing.")
    ] = False,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            help="Apply without asking (unsafe fixes need --only or --include-unsafe).",
        ),
    ] = False,
    only: Annotated[
        str | None,
        typer.Option("--only", help="Only these rule ids (their unsafe fixes included)."),
    ] = None,
    include_unsafe: Annotated[
        bool, typer.Option("--include-unsafe", help="Apply unsafe fixes too, without asking.")
    ] = False,
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
    rules: Annotated[
        list[Path] | None, typer.Option("--rules", help="Extra rule files or dirs.", **_PATH)
    ] = None,
    for_host: Annotated[
        bool,
        typer.Option(
            "--for-host",
            help="Persist to the root's sysctl.d even from a network namespace that is not"
            " the host's (the root is this namespace's host image).",
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Config file (default /etc/portaudit/config.yaml).", **_PATH),
    ] = None,
    root: RootOpt = Path("/"),
    proc: ProcOpt = Path("/proc"),
) -> None:
    """Apply the failed rules' sysctl fixes at runtime and for the next boot (diff, confirm)."""
    from auditor.fix.command import FixOptions, run_fix, terminal_ask

    opts = FixOptions(
        dry_run=dry_run,
        yes=yes,
        only=only,
        include_unsafe=include_unsafe,
        file=file,
        no_runtime=no_runtime,
        for_host=for_host,
        config=config,
        rules=tuple(rules or ()),
    )
    code = run_fix(_host(proc, root), opts, typer.echo, terminal_ask())
    if code:
        raise typer.Exit(code)


@app.command()
def rollback(
    change_set: Annotated[
        str | None,
        typer.Argument(metavar="[ID]", help="The change set to undo (default: the latest)."),
    ] = None,
    list_sets: Annotated[
        bool, typer.Option("--list", help="List the kept change sets, newest last.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Roll back without asking.")] = False,
    root: RootOpt = Path("/"),
    proc: ProcOpt = Path("/proc"),
) -> None:
    """Undo a change set `fix` applied (files and runtime values), from its journal."""
    from auditor.fix.apply import apply_rollback, plan_rollback, render_rollback
    from auditor.fix.history import render_history

    host = _host(proc, root)
    if list_sets:
        typer.echo(render_history(host), nl=False)
        return
    rb = plan_rollback(host, change_set)
    if rb is None:
        typer.echo("nothing to roll back")
        return
    typer.echo(render_rollback(rb, host.root), nl=False)
    if not _confirm(yes, "Roll back these changes?"):
        typer.echo("nothing changed")
        return
    apply_rollback(host, rb)
    typer.echo(f"rolled back change set {rb.changeset.id}")


# --- diagnose ---


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
        float,
        typer.Option(
            "--timeout",
            help="Seconds to wait for each connect and reply.",
            parser=_float,
            metavar="<float>",
        ),
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
        int,
        typer.Option(
            "--attempts",
            help="Tries per address (differing: flapping).",
            parser=_int,
            metavar="<int>",
        ),
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


# --- systemd ---
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


# --- watch ---


@app.command()
def watch(
    interval: Annotated[
        float,
        typer.Option(
            "--interval", help="Seconds between refreshes.", parser=_float, metavar="<float>"
        ),
    ] = 2.0,
    top: Annotated[
        int, typer.Option("--top", help="Destinations shown.", parser=_int, metavar="<int>")
    ] = 10,
    format: Annotated[
        DiagnoseFormat, typer.Option("--format", "-f", help="table: live view; json: lines.")
    ] = DiagnoseFormat.TABLE,
    once: Annotated[bool, typer.Option("--once", help="One JSON line, then exit.")] = False,
    count: Annotated[
        int | None,
        typer.Option("--count", help="Stop after N JSON lines.", parser=_int, metavar="<int>"),
    ] = None,
) -> None:
    """Live view of port use per destination and host-wide (keys: q s f c + -)."""
    from auditor.watch.run import watch as run_watch

    raise typer.Exit(
        run_watch(
            _host(Path("/proc"), Path("/")),
            interval=interval,
            top=top,
            fmt=format.value,
            once=once,
            count=count,
        )
    )


# --- entry point ---


def _fail(exc: BaseException, code: int) -> NoReturn:
    if _state["debug"]:
        traceback.print_exc()
    # Under --log-findings stderr is the journal: an error is logged at priority err.
    prefix = "<3>" if "--log-findings" in sys.argv[1:] else ""
    sys.stderr.write(f"{prefix}portaudit: {printable(str(exc))}\n")
    sys.exit(code)


def _usage_error_class() -> type[Exception]:
    """click's UsageError, wherever this typer keeps click (vendored since 0.24, a dependency
    before): the base of `typer.BadParameter` either way."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def usage_line(exc: Exception) -> str:
    """A click usage error as one line: what is wrong, naming the option and the value, and
    the command whose --help lists the right ones. click's own display is a boxed, multi-line
    panel (usage, hint, message), which a log or a script reading stderr cannot take."""
    words: list[str] = []
    ctx = getattr(exc, "ctx", None)
    while ctx is not None:
        words.append(ctx.info_name or "")
        ctx = ctx.parent
    path = " ".join(["portaudit", *reversed(words[:-1])])
    fmt = getattr(exc, "format_message", None)
    message = fmt() if callable(fmt) else str(exc)
    message = " ".join(message.split()).rstrip(".")
    return f"error: {message} (see: {path} --help)"


def main() -> None:
    """Console entry point: one line on stderr for every error, a traceback only with --debug."""
    if "--debug" in sys.argv[1:]:
        _state["debug"] = True
    usage_error = _usage_error_class()
    try:
        code = app(standalone_mode=False)
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is the answer: shown already
            shown = exc.format_message() if hasattr(exc, "format_message") else ""
            if shown.strip():
                sys.stderr.write(shown.rstrip("\n") + "\n")
            sys.exit(ExitCode.USAGE)
        _fail(RuntimeError(usage_line(exc)), ExitCode.USAGE)
    except typer.Abort:
        _fail(RuntimeError("aborted"), 1)
    except AuditorError as exc:
        _fail(exc, exc.exit_code)
    except KeyboardInterrupt:
        _fail(KeyboardInterrupt("interrupted"), ExitCode.INTERRUPTED)
    except Exception as exc:
        _fail(
            RuntimeError(f"internal error: {type(exc).__name__}: {exc} (run with --debug)"),
            ExitCode.INTERNAL_ERROR,
        )
    sys.exit(code if isinstance(code, int) else 0)
