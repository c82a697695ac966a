"""The boot-precedence model over fixture roots (tests/fixtures/persist/<case>/)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from auditor.facts.model import PersistedSysctl, Unavailable, from_jsonable, to_jsonable
from auditor.facts.persisted import (
    boot_file_map,
    boot_files,
    chase,
    collect_persisted,
    effective,
    effective_all,
    procps_files,
)
from auditor.hostfs import HostRoot

FIXTURES = Path(__file__).parent / "fixtures" / "persist"


def host(case: str, proc: Path | None = None) -> HostRoot:
    return HostRoot(proc=proc or FIXTURES / "no-proc", root=FIXTURES / case)


def model(case: str) -> PersistedSysctl:
    got = collect_persisted(host(case))
    assert isinstance(got, PersistedSysctl), got
    return got


def value(p: PersistedSysctl, key: str) -> tuple[str, str, int] | None:
    a = effective(p, key)
    return None if a is None else (a.value, a.file, a.line)


def test_debian12_reads_sysctl_conf_through_the_symlink() -> None:
    p = model("debian12")
    assert p.files == ("/usr/lib/sysctl.d/50-vendor.conf", "/etc/sysctl.d/99-sysctl.conf")
    assert value(p, "net.ipv4.tcp_tw_reuse") == ("1", "/etc/sysctl.d/99-sysctl.conf", 8)
    assert value(p, "net.core.somaxconn") == ("1024", "/usr/lib/sysctl.d/50-vendor.conf", 3)
    assert p.procps_differences == {}
    (link,) = [f for f in boot_files(host("debian12")) if f.host_path.endswith("99-sysctl.conf")]
    assert boot_file_map(host("debian12"))[link.host_path] == link
    assert link.target == "/etc/sysctl.conf"
    assert link.real_path == FIXTURES / "debian12" / "etc" / "sysctl.conf"


def test_debian13_without_the_symlink_ignores_sysctl_conf_at_boot() -> None:
    p = model("debian13")
    assert p.files == ("/usr/lib/sysctl.d/50-vendor.conf",)
    assert value(p, "net.ipv4.tcp_tw_reuse") == ("2", "/usr/lib/sysctl.d/50-vendor.conf", 2)
    assert effective(p, "net.ipv4.ip_local_port_range") is None
    # procps `sysctl --system` reads /etc/sysctl.conf last: an operator testing with it sees
    # values that boot never applies
    assert p.procps_differences == {
        "net.ipv4.tcp_tw_reuse": "1",
        "net.ipv4.ip_local_port_range": "10000 65000",
    }
    assert [f.host_path for f in procps_files(host("debian13"))][-1] == "/etc/sysctl.conf"


def test_absolute_symlink_resolves_under_the_root() -> None:
    p = model("abslink")
    assert value(p, "net.ipv4.tcp_tw_reuse") == ("1", "/etc/sysctl.d/99-sysctl.conf", 8)
    (link,) = [f for f in boot_files(host("abslink")) if f.host_path.endswith("99-sysctl.conf")]
    assert link.real_path == FIXTURES / "abslink" / "etc" / "sysctl.conf"


def test_same_basename_earliest_directory_wins() -> None:
    p = model("precedence")
    assert p.files == (
        "/etc/sysctl.d/10-same.conf",
        "/run/sysctl.d/20-run.conf",
        "/usr/local/lib/sysctl.d/30-local.conf",
    )
    assert value(p, "net.core.somaxconn") == ("1111", "/etc/sysctl.d/10-same.conf", 1)
    assert value(p, "net.ipv4.tcp_fin_timeout") == ("21", "/run/sysctl.d/20-run.conf", 1)
    assert value(p, "net.ipv4.tcp_max_syn_backlog")[0] == "31"  # type: ignore[index]


def test_dev_null_symlink_masks() -> None:
    p = model("mask")
    assert p.masked == ("/etc/sysctl.d/50-vendor.conf",)
    assert p.files == ("/usr/lib/sysctl.d/60-other.conf",)
    assert effective(p, "net.core.somaxconn") is None
    listed = boot_files(host("mask"))
    assert [(f.host_path, f.masked) for f in listed] == [
        ("/etc/sysctl.d/50-vendor.conf", True),
        ("/usr/lib/sysctl.d/60-other.conf", False),
    ]


def test_dangling_symlink_hides_its_basename_too() -> None:
    p = model("dangling")
    assert p.masked == ("/run/sysctl.d/50-vendor.conf",)
    assert effective(p, "net.core.somaxconn") is None


def test_byte_order_not_numeric_or_locale() -> None:
    p = model("order")
    # "100-a" < "99-b" < "Z-upper" < "a-lower" in strcmp order
    assert p.files == (
        "/etc/sysctl.d/100-a.conf",
        "/usr/lib/sysctl.d/99-b.conf",
        "/etc/sysctl.d/Z-upper.conf",
        "/etc/sysctl.d/a-lower.conf",
    )
    assert value(p, "net.core.somaxconn") == ("99", "/usr/lib/sysctl.d/99-b.conf", 1)
    assert value(p, "net.ipv4.tcp_fin_timeout") == ("42", "/etc/sysctl.d/Z-upper.conf", 1)
    assert value(p, "net.ipv4.tcp_max_syn_backlog") == ("52", "/etc/sysctl.d/a-lower.conf", 1)


def test_hidden_and_backup_files_are_not_read() -> None:
    p = model("hidden")
    assert p.files == ("/etc/sysctl.d/90-net.conf",)
    assert value(p, "net.core.somaxconn") == ("2048", "/etc/sysctl.d/90-net.conf", 1)
    assert effective(p, "net.ipv4.tcp_fin_timeout") is None
    # procps reads hidden *.conf files
    assert p.procps_differences == {"net.ipv4.tcp_fin_timeout": "7"}


def test_problems_carry_file_and_line() -> None:
    p = model("problems")
    got = {(x.file.rsplit("/", 1)[1], x.line, x.kind) for x in p.problems}
    assert got == {
        ("40-problems.conf", 1, "bom"),
        ("40-problems.conf", 2, "quoted-value"),
        ("40-problems.conf", 3, "inline-comment"),
        ("40-problems.conf", 4, "no-equals"),
    }
    assert value(p, "net.ipv4.ip_local_port_range")[0] == "20000\t30000"  # type: ignore[index]
    assert value(p, "net.ipv4.tcp_max_syn_backlog")[0] == "700"  # type: ignore[index]
    assert value(p, "net.ipv4.tcp_keepalive_time") == ("600", "/etc/sysctl.d/41-crlf.conf", 2)
    assert effective(p, "net.ipv4.tcp_fin_timeout") is None  # lost behind the BOM
    dash = effective(p, "net.ipv4.tcp_no_such_key")
    assert dash is not None and dash.ignore_errors


def test_unknown_keys_need_proc(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for key, v in [("net/ipv4/tcp_max_syn_backlog", "128"), ("net/core/somaxconn", "4096")]:
        (proc / "sys" / key).parent.mkdir(parents=True, exist_ok=True)
        (proc / "sys" / key).write_text(v + "\n")
    got = collect_persisted(host("problems", proc))
    assert isinstance(got, PersistedSysctl)
    unknown = {x.text for x in got.problems if x.kind == "unknown-key"}
    assert "net.ipv4.tcp_tw_recycle" in unknown
    assert "net.core.somaxconn" not in unknown
    assert got.runtime["net.ipv4.tcp_max_syn_backlog"] == "128"
    # without a /proc at all nothing is called unknown (a snapshot of files only)
    assert not [x for x in model("problems").problems if x.kind == "unknown-key"]


def test_globs_explicit_wins_and_exclusions() -> None:
    p = model("globs")
    assert value(p, "net.ipv4.conf.default.rp_filter")[0] == "2"  # type: ignore[index]
    assert value(p, "net.ipv4.conf.eth0.rp_filter")[0] == "2"  # type: ignore[index]
    # the explicit line is in an *earlier* file than the glob and still wins
    assert value(p, "net.ipv4.conf.lo.rp_filter") == ("1", "/etc/sysctl.d/05-lo.conf", 1)
    assert effective(p, "net.ipv4.conf.all.rp_filter") is None
    # `*` stays within one name
    assert effective(p, "net.ipv4.conf.a.b.rp_filter") is None
    # the `.` and `/` spellings of one glob are one key: the later one wins
    assert value(p, "net.ipv4.conf.lo.accept_local") == ("1", "/etc/sysctl.d/30-glob2.conf", 2)
    assert "net.ipv4.conf.lo.rp_filter" in effective_all(p)


def test_shadowed_keeps_both_lines() -> None:
    p = model("shadowed")
    assert value(p, "net.ipv4.tcp_tw_reuse") == ("2", "/usr/lib/sysctl.d/70-vendor.conf", 1)
    lines = [(a.file, a.line) for a in p.assignments if a.key == "net.ipv4.tcp_tw_reuse"]
    assert lines == [("/etc/sysctl.d/60-app.conf", 1), ("/usr/lib/sysctl.d/70-vendor.conf", 1)]
    # an equal later value keeps deciding from the later line (what an edit must change)
    assert value(p, "net.core.somaxconn") == ("8192", "/usr/lib/sysctl.d/70-vendor.conf", 2)


def test_symlinks_never_escape_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    d = root / "etc" / "sysctl.d"
    d.mkdir(parents=True)
    (tmp_path / "outside.conf").write_text("net.core.somaxconn = 1\n")
    os.symlink("../../../../outside.conf", d / "10-up.conf")
    os.symlink("/../../outside.conf", d / "20-abs.conf")
    h = HostRoot(proc=tmp_path / "noproc", root=root)
    assert chase(h, "/etc/sysctl.d/10-up.conf") == "/outside.conf"
    files = boot_files(h)
    assert all(f.masked for f in files)
    assert all(str(f.real_path).startswith(str(root)) for f in files)
    got = collect_persisted(h)
    assert isinstance(got, PersistedSysctl) and got.assignments == ()


def test_symlink_loop_is_masked_not_a_crash(tmp_path: Path) -> None:
    d = tmp_path / "etc" / "sysctl.d"
    d.mkdir(parents=True)
    os.symlink("b.conf", d / "a.conf")
    os.symlink("a.conf", d / "b.conf")
    got = collect_persisted(HostRoot(proc=tmp_path / "p", root=tmp_path))
    assert isinstance(got, PersistedSysctl)
    assert got.masked == ("/etc/sysctl.d/a.conf", "/etc/sysctl.d/b.conf")


def test_bad_encoding_is_a_problem_with_its_line(tmp_path: Path) -> None:
    d = tmp_path / "etc" / "sysctl.d"
    d.mkdir(parents=True)
    (d / "10-latin1.conf").write_bytes(
        b"net.core.somaxconn = 1\n# caf\xe9\nnet.ipv4.tcp_tw_reuse = 1\n"
    )
    got = collect_persisted(HostRoot(proc=tmp_path / "p", root=tmp_path))
    assert isinstance(got, PersistedSysctl)
    assert [(x.line, x.kind) for x in got.problems] == [(2, "bad-encoding")]
    assert value(got, "net.ipv4.tcp_tw_reuse") == ("1", "/etc/sysctl.d/10-latin1.conf", 3)


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root reads any file; the permission case needs a user"
)
def test_unreadable_file_is_unavailable(tmp_path: Path) -> None:  # pragma: no cover - non-root
    d = tmp_path / "etc" / "sysctl.d"
    d.mkdir(parents=True)
    (d / "10-x.conf").write_text("a.b = 1\n")
    (d / "10-x.conf").chmod(0)
    got = collect_persisted(HostRoot(proc=tmp_path / "p", root=tmp_path))
    assert isinstance(got, Unavailable) and "10-x.conf" in got.reason


def test_directory_named_conf_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "etc" / "sysctl.d" / "10-dir.conf").mkdir(parents=True)
    got = collect_persisted(HostRoot(proc=tmp_path / "p", root=tmp_path))
    assert isinstance(got, PersistedSysctl)
    assert [(x.file, x.kind) for x in got.problems] == [("/etc/sysctl.d/10-dir.conf", "unreadable")]


def test_empty_root_is_an_empty_model(tmp_path: Path) -> None:
    got = collect_persisted(HostRoot(proc=tmp_path / "p", root=tmp_path))
    assert got == PersistedSysctl(files=(), assignments=())


@pytest.mark.parametrize("case", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_json_round_trip(case: str) -> None:
    p = model(case)
    back = from_jsonable(PersistedSysctl, json.loads(json.dumps(to_jsonable(p))))
    assert back == p


def test_fixture_copy_keeps_symlinks(tmp_path: Path) -> None:
    """Tests that copy a fixture root (fix, scenarios) must keep links as links."""
    dst = tmp_path / "r"
    shutil.copytree(FIXTURES / "debian12", dst, symlinks=True)
    assert (dst / "etc/sysctl.d/99-sysctl.conf").is_symlink()
    assert (
        value(collect_persisted(HostRoot(proc=tmp_path / "p", root=dst)), "net.ipv4.tcp_tw_reuse")[
            0
        ]
        == "1"
    )  # type: ignore[arg-type,index]
