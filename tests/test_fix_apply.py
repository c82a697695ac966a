"""Planning and applying on fixture roots: a fake `proc/sys` (plain files) and a temp `/etc`.

Runtime writes here go to plain files under the temp dir, never to a kernel; the real-kernel
counterparts are in test_fix_netns.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from auditor.engine.report import Finding
from auditor.errors import FixError, InputError, RefusedError, UsageError
from auditor.fix.apply import apply_plan, apply_rollback, plan_rollback
from auditor.fix.history import render_history
from auditor.fix.journal import ChangeSet, FileRecord, Journal
from auditor.fix.plan import render_plan
from auditor.fix.prepare import build_plan
from auditor.hostfs import HostRoot
from tests.helpers import make_finding

RANGE = "net.ipv4.ip_local_port_range"
REUSE = "net.ipv4.tcp_tw_reuse"
DROPIN = "etc/sysctl.d/99-zz-portaudit.conf"

RUNTIME = {
    "net/ipv4/ip_local_port_range": "32768\t60999\n",
    "net/ipv4/ip_unprivileged_port_start": "1024\n",
    "net/ipv4/ip_local_reserved_ports": "\n",
    "net/ipv4/tcp_tw_reuse": "2\n",
    "net/core/somaxconn": "4096\n",
    "fs/file-max": "9223372036854775807\n",
}


def finding(rule: str, sysctl: dict[str, str]) -> Finding:
    return make_finding(rule, sysctl, severity="crit")


EPH = finding("EPH-001", {RANGE: "10000 65535"})
TW = finding("TW-001", {REUSE: "1"})


def make_root(tmp: Path, files: dict[str, bytes | str] | None = None) -> HostRoot:
    for rel, text in RUNTIME.items():
        p = tmp / "proc/sys" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (tmp / "etc/sysctl.d").mkdir(parents=True, exist_ok=True)
    for rel, data in (files or {}).items():
        p = tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return HostRoot(proc=tmp / "proc", root=tmp)


def snapshot(tmp: Path) -> dict[str, tuple[str, str, int]]:
    """Every file and link under etc/ and proc/: (kind, content hash or link target, mode)."""
    out: dict[str, tuple[str, str, int]] = {}
    for top in ("etc", "proc", "usr", "run"):
        base = tmp / top
        if not base.exists():
            continue
        for p in sorted(base.rglob("*")):
            st = os.lstat(p)
            rel = str(p.relative_to(tmp))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), 0)
            elif p.is_file() and top == "proc":
                # runtime values compare as the kernel reads them: whitespace folded
                out[rel] = ("value", " ".join(p.read_text().split()), st.st_mode)
            elif p.is_file():
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode)
            else:
                out[rel] = ("dir", "", st.st_mode)
    return out


def runtime(tmp: Path, rel: str) -> str:
    return " ".join((tmp / "proc/sys" / rel).read_text().split())


def fix(host: HostRoot, findings: list[Finding], **kw: object) -> None:
    plan = build_plan(host, findings, **kw)  # type: ignore[arg-type]
    assert not plan.empty
    apply_plan(host, plan)


def test_new_dropin_written_runtime_applied_second_run_no_change(tmp_path: Path) -> None:
    host = make_root(tmp_path, {"etc/sysctl.d/10-net.conf": "net.ipv4.tcp_tw_reuse = 0\n"})
    plan = build_plan(host, [EPH, TW])
    text = render_plan(plan)
    assert "+++ /etc/sysctl.d/99-zz-portaudit.conf" in text
    assert "boot '0' (/etc/sysctl.d/10-net.conf:1)" in text
    apply_plan(host, plan)
    assert (tmp_path / DROPIN).read_text() == (
        "# portaudit fix (EPH-001)\nnet.ipv4.ip_local_port_range = 10000 65535\n"
        "# portaudit fix (TW-001)\nnet.ipv4.tcp_tw_reuse = 1\n"
    )
    assert os.stat(tmp_path / DROPIN).st_mode & 0o777 == 0o644
    assert runtime(tmp_path, "net/ipv4/ip_local_port_range") == "10000 65535"
    assert runtime(tmp_path, "net/ipv4/tcp_tw_reuse") == "1"
    assert (tmp_path / "etc/sysctl.d/10-net.conf").read_text() == "net.ipv4.tcp_tw_reuse = 0\n"

    before = snapshot(tmp_path)
    journal_before = (tmp_path / "var/lib/portaudit/journal.json").read_bytes()
    again = build_plan(host, [EPH, TW])
    assert again.empty
    assert "already done" in render_plan(again)
    assert snapshot(tmp_path) == before
    assert (tmp_path / "var/lib/portaudit/journal.json").read_bytes() == journal_before
    # backups and journal never land in a sysctl directory
    assert sorted(p.name for p in (tmp_path / "etc/sysctl.d").iterdir()) == [
        "10-net.conf",
        "99-zz-portaudit.conf",
    ]


ODD = (
    b"# header comment\r\n"
    b"\r\n"
    b"   net.ipv4.tcp_tw_reuse\t=   0   \r\n"
    b"; semicolon comment\r\n"
    b"net.ipv4.ip_local_port_range = 20000 30000\r\n"
    b"net.core.somaxconn=128\r\n"
    b"net.ipv4.ip_local_port_range=20000   30001\r\n"
    b"kernel.unknown_thing = 5"
)


def test_edit_in_place_preserves_every_other_byte(tmp_path: Path) -> None:
    host = make_root(tmp_path, {"etc/sysctl.d/99-zz-portaudit.conf": ODD})
    os.chmod(tmp_path / DROPIN, 0o600)
    if os.geteuid() == 0:
        os.chown(tmp_path / DROPIN, 1234, 5678)
    fix(host, [EPH, TW])
    got = (tmp_path / DROPIN).read_bytes()
    assert got == (
        b"# header comment\r\n"
        b"\r\n"
        b"   net.ipv4.tcp_tw_reuse\t=   1   \r\n"
        b"; semicolon comment\r\n"
        b"net.ipv4.ip_local_port_range = 20000 30000\r\n"
        b"net.core.somaxconn=128\r\n"
        b"net.ipv4.ip_local_port_range=10000 65535\r\n"
        b"kernel.unknown_thing = 5"
    )
    st = os.stat(tmp_path / DROPIN)
    assert st.st_mode & 0o777 == 0o600
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_append_to_file_without_final_newline(tmp_path: Path) -> None:
    host = make_root(tmp_path, {DROPIN: b"net.core.somaxconn = 128"})
    fix(host, [TW])
    assert (tmp_path / DROPIN).read_bytes() == (
        b"net.core.somaxconn = 128\n# portaudit fix (TW-001)\nnet.ipv4.tcp_tw_reuse = 1\n"
    )


def test_symlinked_target_followed_link_kept(tmp_path: Path) -> None:
    host = make_root(
        tmp_path,
        {"etc/sysctl.conf": "# main file\nnet.ipv4.tcp_tw_reuse = 0\n"},
    )
    (tmp_path / "etc/sysctl.d/99-sysctl.conf").symlink_to("../sysctl.conf")
    fix(host, [TW], file="/etc/sysctl.conf")
    assert (tmp_path / "etc/sysctl.d/99-sysctl.conf").is_symlink()
    assert os.readlink(tmp_path / "etc/sysctl.d/99-sysctl.conf") == "../sysctl.conf"
    assert (tmp_path / "etc/sysctl.conf").read_text() == "# main file\nnet.ipv4.tcp_tw_reuse = 1\n"
    assert not (tmp_path / DROPIN).exists()


def test_default_dropin_that_is_an_absolute_symlink_stays_inside_root(tmp_path: Path) -> None:
    host = make_root(tmp_path, {"etc/portaudit-sysctl.conf": "net.core.somaxconn = 1\n"})
    # an absolute target means <root>/etc/..., never the running host's /etc
    (tmp_path / DROPIN).symlink_to("/etc/portaudit-sysctl.conf")
    with pytest.raises(RefusedError, match="not an administrator's sysctl file"):
        build_plan(host, [TW])
    (tmp_path / DROPIN).unlink()
    (tmp_path / "etc/sysctl.d/real.conf").write_text("net.core.somaxconn = 1\n")
    (tmp_path / DROPIN).symlink_to("/etc/sysctl.d/real.conf")
    fix(host, [TW])
    assert (tmp_path / DROPIN).is_symlink()
    assert "net.ipv4.tcp_tw_reuse = 1" in (tmp_path / "etc/sysctl.d/real.conf").read_text()


def test_sysctl_conf_not_read_at_boot_is_refused(tmp_path: Path) -> None:
    host = make_root(tmp_path, {"etc/sysctl.conf": "net.core.somaxconn = 1\n"})  # Debian 13
    before = snapshot(tmp_path)
    with pytest.raises(RefusedError, match="not read at boot"):
        build_plan(host, [TW], file="/etc/sysctl.conf")
    assert snapshot(tmp_path) == before


def test_later_etc_file_overriding_is_edited_instead(tmp_path: Path) -> None:
    late = "etc/sysctl.d/zz-late.conf"
    host = make_root(tmp_path, {late: "# keep me\nnet.ipv4.tcp_tw_reuse = 0\n"})
    plan = build_plan(host, [TW])
    assert [c.target for c in plan.changes] == ["/etc/sysctl.d/zz-late.conf"]
    apply_plan(host, plan)
    assert (tmp_path / late).read_text() == "# keep me\nnet.ipv4.tcp_tw_reuse = 1\n"
    assert not (tmp_path / DROPIN).exists()
    # backup of the edited file kept under var/lib/portaudit
    backups = list((tmp_path / "var/lib/portaudit/backups").iterdir())
    assert [b.read_text() for b in backups] == ["# keep me\nnet.ipv4.tcp_tw_reuse = 0\n"]


def test_later_package_file_overriding_is_refused_with_file_and_line(tmp_path: Path) -> None:
    host = make_root(
        tmp_path, {"usr/lib/sysctl.d/zz-vendor.conf": "# vendor\n\nnet.ipv4.tcp_tw_reuse = 0\n"}
    )
    before = snapshot(tmp_path)
    with pytest.raises(RefusedError, match=r"/usr/lib/sysctl.d/zz-vendor.conf:3 sets") as exc:
        build_plan(host, [TW])
    assert exc.value.exit_code == 2
    assert snapshot(tmp_path) == before


def test_masked_target_refused(tmp_path: Path) -> None:
    host = make_root(tmp_path)
    (tmp_path / DROPIN).symlink_to("/dev/null")
    with pytest.raises(RefusedError, match="masked"):
        build_plan(host, [TW])


@pytest.mark.parametrize(
    "path",
    [
        "../../etc/passwd",
        "/etc/sysctl.d/../../root/x.conf",
        "/proc/sys/net/ipv4/tcp_tw_reuse",
        "/etc/passwd",
        "/etc/sysctl.d/.hidden.conf",
        "/etc/sysctl.d/sub/x.conf",
        "/etc/sysctl.d/x.txt",
        "etc/sysctl.conf",
        "/etc/sysctl.d/a\nb.conf",
    ],
)
def test_bad_file_paths_refused_nothing_written(tmp_path: Path, path: str) -> None:
    host = make_root(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(UsageError) as exc:
        build_plan(host, [TW], file=path)
    assert exc.value.exit_code == 2
    assert snapshot(tmp_path) == before


def test_file_link_escaping_root_resolves_inside_root(tmp_path: Path) -> None:
    host = make_root(tmp_path)
    (tmp_path / "etc/sysctl.d/50-x.conf").symlink_to("../../../../../../../etc/shadow")
    with pytest.raises(RefusedError, match="not an administrator's sysctl file"):
        build_plan(host, [TW], file="/etc/sysctl.d/50-x.conf")


@pytest.mark.parametrize(
    ("sysctl", "match"),
    [
        ({RANGE: "10000 65535\nfs.file-max = 1"}, "control characters"),
        ({"net.core.somaxconn": "8192\n"}, "control characters"),
        ({"net.ipv4.no_such_key": "1"}, "not a key portaudit fix writes"),
        ({"../../../etc/passwd": "1"}, "invalid sysctl key"),
        ({RANGE: "500 600"}, "below ip_unprivileged_port_start"),
    ],
)
def test_bad_rule_fixes_refused_nothing_written(
    tmp_path: Path, sysctl: dict[str, str], match: str
) -> None:
    host = make_root(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises((InputError, UsageError), match=match) as exc:
        build_plan(host, [TW, finding("BAD-001", sysctl)])
    assert exc.value.exit_code == 2
    assert snapshot(tmp_path) == before


def test_no_runtime_only_persists(tmp_path: Path) -> None:
    host = make_root(tmp_path)
    fix(host, [TW], runtime=False)
    assert runtime(tmp_path, "net/ipv4/tcp_tw_reuse") == "2"
    assert "net.ipv4.tcp_tw_reuse = 1" in (tmp_path / DROPIN).read_text()


def test_runtime_only_when_boot_already_right(tmp_path: Path) -> None:
    host = make_root(tmp_path, {"etc/sysctl.d/10-net.conf": "net.ipv4.tcp_tw_reuse=1\n"})
    plan = build_plan(host, [TW])
    assert plan.files == () and [c.write_runtime for c in plan.changes] == [True]
    apply_plan(host, plan)
    assert runtime(tmp_path, "net/ipv4/tcp_tw_reuse") == "1"
    assert not (tmp_path / DROPIN).exists()


def test_range_that_cannot_get_wider_not_changed(tmp_path: Path) -> None:
    host = make_root(tmp_path)
    (tmp_path / "proc/sys/net/ipv4/ip_local_port_range").write_text("1024\t65535\n")
    plan = build_plan(host, [EPH])
    assert plan.empty
    assert any("cannot usefully get wider" in n for n in plan.notes)


def test_narrower_range_from_another_rule_not_applied(tmp_path: Path) -> None:
    host = make_root(tmp_path)
    (tmp_path / "proc/sys/net/ipv4/ip_local_port_range").write_text("1024\t65535\n")
    plan = build_plan(host, [finding("XYZ-001", {RANGE: "32768 60999"})])
    assert plan.empty
    assert any("narrower" in n for n in plan.notes)


def test_parity_fix_applies_although_it_drops_one_port(tmp_path: Path) -> None:
    """The guard against narrowing used to drop EPH-005's safe fix, so it never applied."""
    host = make_root(tmp_path)
    (tmp_path / "proc/sys/net/ipv4/ip_local_port_range").write_text("32768\t61000\n")
    fix(host, [finding("EPH-005", {RANGE: "32768 60999"})])
    assert runtime(tmp_path, "net/ipv4/ip_local_port_range") == "32768 60999"
    assert f"{RANGE} = 32768 60999" in (tmp_path / DROPIN).read_text()


