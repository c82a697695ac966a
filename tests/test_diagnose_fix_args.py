"""Hostile and mistyped command-line values, through the real console entry: each ends in one
line on stderr naming the value (control characters escaped) and exit 2, before anything is
resolved, probed or written, never a traceback, a boxed usage panel or a run that goes on for
hours (`--attempts` and `--timeout` have upper bounds). The runs happen in a namespace of their
own with only `lo`, so a value that slipped through could reach nothing; every run gets an
empty temp root, and `fix` writes nothing under it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import Netns, make_netns, requires_netns

pytestmark = [requires_netns, pytest.mark.netns]

LONG_HOST = "h" * 300
LONG_LABEL = "l" * 64 + ".example"

DIAGNOSE = [
    # (argv after "diagnose", a fragment stderr must hold)
    (["127.0.0.1:0"], "port 0 is outside 1-65535"),
    (["127.0.0.1:65536"], "port 65536 is outside 1-65535"),
    (["127.0.0.1:-1"], "port '-1' is not a number"),
    ([f"{LONG_HOST}:80"], f"'{LONG_HOST}:80'"),
    ([f"{LONG_LABEL}:80"], "the label llllllllllllllll... is 64 characters, over 63"),
    ([f"http://{LONG_LABEL}/"], "is 64 characters, over 63"),
    (["::1:80"], "'::1:80': an IPv6 address needs brackets"),
    (["[::1"], "'[::1': '[' without a closing ']'"),
    ([""], "bad target '': empty"),
    (["\x01"], "bad target '\\x01': contains the control character"),
    (["host\x01:80"], "'host\\x01:80': contains the control character '\\x01'"),
    (["127.0.0.1:9", "--timeout", "0"], "--timeout 0.0: expected seconds in (0, 300]"),
    (["127.0.0.1:9", "--timeout", "-1"], "--timeout -1.0: expected seconds"),
    (["127.0.0.1:9", "--timeout", "nan"], "--timeout nan: expected seconds"),
    (["127.0.0.1:9", "--timeout", "inf"], "--timeout inf: expected seconds"),
    (["127.0.0.1:9", "--timeout", "1e308"], "--timeout 1e+308: expected seconds"),
    (["127.0.0.1:9", "--attempts", "0"], "--attempts 0: expected 1 to 10"),
    (["127.0.0.1:9", "--attempts", str(10**9)], f"--attempts {10**9}: expected 1 to 10"),
    (["127.0.0.1:9", "--expect-ip", "\x01"], "--expect-ip '\\x01': not an IP address"),
    # numbers in ASCII digits only: int() and str.isdigit() also take these
    (["127.0.0.1:\u0661\u0662"], "port '\u0661\u0662' is not a number in ASCII digits"),
    (["127.0.0.1:\u00b2"], "port '\u00b2' is not a number in ASCII digits"),
    (["127.0.0.1:" + "9" * 5000], "port 999999999999... is outside 1-65535"),
    (["127.0.0.1:9", "--timeout", "\u0661"], "'--timeout': '\u0661' is not a number in ASCII"),
    (["127.0.0.1:9", "--timeout", "1_0"], "'--timeout': '1_0' is not a number in ASCII"),
    (["127.0.0.1:9", "--attempts", "\u0662"], "'--attempts': '\u0662' is not a whole number"),
    (["127.0.0.1:9", "--attempts", "1_0"], "'--attempts': '1_0' is not a whole number"),
    (["127.0.0.1:9", "--attempts", " 2"], "'--attempts': ' 2' is not a whole number"),
]

FIX = [
    (["--only", "\x01"], "--only: unknown rule id '\\x01'"),
    (["--only", "X" * 300], "unknown rule id 'XXXXXXXX"),
    (["--only", ""], "--only needs at least one rule id"),
    (["--file", ""], "--file '': expected an absolute host path"),
    (["--file", "\x01"], "--file '\\x01': control characters in the path"),
    (["--file", "/etc/sysctl.d/../passwd"], "--file '/etc/sysctl.d/../passwd': expected"),
    (["--bogus"], "error: No such option: --bogus (see: portaudit fix --help)"),
    (["--rules", ""], "'--rules': '' is an empty path"),
    (["--proc", ""], "'--proc': '' is an empty path"),
    (["--config", ""], "'--config': '' is an empty path"),
    (["--config", "\x01x"], "\\x01x: no such file"),
    (["--rules", "\x1b[31m"], "\\x1b[31m: no such rule file"),
]

ROOT = "{root}"
"""Replaced by the run's empty temp root."""

