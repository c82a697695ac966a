"""`simple_table` lays findings out exactly as tabulate's "simple" format does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from tabulate import tabulate

from auditor.render.tablelayout import simple_table

HEADERS = ["SEV", "ID", "SUBJECT", "FINDING", "FIX"]
TEXT = st.text(alphabet="ab xyz-.:=_0123456789\n…é\t", max_size=40)
WORDY = st.text(alphabet="abcdefghij .:-\n…", max_size=60)
ROWS = st.lists(st.lists(st.one_of(TEXT, WORDY), min_size=5, max_size=5), max_size=6)


@settings(max_examples=600, deadline=None)
@given(ROWS)
def test_same_as_tabulate_for_any_cells(rows: list[list[str]]) -> None:
    assert simple_table(rows, HEADERS) == tabulate(rows, headers=HEADERS, tablefmt="simple")


LETTERS = st.text(alphabet="abcdefghij .:-=\n…0123456789", min_size=1, max_size=50).filter(
    lambda t: any(c.isalpha() and c not in "eE" for c in t)
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(LETTERS, min_size=5, max_size=5), min_size=1, max_size=6))
def test_text_cells_are_laid_out_without_tabulate(rows: list[list[str]]) -> None:
    import tabulate as module

    expected = tabulate(rows, headers=HEADERS, tablefmt="simple")
    real = module.tabulate
    module.tabulate = None  # type: ignore[assignment]
    try:
        assert simple_table(rows, HEADERS) == expected
    finally:
        module.tabulate = real


def test_same_as_tabulate_for_findings_as_rendered() -> None:
    rows = [
        [
            "CRIT",
            "EPH-001",
            "10.0.0.2 ->\n10.0.0.5:3306",
            "Ephemeral ports to\n10.0.0.5 97% used",
            "a = 1\nb = 2",
        ],
        ["WARN", "TW-003", "-", "one line", "advice …"],
        ["INFO", "FD-002", "", "x", ""],
        ["WARN", "EPH-004", "8080", "1,000 ports", "  padded  \n\nkept  "],
    ]
    assert simple_table(rows, HEADERS) == tabulate(rows, headers=HEADERS, tablefmt="simple")
    assert simple_table(rows[:1], HEADERS).splitlines()[1].startswith("-----  -------")
