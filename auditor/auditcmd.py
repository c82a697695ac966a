"""`portaudit audit`'s work, and the argv reader that runs it without building the typer app.

The typer command in `auditor.cli` stays the one definition of `audit`'s interface (its help,
its errors, its flags); `run_audit_command` is the body both that command and the fast path
call. A plain `portaudit audit ...` (the systemd unit, a cron job, a monitoring scrape) pays for
importing typer and click and building the whole command tree, about as much as the audit of an
idle host itself, so `parse_audit_argv` reads the common shapes of `audit`'s argv directly and
answers None for anything else (an unknown flag, `--help`, a value typer would reject, a repeated
option): the caller then hands the argv to typer, which gives the usual answer or error. The
test suite checks that `AUDIT_FLAGS` names exactly the typer command's options and that every
flag gives the same output both ways.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from auditor.errors import AuditorError, InputError, UsageError, printable
from auditor.exitcodes import ExitCode
from auditor.render import Format

if TYPE_CHECKING:
    from auditor.engine.report import AuditReport
    from auditor.hostfs import HostRoot


class FailOn(enum.StrEnum):
    INFO = "info"
    WARN = "warn"
    CRIT = "crit"
    NEVER = "never"


def host_root(proc: Path, root: Path) -> HostRoot:
    from auditor.hostfs import HostRoot

    if not proc.is_dir():
        raise UsageError(f"--proc {proc}: not a directory")
    if not root.is_dir():
        raise UsageError(f"--root {root}: not a directory")
    return HostRoot(proc=proc, root=root)


def emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from auditor.safepath import write_output

    try:
        write_output(output, text.encode())
    except OSError as exc:
        raise InputError(output, None, f"cannot write: {exc.strerror or exc}") from None


def terminal_width(output: Path | None) -> int | None:
    """The terminal's width when the table goes to one (COLUMNS wins), else None."""
    if output is not None or not sys.stdout.isatty():
        return None
    import shutil  # here: it loads bz2, lzma and zlib, which a pipe or a file never needs

    return shutil.get_terminal_size().columns


def exit_code(audit: AuditReport, fail_on: FailOn) -> ExitCode:
    """FINDINGS when a finding reaches `--fail-on` (severities are ordered), else OK."""
    from auditor.engine.report import Severity

    if fail_on is FailOn.NEVER:
        return ExitCode.OK
    threshold = Severity.parse(fail_on.value)
    if any(f.severity >= threshold for f in audit.findings):
        return ExitCode.FINDINGS
    return ExitCode.OK


class AuditArgs:
    """`audit`'s options, with typer's defaults (a plain class: a dataclass would cost a
    millisecond of code generation on every start)."""

    __slots__ = (
        "all_netns",
        "config",
        "facts_file",
        "fail_on",
        "format",
        "log_findings",
        "only",
        "output",
        "proc",
        "root",
        "rules",
        "state",
        "verbose",
    )

    def __init__(
        self,
        format: Format = Format.TABLE,
        output: Path | None = None,
        rules: list[Path] | None = None,
        only: str | None = None,
        fail_on: FailOn = FailOn.WARN,
        facts_file: Path | None = None,
        config: Path | None = None,
        all_netns: bool = False,
        root: Path = Path("/"),
        proc: Path = Path("/proc"),
        log_findings: bool = False,
        verbose: bool = False,
        state: bool | None = None,
    ) -> None:
        self.format, self.output, self.rules, self.only = format, output, rules, only
        self.fail_on, self.facts_file, self.config = fail_on, facts_file, config
        self.all_netns, self.root, self.proc = all_netns, root, proc
        self.log_findings, self.verbose, self.state = log_findings, verbose, state


def run_audit_command(a: AuditArgs) -> ExitCode:
    """Load, select, collect, evaluate, render and emit; the exit code `--fail-on` asks for.

    The cyclic garbage collector is off while the modules and the rule catalog load: every
    object made then lives to the end, and the collector's passes over them were a twentieth
    of an idle audit. They are then frozen out of its way, and it runs as usual for the rest.
    """
    import gc

    gc.disable()
    try:
        from auditor.audit import run_audit
        from auditor.config import load_config
        from auditor.engine.load import load_rules
        from auditor.selection import select_rules

        host = host_root(a.proc, a.root)
        selected = select_rules(load_rules(a.rules or []), a.only)
        cfg = load_config(host, a.config)
    finally:
        gc.freeze()
        gc.enable()
    log_findings = a.log_findings

    def warn(text: str) -> None:
        sys.stderr.write(f"{'<4>' if log_findings else ''}portaudit: warning: {printable(text)}\n")

    report = run_audit(
        host,
        selected,
        cfg,
        facts_file=a.facts_file,
        all_netns=a.all_netns,
        state=a.state,
        warn=warn,
    )
    emit(a.format.renderer(terminal_width(a.output), a.verbose)(report), a.output)
    if log_findings:
        from auditor.render.journal import journal_lines

        sys.stderr.write("".join(line + "\n" for line in journal_lines(report)))
        sys.stderr.flush()
    return exit_code(report, a.fail_on)


