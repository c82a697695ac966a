"""The pure boot model: dict of file bytes in, decisions out; and `portaudit boot`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.facts.model import PersistedSysctl
from auditor.facts.persisted import collect_persisted, effective
from auditor.fix.apply import apply_plan
from auditor.fix.prepare import build_plan
from auditor.fix.target import simulate_boot
from auditor.hostfs import HostRoot
from auditor.sysctl.boot import boot_view, procps_view
from auditor.sysctl.tree import BOOT_DIRS, PROCPS_DIRS, SysctlTree
from tests.helpers import make_finding

LO = "net.ipv4.conf.lo.rp_filter"
DFLT = "net.ipv4.conf.default.rp_filter"
SYSTEMD_50_DEFAULT = (
    b"net.ipv4.conf.default.rp_filter = 2\n"
    b"net.ipv4.conf.*.rp_filter = 2\n"
    b"-net.ipv4.conf.all.rp_filter\n"
)


def tree_of(files: dict[str, bytes], links: dict[str, str] | None = None) -> SysctlTree:
    """A tree without a disk: every directory resolves to itself, links as given."""
    names: dict[str, list[str]] = {d: [] for d in PROCPS_DIRS}
    all_links = {}
    for path in [*files, *(links or {})]:
        d, name = path.rsplit("/", 1)
        if d in names:
            names[d].append(name)
            all_links[path] = (links or {}).get(path, path)
    return SysctlTree(
        dirs={d: d for d in PROCPS_DIRS},
        names={d: tuple(sorted(n)) for d, n in names.items()},
        links=all_links,
        contents=dict(files),
        sysctl_conf="/etc/sysctl.conf",
    )


def test_precedence_by_basename_etc_run_usr_local_usr() -> None:
    files = {
        f"{d}/50-x.conf": f"net.core.somaxconn = {i}\n".encode() for i, d in enumerate(BOOT_DIRS)
    }
    m = boot_view(tree_of(files))
    assert m.files == ("/etc/sysctl.d/50-x.conf",)
    for i, d in enumerate(BOOT_DIRS):
        rest = {p: b for p, b in files.items() if not p.startswith(BOOT_DIRS[:i])}
        got = boot_view(tree_of(rest)).decide("net.core.somaxconn")
        assert got is not None and (got.value, got.by.file) == (str(i), f"{d}/50-x.conf")


def test_lone_cr_nul_and_leading_slash_all_apply() -> None:
    m = boot_view(
        tree_of(
            {
                "/etc/sysctl.d/10-a.conf": b"net.core.somaxconn = 1\rnet.ipv4.tcp_fin_timeout = 2\n",
                "/etc/sysctl.d/20-b.conf": b"net.ipv4.tcp_keepalive_time = 3\0/net/ipv4/tcp_tw_reuse = 1\n",
            }
        )
    )
    assert {k: m.decide(k).value for k in m.explicit_keys()} == {  # type: ignore[union-attr]
        "net.core.somaxconn": "1",
        "net.ipv4.tcp_fin_timeout": "2",
        "net.ipv4.tcp_keepalive_time": "3",
        "net.ipv4.tcp_tw_reuse": "1",
    }
    assert [(p.file, p.line, p.kind) for p in m.problems] == [
        ("/etc/sysctl.d/10-a.conf", 1, "bare-cr"),
        ("/etc/sysctl.d/20-b.conf", 1, "nul-byte"),
    ]


def test_later_default_line_reaches_an_interface_whose_write_is_skipped() -> None:
    tree = tree_of(
        {
            "/etc/sysctl.d/10-lo.conf": b"net.ipv4.conf.lo.rp_filter = 0\n",
            "/usr/lib/sysctl.d/50-default.conf": SYSTEMD_50_DEFAULT,
        }
    )
    m = boot_view(tree)
    # lo already holds 0: systemd skips the write, the kernel copies default's 2 into lo
    held = m.decide(LO, initial={LO: "0", DFLT: "0"})
    assert held is not None and (held.value, held.via, held.by.line) == ("2", "default", 1)
    # lo holds something else: the write sticks and default no longer reaches lo
    other = m.decide(LO, initial={LO: "1", DFLT: "1"})
    assert other is not None and (other.value, other.via) == ("0", "")
    # without the initial values: lo's own line, unless lo already holds 0
    plain = m.decide(LO)
    assert plain is not None and plain.value == "0" and plain.unless is not None
    assert (plain.unless.value, plain.unless.by.file) == ("2", "/usr/lib/sysctl.d/50-default.conf")


def test_interface_line_after_default_wins_and_has_no_alternative() -> None:
    m = boot_view(
        tree_of(
            {
                "/usr/lib/sysctl.d/50-default.conf": SYSTEMD_50_DEFAULT,
                "/etc/sysctl.d/60-lo.conf": b"net.ipv4.conf.lo.rp_filter = 0\n",
            }
        )
    )
    d = m.decide(LO)
    assert d is not None and (d.value, d.unless) == ("0", None)
    assert m.decide("net.ipv4.conf.all.rp_filter") is None  # the -key exclusion


def test_with_edits_lists_a_new_dropin_and_follows_links() -> None:
    tree = tree_of(
        {"/etc/sysctl.conf": b"net.ipv4.tcp_tw_reuse = 0\n"},
        links={"/etc/sysctl.d/99-sysctl.conf": "/etc/sysctl.conf"},
    )
    new = tree.with_edits(
        {
            "/etc/sysctl.d/99-zz-portaudit.conf": b"net.core.somaxconn = 4096\n",
            "/etc/sysctl.conf": b"net.ipv4.tcp_tw_reuse = 1\n",
        }
    )
    m = boot_view(new)
    assert m.files == ("/etc/sysctl.d/99-sysctl.conf", "/etc/sysctl.d/99-zz-portaudit.conf")
    assert m.decide("net.ipv4.tcp_tw_reuse").value == "1"  # type: ignore[union-attr]
    assert boot_view(tree).files == ("/etc/sysctl.d/99-sysctl.conf",)  # the original is unchanged


def test_procps_reads_sysctl_conf_last_and_hidden_files() -> None:
    tree = tree_of(
        {
            "/etc/sysctl.conf": b"net.ipv4.tcp_tw_reuse = 1\n",
            "/etc/sysctl.d/.hidden.conf": b"net.core.somaxconn = 1\n",
        }
    )
    assert boot_view(tree).files == ()
    p = procps_view(tree)
    assert (p.value("net.ipv4.tcp_tw_reuse"), p.value("net.core.somaxconn")) == ("1", "1")


def _fix_root(tmp: Path, files: dict[str, str]) -> HostRoot:
    for rel, text in {
        "net/ipv4/tcp_tw_reuse": "2\n",
        "net/ipv4/ip_unprivileged_port_start": "1024\n",
        "net/ipv4/ip_local_reserved_ports": "\n",
    }.items():
        p = tmp / "proc/sys" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for rel, text in files.items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (tmp / "etc/sysctl.d").mkdir(parents=True, exist_ok=True)
    return HostRoot(proc=tmp / "proc", root=tmp)


def test_fix_edits_the_later_slash_key_instead_of_a_dropin_it_would_override(
    tmp_path: Path,
) -> None:
    host = _fix_root(tmp_path, {"etc/sysctl.d/zz-old.conf": "/net/ipv4/tcp_tw_reuse = 0\n"})
    plan = build_plan(
        host, [make_finding("TW-001", {"net.ipv4.tcp_tw_reuse": "1"}, severity="crit")]
    )
    assert [c.target for c in plan.changes] == ["/etc/sysctl.d/zz-old.conf"]
    apply_plan(host, plan)
    assert (tmp_path / "etc/sysctl.d/zz-old.conf").read_text() == "/net/ipv4/tcp_tw_reuse = 1\n"
    got = collect_persisted(host)
    assert isinstance(got, PersistedSysctl)
    a = effective(got, "net.ipv4.tcp_tw_reuse")
    assert a is not None and (a.value, a.file) == ("1", "/etc/sysctl.d/zz-old.conf")


def test_simulate_boot_writes_nothing(tmp_path: Path) -> None:
    host = _fix_root(tmp_path, {"etc/sysctl.d/50-a.conf": "net.ipv4.tcp_tw_reuse = 0\n"})
    from pathlib import PurePosixPath

    before = sorted(str(p) for p in tmp_path.rglob("*"))
    sim = simulate_boot(
        host, {PurePosixPath("/etc/sysctl.d/99-zz.conf"): b"net.ipv4.tcp_tw_reuse = 1\n"}
    )
    assert sim.effective["net.ipv4.tcp_tw_reuse"].file == "/etc/sysctl.d/99-zz.conf"
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "auditor", *args], capture_output=True, text=True, check=False
    )


def test_boot_command_json_and_table(tmp_path: Path) -> None:
    host = _fix_root(
        tmp_path,
        {
            "etc/sysctl.d/10-lo.conf": "net.ipv4.conf.lo.rp_filter = 0\n",
            "usr/lib/sysctl.d/50-default.conf": SYSTEMD_50_DEFAULT.decode(),
            "etc/sysctl.conf": "net.ipv4.tcp_tw_reuse = 1\n",
        },
    )
    args = ("boot", "--root", str(host.root), "--proc", str(host.proc))
    out = run_cli(*args, "--format", "json")
    assert out.returncode == 0, out.stderr
    keys = {k["key"]: k for k in json.loads(out.stdout)["keys"]}
    assert keys[LO]["boot"] == "0" and keys[LO]["unless_value"] == "2"
    assert keys[DFLT]["where"] == "/usr/lib/sysctl.d/50-default.conf:1"
    reuse = keys["net.ipv4.tcp_tw_reuse"]
    assert (reuse["boot"], reuse["runtime"], reuse["procps"]) == (None, "2", "1")
    table = run_cli(*args, LO)
    assert table.returncode == 0, table.stderr
    assert "0 (or 2)" in table.stdout and "10-lo.conf:1" in table.stdout


@pytest.mark.parametrize("key", ["../etc/passwd", "net..ipv4"])
def test_boot_command_bad_key_is_one_line_exit_2(key: str) -> None:
    out = run_cli("boot", key)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "invalid sysctl key" in out.stderr


PERSIST = Path(__file__).parent / "fixtures" / "persist"


@pytest.mark.parametrize("case", sorted(p.name for p in PERSIST.iterdir() if p.is_dir()))
def test_facts_effective_map_is_what_portaudit_boot_prints(case: str, tmp_path: Path) -> None:
    host = HostRoot(proc=tmp_path, root=PERSIST / case)
    facts = collect_persisted(host)
    assert isinstance(facts, PersistedSysctl)
    out = run_cli("boot", "--root", str(host.root), "--proc", str(host.proc), "-f", "json")
    assert out.returncode == 0, out.stderr
    shown = {k["key"]: (k["boot"], k["where"]) for k in json.loads(out.stdout)["keys"] if k["boot"]}
    assert shown == {k: (v.value, f"{v.file}:{v.line}") for k, v in facts.effective.items()}


def test_debian13_key_only_in_sysctl_conf_is_unread() -> None:
    facts = collect_persisted(HostRoot(proc=PERSIST / "no-proc", root=PERSIST / "debian13"))
    assert isinstance(facts, PersistedSysctl)
    assert all(a.file == "/etc/sysctl.conf" for a in facts.unread.values())
    assert set(facts.unread).isdisjoint(facts.effective)
    debian12 = collect_persisted(HostRoot(proc=PERSIST / "no-proc", root=PERSIST / "debian12"))
    assert isinstance(debian12, PersistedSysctl) and debian12.unread == {}


def test_a_directory_named_conf_is_listed_and_hides_the_vendor_file(tmp_path: Path) -> None:
    """systemd 252 lists any `*.conf` entry (measured: --cat-config fails on the directory), so
    it masks the same name in /usr/lib; the model reports it as unreadable."""
    (tmp_path / "etc/sysctl.d/50-x.conf").mkdir(parents=True)
    (tmp_path / "usr/lib/sysctl.d").mkdir(parents=True)
    (tmp_path / "usr/lib/sysctl.d/50-x.conf").write_text("net.core.somaxconn = 7\n")
    m = boot_view(SysctlTree.read(HostRoot(proc=tmp_path / "proc", root=tmp_path)))
    assert m.files == ()
    assert [(p.file, p.kind) for p in m.problems] == [("/etc/sysctl.d/50-x.conf", "unreadable")]
    assert m.decide("net.core.somaxconn") is None