# --- injected failures: everything restored, byte for byte --------------------------------


def _two_file_root(tmp_path: Path) -> HostRoot:
    """TW goes to the default drop-in; the range is overridden by a later /etc file."""
    return make_root(
        tmp_path,
        {
            DROPIN: "# existing\nnet.core.somaxconn = 1024\n",
            "etc/sysctl.d/zz-late.conf": "net.ipv4.ip_local_port_range = 40000 40099\r\n",
        },
    )


def _fail_on_second(
    real: Callable[..., object], pred: Callable[..., bool]
) -> Callable[..., object]:
    calls = {"n": 0}

    def wrapper(*args: object, **kw: object) -> object:
        if pred(*args):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(5, "Input/output error (injected)")
        return real(*args, **kw)

    return wrapper


def _is_conf(src: object, dst: object) -> bool:
    return str(dst).endswith(".conf")


def _fd_is_sysctl_d(fd: object) -> bool:
    try:
        return "/etc/sysctl.d/" in os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False


@pytest.mark.parametrize("inject", ["replace", "fsync"])
def test_failure_in_second_file_restores_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inject: str
) -> None:
    host = _two_file_root(tmp_path)
    plan = build_plan(host, [EPH, TW])
    assert len(plan.files) == 2
    before = snapshot(tmp_path)
    if inject == "replace":
        monkeypatch.setattr(os, "replace", _fail_on_second(os.replace, _is_conf))
    else:
        monkeypatch.setattr(os, "fsync", _fail_on_second(os.fsync, _fd_is_sysctl_d))
    with pytest.raises(FixError, match="restored") as exc:
        apply_plan(host, plan)
    assert exc.value.exit_code == 3
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    assert runtime(tmp_path, "net/ipv4/ip_local_port_range") == "32768 60999"
    assert runtime(tmp_path, "net/ipv4/tcp_tw_reuse") == "2"
    assert not list((tmp_path / "etc/sysctl.d").glob(".*"))  # no temp file left behind
    assert Journal(host).load()[-1].state == "failed"
    assert plan_rollback(host) is None


