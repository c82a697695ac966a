"""`kernel_ints` agrees with the running kernel: each text is written to a per-netns integer key
through /proc/sys inside a namespace this test makes (never the host's), in one write with the
newline systemd-sysctl adds, and what the kernel then holds (or its EINVAL) is compared with
the parser's answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.facts.sysctlvalue import holds_after_write, kernel_int, kernel_ints, same_value
from tests.helpers import ROOTS, run_cli
from tests.netns import Netns, make_netns, requires_netns

KEY = "/proc/sys/net/ipv4/tcp_fin_timeout"
"""A plain int key (seconds) with no range of its own, private to each network namespace."""
RESET = "45"

TEXTS = [
    "010",
    "0x10",
    "0X1f",
    "1 # note",
    "1_000",
    "+5",
    " 7",
    "\t9",
    "7x",
    "08",
    "0x",
    "0x1g",
    "12\r",
    "\u0661\u0662",
    "１２",
    "00000000000000000030",
    "000000000000000000030",
    "30 40",
    "",
    "   ",
]

_WRITER = r"""
import json, os, sys
key, reset = sys.argv[1], sys.argv[2]
out = []
for text in json.loads(sys.argv[3]):
    with open(key, "w") as f:
        f.write(reset)
    fd = os.open(key, os.O_WRONLY)
    try:
        os.write(fd, (text + "\n").encode())
        err = None
    except OSError as exc:
        err = exc.errno
    finally:
        os.close(fd)
    with open(key) as f:
        out.append([err, f.read().strip()])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def ns() -> Iterator[Netns]:
    with make_netns("pa-kint") as made:
        yield made


@requires_netns
@pytest.mark.netns
def test_kernel_ints_agrees_with_the_kernel(ns: Netns) -> None:
    got = ns.python("-c", _WRITER, KEY, RESET, json.dumps(TEXTS), timeout=60)
    results = json.loads(got.stdout)
    for text, (err, held) in zip(TEXTS, results, strict=True):
        expected = kernel_int(text + "\n")
        if expected is None:
            # refused (EINVAL) or, for an empty or blank write, nothing read: unchanged
            assert held == RESET, (text, err, held)
            assert err is not None or not text.strip(), (text, held)
        else:
            assert err is None and held == str(expected), (text, err, held, expected)


def test_kernel_reading_unlike_python_int() -> None:
    assert kernel_int("010") == 8 and kernel_int("0x10") == 16
    assert kernel_int("1 # fast reuse") == 1
    assert kernel_int("1_000") is None and kernel_int("\u0661\u0662") is None
    assert kernel_int("+5") is None and kernel_int("7x") is None
    assert kernel_int("-3") == -3
    assert kernel_ints("32768 60999", 2) == (32768, 60999)
    assert kernel_ints("32768 # x", 2) is None


def test_same_value_reads_tokens_as_the_kernel() -> None:
    assert same_value("010", "8") and same_value("0x10", "16")
    assert not same_value("1_000", "1000")
    assert not same_value("\u0661\u0662", "12")
    assert not same_value("+5", "5")


def test_snapshot_numbers_read_as_the_kernel_prints_them(tmp_path: Path) -> None:
    """A snapshot (`audit --facts`) is a file anyone can edit: a runtime value that is not a
    number the kernel would print (`²`, `1_000`) is text, never int()'s reading of it, and
    never an internal error."""
    root = ROOTS / "minimal"
    made = run_cli("facts", "--root", str(root), "--proc", str(root / "proc"))
    assert made.returncode == 0, made.stderr
    snapshot = json.loads(made.stdout)
    snapshot["sysctl"]["net.ipv4.ip_unprivileged_port_start"] = "\u00b2"
    snapshot["sysctl"]["net.ipv4.tcp_max_tw_buckets"] = "1_000"
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(snapshot))
    got = run_cli(
        "audit", "--facts", str(path), "--root", str(tmp_path), "-f", "json", "--fail-on", "never"
    )
    assert got.returncode == 0, got.stderr
    reasons = {s["id"]: s["reason"] for s in json.loads(got.stdout)["skipped"]}
    assert reasons["TW-004"].startswith("cannot compare '1_000' (text) with 131072 (a number)")


@pytest.mark.parametrize(
    ("text", "runtime", "holds"),
    [
        ("1 # fast reuse", "1", True),  # the number read, the rest ignored
        ("20000 40000 # wide", "20000\t40000", True),  # two integers, printed with a tab
        ("010", "8", True),  # base 0
        ("2", "1", False),
        ("1_000", "1000", False),  # refused: the key keeps what it had, not 1000
        ("bbr # fast", "bbr", False),  # not a key of integers: the whole text is written
        ("20000", "20000\t40000", True),  # one of two integers: the second is left as it is
        ("30000", "20000\t40000", False),
    ],
)
def test_what_a_written_text_leaves_a_key_reading(text: str, runtime: str, holds: bool) -> None:
    assert holds_after_write(text, runtime) is holds


@requires_netns
@pytest.mark.netns
def test_holds_after_write_agrees_with_the_kernel_on_a_key_of_two_integers(ns: Netns) -> None:
    key, reset = "/proc/sys/net/ipv4/ip_local_port_range", "20000 40000"
    texts = ["20000", "30000", "20000 40000 # wide", "20000\t40000", "1_000 2", "20000 40000 1"]
    got = ns.python("-c", _WRITER, key, reset, json.dumps(texts), timeout=60)
    for text, (err, held) in zip(texts, json.loads(got.stdout), strict=True):
        if err is not None:  # refused: at boot the key keeps what it had then, not this value
            assert not holds_after_write(text, "20000\t40000"), (text, err)
            continue
        assert holds_after_write(text, "20000\t40000") is (held == "20000\t40000"), (text, held)