# flag -> (AuditArgs field, kind); kind: "path", "paths" (repeatable), "str", "format",
# "fail_on", or a bool constant for a flag that takes no value.
AUDIT_FLAGS: dict[str, tuple[str, object]] = {
    "--format": ("format", "format"),
    "-f": ("format", "format"),
    "--output": ("output", "path"),
    "-o": ("output", "path"),
    "--rules": ("rules", "paths"),
    "--only": ("only", "str"),
    "--fail-on": ("fail_on", "fail_on"),
    "--facts": ("facts_file", "path"),
    "--config": ("config", "path"),
    "--all-netns": ("all_netns", True),
    "--root": ("root", "path"),
    "--proc": ("proc", "path"),
    "--log-findings": ("log_findings", True),
    "--verbose": ("verbose", True),
    "-v": ("verbose", True),
    "--state": ("state", True),
    "--no-state": ("state", False),
}


def parse_audit_argv(argv: list[str]) -> AuditArgs | None:
    """`audit`'s options from the words after `audit`, or None to let typer read them.

    Accepts `--flag value`, `--flag=value` and `-x value` for the flags in `AUDIT_FLAGS`,
    each given once (`--rules` any number of times); anything else is typer's to answer.
    """
    args = AuditArgs()
    seen: set[str] = set()
    words = iter(argv)
    for word in words:
        name, eq, inline = word.partition("=")
        if eq and not name.startswith("--"):
            return None
        spec = AUDIT_FLAGS.get(name)
        if spec is None:
            return None
        field, kind = spec
        if isinstance(kind, bool):
            if eq or field in seen:
                return None
            seen.add(field)
            setattr(args, field, kind)
            continue
        value: str | None = inline if eq else next(words, None)
        if value is None:
            return None
        if not value or value.startswith("-") or (field in seen and kind != "paths"):
            return None
        seen.add(field)
        if kind == "format":
            if value not in Format._value2member_map_:
                return None
            args.format = Format(value)
        elif kind == "fail_on":
            if value not in FailOn._value2member_map_:
                return None
            args.fail_on = FailOn(value)
        elif kind == "paths":
            args.rules = [*(args.rules or []), Path(value)]
        elif kind == "path":
            setattr(args, field, Path(value))
        else:
            setattr(args, field, value)
    return args


def fail(exc: BaseException, code: int, debug: bool, argv: list[str]) -> NoReturn:
    """One line on stderr (a traceback first under --debug), then exit with `code`."""
    if debug:
        import traceback

        traceback.print_exc()
    # Under --log-findings stderr is the journal: an error is logged at priority err.
    prefix = "<3>" if "--log-findings" in argv else ""
    sys.stderr.write(f"{prefix}portaudit: {printable(str(exc))}\n")
    sys.exit(code)


def finish(code: int) -> NoReturn:
    """Exit with `code`, skipping the interpreter's teardown when nothing is left for it to do.

    Freeing every module and object one by one at exit costs a plain audit about a tenth of
    its run. With stdout and stderr flushed, no atexit callback registered, no other thread
    running and no profiler or tracer waiting for the end, no one can tell the difference;
    otherwise (or when a flush fails, which the usual exit then reports as it always has) the
    usual exit runs.
    """
    import atexit

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)
    threading = sys.modules.get("threading")
    if (
        atexit._ncallbacks() == 0
        and (threading is None or threading.active_count() == 1)
        and sys.getprofile() is None  # a profiler prints its report after the program
        and sys.gettrace() is None
    ):
        os._exit(code)
    sys.exit(code)


def fast_main(argv: list[str], hard_exit: bool = False) -> None:
    """Run `portaudit audit ...` without typer when `argv` (after the program) is one plainly.

    Returns when it is not (the caller runs typer); otherwise it exits, like the typer command
    (`hard_exit`: as `finish` does, for the console entry point, which owns the process).
    """
    if not argv or argv[0] != "audit":
        return
    parsed = parse_audit_argv(argv[1:])
    if parsed is None:
        return
    debug = bool(os.environ.get("PORTAUDIT_DEBUG"))
    try:
        code = run_audit_command(parsed)
    except AuditorError as exc:
        fail(exc, exc.exit_code, debug, argv)
    except KeyboardInterrupt:
        fail(KeyboardInterrupt("interrupted"), ExitCode.INTERRUPTED, debug, argv)
    except Exception as exc:
        fail(
            RuntimeError(f"internal error: {type(exc).__name__}: {exc} (run with --debug)"),
            ExitCode.INTERNAL_ERROR,
            debug,
            argv,
        )
    if hard_exit:
        finish(code)
    sys.exit(code)


def main() -> None:
    """Console entry point: a plain `audit` runs here, everything else through typer."""
    fast_main(sys.argv[1:], hard_exit=True)
    from auditor.cli import main as typer_main

    typer_main()
