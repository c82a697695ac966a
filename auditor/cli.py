"""The `portaudit` command line (typer). Thin: parse flags, call one function, map errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def main() -> None:
    app()


# --- systemd (issue 6) ---
systemd_app = typer.Typer(
    no_args_is_help=True,
    help="Install or remove the hardened timer that audits this host every 5 minutes.",
)
app.add_typer(systemd_app, name="systemd")


def _report_lines(lines: list[str]) -> None:
    for line in lines:
        typer.echo(line)


@systemd_app.command("install")
def systemd_install(
    root: Annotated[Path, typer.Option("--root", help="Filesystem root to install under.")] = Path(
        "/"
    ),
    no_enable: Annotated[
        bool, typer.Option("--no-enable", help="Write the units, do not enable the timer.")
    ] = False,
) -> None:
    """Write portaudit.service and portaudit.timer for this installation and enable the timer."""
    from auditor import units
    from auditor.errors import AuditorError

    try:
        _report_lines(units.install(root, enable=not no_enable))
    except AuditorError as exc:
        typer.echo(f"portaudit: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:
        typer.echo(f"portaudit: {exc.filename or root}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None


@systemd_app.command("uninstall")
def systemd_uninstall(
    root: Annotated[Path, typer.Option("--root", help="Filesystem root to remove from.")] = Path(
        "/"
    ),
) -> None:
    """Stop and disable the timer, remove both units and portaudit's textfile and state."""
    from auditor import units
    from auditor.errors import AuditorError

    try:
        _report_lines(units.uninstall(root))
    except AuditorError as exc:
        typer.echo(f"portaudit: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:
        typer.echo(f"portaudit: {exc.filename or root}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
