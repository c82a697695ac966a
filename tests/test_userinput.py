"""Numbers typed by the operator, in command options and config files, are read in ASCII
decimal only: Python's int(), float() and YAML 1.1 read more (`١٢`, `1_000`, `0x10`, `010` as
8, `1:30` as 90, `.nan`), and a port, count or threshold read as something the operator did
not mean is a silent wrong answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.config import load_config
from auditor.errors import InputError, printable
from auditor.hostfs import HostRoot
from auditor.userinput import decimal_number, whole_number


@pytest.mark.parametrize("text", ["\u0661\u0662", "\u00b2", "1_0", " 2", "+2", "", "9" * 30])
def test_whole_number_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"whole number|more than"):
        whole_number(text)


def test_whole_number_reads_ascii() -> None:
    assert whole_number("12") == 12 and whole_number("-1") == -1


@pytest.mark.parametrize("text", ["\u0661", "1_0", " 1", "1 ", "\uff11"])
def test_decimal_number_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a number"):
        decimal_number(text)


def test_decimal_number_reads_ascii() -> None:
    assert decimal_number("0.5") == 0.5 and decimal_number("1e3") == 1000.0


CONFIGS = [
    ("public_ports: [0x1F90]\n", 1, "'0x1F90' is not a whole number"),
    ("public_ports: [1_000]\n", 1, "'1_000' is not a whole number"),
    ("public_ports: [010]\n", 1, "'010' is not a whole number"),
    ("public_ports: [1:20]\n", 1, "'1:20' is not a whole number"),
    ("reserve_ports:\n  - +8080\n", 2, "'+8080' is not a whole number"),
    ("rules:\n  EPH-001:\n    params:\n      warn_ratio: .nan\n", 4, "'.nan' is not a number"),
    ("rules:\n  EPH-001:\n    params:\n      warn_ratio: 0_7.0\n", 4, "'0_7.0' is not a number"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), CONFIGS)
def test_config_numbers_in_plain_decimal(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    conf = tmp_path / "etc/portaudit/config.yaml"
    conf.parent.mkdir(parents=True)
    conf.write_text(text)
    host = HostRoot(proc=tmp_path, root=tmp_path)
    with pytest.raises(InputError) as err:
        load_config(host, None)
    assert err.value.line == line and fragment in str(err.value), str(err.value)


def test_config_plain_numbers_still_read(tmp_path: Path) -> None:
    conf = tmp_path / "etc/portaudit/config.yaml"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        "public_ports: [8080, 443]\nrules:\n  EPH-001:\n    params: {warn_ratio: 0.5}\n"
    )
    got = load_config(HostRoot(proc=tmp_path, root=tmp_path), None)
    assert got.public_ports == {8080, 443}
    assert got.for_rule("EPH-001").params == {"warn_ratio": 0.5}


def test_printable_escapes_what_would_break_the_line() -> None:
    assert printable("a\x01b\n\x1b[31m") == "a\\x01b\\n\\x1b[31m"
    assert printable("caf\u00e9 \u0661") == "caf\u00e9 \u0661"
    assert str(InputError("/x\ty", 3, "bad\n")) == "/x\\ty:3: bad\\n"
