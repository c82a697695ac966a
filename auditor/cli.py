"""The `portaudit` command line (typer). Thin: parse flags, call one function, map errors."""

from __future__ import annotations

import sys

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


def main() -> None:
    app()
