"""Renderers: an `AuditReport` in, a string out. They never compute and never read the host.

`Format` is the one dispatch from `--format` to a renderer; every renderer takes the same
`AuditReport`, whether the audit covered one namespace or all of them. The renderer modules
are imported only when chosen, so the CLI can build its options without loading tabulate.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, assert_never

if TYPE_CHECKING:
    from auditor.engine.report import AuditReport

Renderer = Callable[["AuditReport"], str]


class Format(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    PROMETHEUS = "prometheus"

    def renderer(self, width: int | None = None, verbose: bool = False) -> Renderer:
        """The renderer for this format; `width` (a terminal's columns, None when the output is
        not a terminal) and `verbose` shape the table and are ignored by the others."""
        match self:
            case Format.TABLE:
                from functools import partial

                from auditor.render.table import render_table

                return partial(render_table, width=width, verbose=verbose)
            case Format.JSON:
                from auditor.render.json import render_json

                return render_json
            case Format.PROMETHEUS:
                from auditor.render.prometheus import render_prometheus

                return render_prometheus
            case _:
                assert_never(self)