def test_failure_creating_new_file_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = make_root(tmp_path)
    plan = build_plan(host, [TW])
    before = snapshot(tmp_path)

    def boom(src: object, dst: object, **kw: object) -> None:
        raise OSError(30, "Read-only file system (injected)")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(FixError, match="Read-only file system"):
        apply_plan(host, plan)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_verify_failure_restores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = make_root(tmp_path)
    plan = build_plan(host, [TW])
    before = snapshot(tmp_path)
    import auditor.fix.apply as apply_mod

    monkeypatch.setattr(apply_mod, "effective", lambda persisted, key: None)
    with pytest.raises(FixError, match="boot would apply nothing"):
        apply_plan(host, plan)
    assert snapshot(tmp_path) == before


def test_host_changed_since_plan_refused(tmp_path: Path) -> None:
    host = make_root(tmp_path)
    plan = build_plan(host, [TW])
    (tmp_path / "proc/sys/net/ipv4/tcp_tw_reuse").write_text("0\n")
    with pytest.raises(RefusedError, match="changed since the plan"):
        apply_plan(host, plan)
    assert not (tmp_path / DROPIN).exists()


def test_lock_held_refused(tmp_path: Path) -> None:
    import fcntl

    host = make_root(tmp_path)
    plan = build_plan(host, [TW])
    lockdir = tmp_path / "var/lib/portaudit"
    lockdir.mkdir(parents=True)
    with open(lockdir / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        # flock locks belong to the open file description: a second open() conflicts
        with pytest.raises(RefusedError, match="another portaudit"):
            apply_plan(host, plan)
    assert not (tmp_path / DROPIN).exists()


# --- rollback ------------------------------------------------------------------------------


def test_rollback_restores_files_and_runtime_and_is_idempotent(tmp_path: Path) -> None:
    host = _two_file_root(tmp_path)
    before = snapshot(tmp_path)
    fix(host, [EPH, TW])
    assert snapshot(tmp_path) != before
    rb = plan_rollback(host)
    assert rb is not None and len(rb.files) == 2 and len(rb.runtime) == 2
    apply_rollback(host, rb)
    assert snapshot(tmp_path) == before
    assert plan_rollback(host) is None


def test_rollback_removes_created_file_and_dirs(tmp_path: Path) -> None:
    host = make_root(tmp_path)
    (tmp_path / "etc/sysctl.d").rmdir()
    before = snapshot(tmp_path)
    fix(host, [TW])
    assert (tmp_path / DROPIN).exists()
    rb = plan_rollback(host)
    assert rb is not None
    apply_rollback(host, rb)
    assert snapshot(tmp_path) == before


def test_rollback_refuses_over_a_later_edit(tmp_path: Path) -> None:
    host = make_root(tmp_path)
    fix(host, [TW])
    with open(tmp_path / DROPIN, "a") as fh:
        fh.write("net.core.somaxconn = 8192\n")
    with pytest.raises(RefusedError, match="changed since fix"):
        plan_rollback(host)


def test_rollback_undoes_the_latest_then_the_one_before(tmp_path: Path) -> None:
    host = make_root(tmp_path)
    original = snapshot(tmp_path)
    fix(host, [TW])
    after_first = snapshot(tmp_path)
    fix(host, [EPH])
    rb = plan_rollback(host)
    assert rb is not None
    apply_rollback(host, rb)
    assert snapshot(tmp_path) == after_first
    rb = plan_rollback(host)
    assert rb is not None and rb.changeset.rules == ("TW-001",)
    apply_rollback(host, rb)
    assert snapshot(tmp_path) == original
    assert plan_rollback(host) is None


def test_rollback_id_refused_while_a_later_set_changed_the_same_file(tmp_path: Path) -> None:
    host = make_root(tmp_path)
    original = snapshot(tmp_path)
    fix(host, [TW])
    fix(host, [EPH])
    first, second = Journal(host).load()
    with pytest.raises(RefusedError, match=f"roll back {second.id} first"):
        plan_rollback(host, first.id)
    rb = plan_rollback(host, second.id)
    assert rb is not None
    apply_rollback(host, rb)
    rb = plan_rollback(host, first.id)
    assert rb is not None
    apply_rollback(host, rb)
    assert snapshot(tmp_path) == original
    with pytest.raises(RefusedError, match="rolled-back"):
        plan_rollback(host, first.id)
    with pytest.raises(UsageError, match="no change set"):
        plan_rollback(host, "nope")


def test_rollback_id_of_an_independent_earlier_set(tmp_path: Path) -> None:
    host = make_root(tmp_path)
    fix(host, [TW], file="/etc/sysctl.d/50-a.conf")
    fix(host, [EPH], file="/etc/sysctl.d/60-b.conf")
    first, _ = Journal(host).load()
    rb = plan_rollback(host, first.id)
    assert rb is not None
    apply_rollback(host, rb)
    assert runtime(tmp_path, "net/ipv4/tcp_tw_reuse") == "2"
    assert not (tmp_path / "etc/sysctl.d/50-a.conf").exists()
    assert (tmp_path / "etc/sysctl.d/60-b.conf").exists()
    assert runtime(tmp_path, "net/ipv4/ip_local_port_range") == "10000 65535"
    listed = render_history(host)
    assert first.id in listed and "rolled-back" in listed and "applied" in listed


def test_journal_keeps_a_bounded_history(tmp_path: Path) -> None:
    host = make_root(tmp_path)
    journal = Journal(host)
    with journal.lock():
        for i in range(5):
            backup = journal.write_backup(f"s{i}", 0, b"x")
            record = FileRecord("/etc/sysctl.conf", "/etc/sysctl.conf", backup, "", "")
            journal.add(ChangeSet(f"s{i}", 0.0, "", "applied", (), (record,), ()), keep=3)
    assert [c.id for c in journal.load()] == ["s2", "s3", "s4"]
    assert sorted(p.name for p in journal.backups.iterdir()) == [
        "s2.0.bak",
        "s3.0.bak",
        "s4.0.bak",
    ]


def test_rollback_failure_leaves_fix_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = _two_file_root(tmp_path)
    fix(host, [EPH, TW])
    applied = snapshot(tmp_path)
    rb = plan_rollback(host)
    assert rb is not None
    monkeypatch.setattr(os, "replace", _fail_on_second(os.replace, _is_conf))
    with pytest.raises(FixError, match="rollback failed"):
        apply_rollback(host, rb)
    monkeypatch.undo()
    assert snapshot(tmp_path) == applied
    assert plan_rollback(host) is not None


def test_a_later_fix_of_the_same_line_renames_its_comment_and_rollback_restores_bytes(
    tmp_path: Path,
) -> None:
    """The comment above a line fix wrote names the rules whose value the line holds now; each
    rollback puts back exactly the bytes the change set found."""
    host = make_root(tmp_path)
    (tmp_path / "proc/sys/net/ipv4/ip_local_port_range").write_text("32768\t61000\n")
    original = snapshot(tmp_path)
    fix(host, [finding("EPH-005", {RANGE: "32768 60999"})])
    first = (tmp_path / DROPIN).read_bytes()
    assert first == f"# portaudit fix (EPH-005)\n{RANGE} = 32768 60999\n".encode()
    fix(host, [EPH])
    assert (tmp_path / DROPIN).read_text() == f"# portaudit fix (EPH-001)\n{RANGE} = 10000 65535\n"
    rb = plan_rollback(host)
    assert rb is not None
    apply_rollback(host, rb)
    assert (tmp_path / DROPIN).read_bytes() == first
    rb = plan_rollback(host)
    assert rb is not None
    apply_rollback(host, rb)
    assert snapshot(tmp_path) == original
