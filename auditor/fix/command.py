"""`portaudit fix` and `portaudit rollback` from the operator's side: checks that come before
the plan, questions, the plan, the change, its measured effect and the way back.

`cli.py` parses the flags into `FixOptions` and calls `run_fix`; everything here prints
through `echo` and returns the exit code, so the command reads top to bottom.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import AuditorError, RefusedError
from auditor.exitcodes import ExitCode
from auditor.hostfs import HostRoot

Echo = Callable[[str], None]
Ask = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class FixOptions:
    dry_run: bool = False
    yes: bool = False
    only: str | None = None
    include_unsafe: bool = False
    file: str | None = None
    no_runtime: bool = False
    for_host: bool = False
    config: Path | None = None
    rules: tuple[Path, ...] = ()


def same_host_args(host: HostRoot) -> list[str]:
    """The options a follow-up command needs to act on the same root and /proc."""
    out: list[str] = []
    if host.root != Path("/"):
        out += ["--root", str(host.root)]
    if host.proc != Path("/proc"):
        out += ["--proc", str(host.proc)]
    return out


def _command(*argv: str) -> str:
    return " ".join(shlex.quote(a) for a in ("portaudit", *argv))


def check_can_write(host: HostRoot, opts: FixOptions) -> None:
    """Say what is missing before showing a plan that could not be applied."""
    from auditor.fix import netns

    if opts.dry_run or os.geteuid() == 0:
        return
    if not opts.no_runtime and netns.kernel_backed(host):
        raise RefusedError(
            "fix changes runtime values under /proc/sys, which needs root: run it as root,"
            " add --no-runtime to only persist (under a --root you can write), or --dry-run"
        )
    if not os.access(host.root, os.W_OK) and not os.access(host.path("/etc"), os.W_OK):
        raise RefusedError(f"cannot write under --root {host.root}: run as root or use --dry-run")


def run_fix(host: HostRoot, opts: FixOptions, echo: Echo, ask: Ask | None) -> ExitCode:
    """The whole `fix` command; `ask` is None when there is no terminal to ask on."""
    from auditor.config import load_config
    from auditor.containers import current_netns_inode, netns_owner, persist_advice
    from auditor.engine.evaluate import evaluate
    from auditor.engine.load import load_rules
    from auditor.facts.collect import collect_facts
    from auditor.fix import keys
    from auditor.fix.apply import apply_plan
    from auditor.fix.effect import effect_lines
    from auditor.fix.plan import render_plan, unsafe_candidates
    from auditor.fix.prepare import build_plan
    from auditor.fix.proposals import Declared
    from auditor.selection import check_known, parse_only

    wanted = parse_only(opts.only)
    rules = load_rules(list(opts.rules))
    if wanted is not None:
        check_known(wanted, rules)
    cfg = load_config(host, opts.config)
    check_can_write(host, opts)
    facts = collect_facts(host)
    report = evaluate(rules, facts, cfg)
    approved: set[str] = set()
    if ask is not None and not opts.yes and not opts.dry_run and not opts.include_unsafe:
        asked: set[str] = set()
        for f in unsafe_candidates(report.findings, wanted):
            if f.id in asked:
                continue
            asked.add(f.id)
            echo(f"unsafe: {f.id} {f.subject}".rstrip() + f": {f.message}")
            for k, v in f.fix.sysctl.items():
                risk = keys.KEYS[k].risk if k in keys.KEYS else ""
                echo(f"  {k} = {v}" + (f"  (risk: {risk})" if risk else ""))
            if ask(f"Include the unsafe fix of {f.id}?"):
                approved.add(f.id)
    plan = build_plan(
        host,
        report.findings,
        only=wanted,
        file=opts.file,
        runtime=not opts.no_runtime,
        facts=facts,
        declared=Declared(cfg.public_ports, cfg.reserve_ports),
        include_unsafe=opts.include_unsafe,
        approved=frozenset(approved),
        for_host=opts.for_host,
    )
    if plan.runtime_only:
        inode = current_netns_inode(host)
        owner = netns_owner(host, inode) if inode is not None else None
        values = {c.key: c.proposed for c in plan.changes if c.write_runtime}
        plan = dataclasses.replace(plan, persist_advice=tuple(persist_advice(owner, values)))
    echo(render_plan(plan, host.root).rstrip("\n"))
    if plan.empty:
        return ExitCode.FINDINGS if plan.left_out else ExitCode.OK
    if opts.dry_run:
        return ExitCode.OK
    if not opts.yes and ask is None:
        raise RefusedError("no terminal to confirm on: re-run with --yes (or --dry-run)")
    if not opts.yes and not (ask is not None and ask("Apply these changes?")):
        echo("nothing changed")
        return ExitCode.OK
    cs = apply_plan(host, plan)
    undo = _command("rollback", cs.id, *same_host_args(host))
    where = " in this network namespace" if plan.runtime_only else ""
    echo(f"applied change set {cs.id} (undo with: {undo}{where})")
    try:
        after = evaluate(rules, collect_facts(host), cfg)
    except AuditorError as exc:
        echo(f"effect: the facts could not be read again ({exc})")
        return ExitCode.OK
    fixed = dict.fromkeys(r for c in plan.changes for r in c.rules)
    lines = effect_lines(report, after, fixed)
    if lines:
        echo("effect (facts read again):")
        for line in lines:
            echo(f"  {line}")
    return ExitCode.OK


def terminal_ask() -> Ask | None:
    """A yes/no question on the terminal, or None when stdin is not one."""
    import typer

    if not sys.stdin.isatty():
        return None
    return lambda question: bool(typer.confirm(question, default=False))