USAGE = [
    # click's usage errors, for every subcommand: one line, naming the option and the value
    (["diagnose", "-x", "127.0.0.1:9"], "error: No such option: -x (see: portaudit diagnose"),
    (["diagnose"], "error: Missing argument 'HOST:PORT'"),
    (["diagnose", "127.0.0.1:9", "--timeout", "abc"], "'--timeout': 'abc' is not a number"),
    (["diagnose", "127.0.0.1:9", "--format", "nope"], "'--format' / '-f': 'nope' is not one"),
    (["diagnose", "127.0.0.1:9", "--protocol", "\x01"], "'--protocol': '\\x01' is not one"),
    (["audit", "--format", "nope", "--root", ROOT], "'--format' / '-f': 'nope' is not one of"),
    (["audit", "--fail-on", "x", "--root", ROOT], "'--fail-on': 'x' is not one of"),
    (["audit", "--root", ROOT, "-x"], "error: No such option: -x (see: portaudit audit --help)"),
    (["audit", "--root"], "error: Option '--root' requires an argument"),
    (["nope"], "error: No such command 'nope' (see: portaudit --help)"),
    (["rules", "show"], "error: Missing argument 'ID' (see: portaudit rules show --help)"),
    (["rules", "nope"], "error: No such command 'nope' (see: portaudit rules --help)"),
    (["rules", "list", "--x"], "No such option: --x"),
    (["facts", "--root", ROOT, "--bogus"], "No such option: --bogus"),
    (["boot", "--root", ROOT, "--format", "x"], "'--format' / '-f': 'x' is not one of"),
    (["rollback", "--root", ROOT, "a", "b"], "unexpected extra argument(s) (b)"),
    (["watch", "--count", "x"], "'--count': 'x' is not a whole number"),
    (["watch", "--top", "1.5"], "'--top': '1.5' is not a whole number"),
    (["watch", "--interval", "x"], "'--interval': 'x' is not a number"),
    (["systemd", "install", "--root", ROOT, "--x"], "No such option: --x"),
    # an empty path is not the current directory
    (["audit", "--proc", ""], "'--proc': '' is an empty path"),
    (["audit", "--root", ROOT, "--rules", ""], "'--rules': '' is an empty path"),
    (["audit", "--root=", "--no-state"], "'--root': '' is an empty path"),
    (["audit", "--root", ROOT, "--facts", ""], "'--facts': '' is an empty path"),
    (["audit", "--root", ROOT, "--config", ""], "'--config': '' is an empty path"),
    (["audit", "--root", ROOT, "--output="], "'-o' / '--output': '' is an empty path"),
    (["facts", "--root", ""], "'--root': '' is an empty path"),
    (["boot", "--root", ROOT, "-o", ""], "'-o' / '--output': '' is an empty path"),
    (["rollback", "--root", ROOT, "--proc", ""], "'--proc': '' is an empty path"),
    (["rules", "list", "--rules", ""], "'--rules': '' is an empty path"),
    (["rules", "show", "X-1", "--rules", ""], "'--rules': '' is an empty path"),
    (["systemd", "install", "--root", ""], "'--root': '' is an empty path"),
    # a control character in a path is echoed escaped, never raw
    (["audit", "--root", ROOT, "--rules", "a\x01b"], "a\\x01b: no such rule file"),
    (["audit", "--root", ROOT, "--config", "\x1b[31m"], "\\x1b[31m: no such file"),
    (["audit", "--root", "/nope\x01\n"], "--root /nope\\x01\\n: not a directory"),
    (["audit", "--root", ROOT, "--proc", "/nope\x7f"], "--proc /nope\\x7f: not a directory"),
    (["watch", "--count", "\u00b2"], "'--count': '\u00b2' is not a whole number in ASCII"),
    (["watch", "--top", "\u0661\u0660"], "'--top': '\u0661\u0660' is not a whole number"),
    (["watch", "--interval", "1_0"], "'--interval': '1_0' is not a number in ASCII digits"),
]

CASES = (
    [(["diagnose", *argv], fragment) for argv, fragment in DIAGNOSE]
    + [(["fix", "--dry-run", "--root", ROOT, *argv], fragment) for argv, fragment in FIX]
    + USAGE
)


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    with make_netns("pa-args") as made:
        yield made


@pytest.mark.parametrize(("argv", "fragment"), CASES, ids=[repr(a)[:48] for a, _f in CASES])
def test_refuses_the_value(
    ns: Netns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], fragment: str
) -> None:
    # an empty path read as "." must find an empty directory, not the checkout
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    root = tmp_path / "root"
    (root / "etc/sysctl.d").mkdir(parents=True)
    words = [str(root) if a == ROOT else a for a in argv]
    got = ns.python("-m", "auditor", *words, check=False, timeout=60)
    assert "Traceback" not in got.stderr, got.stderr
    assert got.returncode == 2, (got.returncode, got.stdout, got.stderr)
    assert got.stderr.startswith("portaudit: ") and got.stderr.count("\n") == 1, got.stderr
    assert fragment in got.stderr, (fragment, got.stderr)
    assert got.stderr[:-1].isprintable(), got.stderr
    assert got.stdout == ""
    assert sorted(root.rglob("*")) == [root / "etc", root / "etc/sysctl.d"]
    assert not any(cwd.iterdir())
