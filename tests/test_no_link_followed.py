"""Nothing portaudit writes as root goes through a link or lands outside `--root`.

Each case plants a link where portaudit writes (the `-o` file, the unit directory, the state
directory and its files, fix's drop-in after the plan was made) and checks that the file the
link points at, outside the root, is untouched and that the run says why it refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from auditor import safepath
from auditor.errors import AuditorError, FixError, RefusedError
from auditor.fix import apply as apply_mod
from auditor.fix.apply import apply_plan
from auditor.fix.journal import Journal
from auditor.fix.prepare import build_plan
from auditor.safepath import Dir, LinkRefused
from tests.helpers import assert_one_line_error, copy_root, root_args, run_cli
from tests.test_fix_apply import DROPIN, TW, make_root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside every root, holding a file nobody may overwrite."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "precious").write_text("keep me\n")
    return d


def listing(d: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in d.iterdir()}


@pytest.mark.parametrize("shared", ["sticky", "owned-by-another-user"])
def test_output_link_is_replaced_not_written_through(
    tmp_path: Path, outside: Path, shared: str
) -> None:
    """node_exporter's textfile directory is often the prometheus user's: a link its owner
    (or anyone, in a sticky world-writable one) planted there is replaced, never followed."""
    root = copy_root("busy-client", tmp_path)
    out = tmp_path / "textfile" / "portaudit.prom"
    out.parent.mkdir()
    if shared == "sticky":
        out.parent.chmod(0o1777)
    else:
        os.chown(out.parent, 65534, 65534)
    out.symlink_to(outside / "precious")
    got = run_cli("audit", *root_args(root), "--format", "prometheus", "--fail-on", "never",
                  "--no-state", "-o", str(out))  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert listing(outside) == {"precious": "keep me\n"}
    assert not out.is_symlink() and "portaudit_" in out.read_text()
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)


def test_dangling_output_link_creates_nothing_outside(tmp_path: Path, outside: Path) -> None:
    root = copy_root("busy-client", tmp_path)
    out = tmp_path / "textfile" / "portaudit.prom"
    out.parent.mkdir(mode=0o777)
    out.parent.chmod(0o1777)
    out.symlink_to(outside / "new.prom")
    got = run_cli("audit", *root_args(root), "--fail-on", "never", "--no-state", "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert listing(outside) == {"precious": "keep me\n"}
    assert out.is_file() and not out.is_symlink()


def test_output_to_dev_stdout_is_a_redirection(tmp_path: Path) -> None:
    """`-o /dev/stdout`: a link in a directory only root may change is followed into the pipe,
    and /dev/stdout stays what it was."""
    root = copy_root("busy-client", tmp_path)
    before = os.readlink("/dev/stdout")
    got = run_cli("audit", *root_args(root), "--format", "json", "--fail-on", "never",
                  "--no-state", "-o", "/dev/stdout")  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert '"summary"' in got.stdout
    assert os.readlink("/dev/stdout") == before


def test_fifo_planted_in_a_shared_directory_is_refused(tmp_path: Path) -> None:
    """Writing into another user's FIFO would hang the timer until they read it."""
    root = copy_root("busy-client", tmp_path)
    out = tmp_path / "textfile" / "portaudit.prom"
    out.parent.mkdir()
    out.parent.chmod(0o1777)
    os.mkfifo(out)
    got = run_cli("audit", *root_args(root), "--fail-on", "never", "--no-state", "-o", str(out))
    assert_one_line_error(got, str(out), "not a regular file")
    assert stat.S_ISFIFO(out.lstat().st_mode)


def test_systemd_install_refuses_a_unit_dir_linked_out_of_the_root(
    tmp_path: Path, outside: Path
) -> None:
    root = tmp_path / "root"
    (root / "etc/systemd").mkdir(parents=True)
    (root / "etc/systemd/system").symlink_to(outside)
    got = run_cli("systemd", "install", "--root", str(root))
    assert_one_line_error(got, "etc/systemd/system", "symbolic link")
    assert listing(outside) == {"precious": "keep me\n"}


def test_systemd_install_refuses_a_wants_dir_linked_out(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/timers.target.wants").symlink_to(outside)
    got = run_cli("systemd", "install", "--root", str(root))
    assert_one_line_error(got, "timers.target.wants", "symbolic link")
    assert listing(outside) == {"precious": "keep me\n"}


@pytest.mark.parametrize("link", ["var/lib/portaudit", "var/lib/portaudit/counters"])
def test_counter_state_never_follows_a_link(tmp_path: Path, outside: Path, link: str) -> None:
    root = copy_root("busy-client", tmp_path)
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    (root / link).symlink_to(outside)
    got = run_cli("audit", *root_args(root), "--fail-on", "never", "--state")
    assert got.returncode == 0, got.stderr
    assert "cannot save counter state" in got.stderr and "symbolic link" in got.stderr
    assert listing(outside) == {"precious": "keep me\n"}


@pytest.mark.parametrize(
    "link",
    [
        "var/lib/portaudit",
        "var/lib/portaudit/backups",
        "var/lib/portaudit/journal.json",
        "var/lib/portaudit/lock",
    ],
)
def test_fix_state_never_follows_a_link(tmp_path: Path, outside: Path, link: str) -> None:
    host = make_root(tmp_path / "root", {DROPIN: "net.core.somaxconn = 1024\n"})
    (host.root / link).parent.mkdir(parents=True, exist_ok=True)
    dangling = outside / "made-by-portaudit"
    (host.root / link).symlink_to(outside if link.endswith(("portaudit", "backups")) else dangling)
    plan = build_plan(host, [TW])
    with pytest.raises(AuditorError) as exc:
        apply_plan(host, plan)
    assert exc.value.exit_code == 2
    assert "symbolic link" in str(exc.value)
    assert listing(outside) == {"precious": "keep me\n"}
    assert (host.root / DROPIN).read_text() == "net.core.somaxconn = 1024\n"


def test_link_planted_after_the_check_is_refused_at_write_time(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drop-in becomes a link to a file outside the root after fix checked it and before
    it writes: the write refuses, nothing lands outside, and the run says what happened."""
    host = make_root(tmp_path / "root")
    plan = build_plan(host, [TW])
    target = outside / "sysctl.conf"
    check = apply_mod._check_unchanged

    def check_then_plant(*args: object) -> None:
        check(*args)  # type: ignore[arg-type]
        (host.root / DROPIN).symlink_to(target)

    monkeypatch.setattr(apply_mod, "_check_unchanged", check_then_plant)
    with pytest.raises(FixError) as exc:
        apply_plan(host, plan)
    assert "symbolic link" in str(exc.value)
    assert not target.exists()
    assert listing(outside) == {"precious": "keep me\n"}
    assert os.readlink(host.root / DROPIN) == str(target)
    assert Journal(host).load()[-1].state == "failed"


def test_link_planted_before_confirmation_is_refused(tmp_path: Path, outside: Path) -> None:
    host = make_root(tmp_path / "root")
    plan = build_plan(host, [TW])
    (host.root / DROPIN).symlink_to(outside / "sysctl.conf")
    with pytest.raises(RefusedError, match="symbolic link"):
        apply_plan(host, plan)
    assert listing(outside) == {"precious": "keep me\n"}


@pytest.mark.parametrize("openat2", [True, False])
def test_directory_walk_refuses_links_with_and_without_openat2(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch, openat2: bool
) -> None:
    if not openat2:
        monkeypatch.setattr(safepath._Openat2, "available", False)
    (tmp_path / "root/etc").mkdir(parents=True)
    (tmp_path / "root/etc/sysctl.d").symlink_to(outside)
    with Dir.open(tmp_path / "root") as top:
        with pytest.raises(LinkRefused):
            top.subdir("etc/sysctl.d")
        with pytest.raises(LinkRefused):
            top.subdir("etc/sysctl.d/x", create=True)
        with pytest.raises(OSError, match=r"'\.\.'"):
            top.subdir("etc/../..")
        with top.subdir("etc") as etc, pytest.raises(LinkRefused):
            etc.read("sysctl.d")
    assert listing(outside) == {"precious": "keep me\n"}


def test_new_directories_get_their_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        made = safepath.replace_below(tmp_path, "/etc/sysctl.d/99-x.conf", b"a = 1\n")
    finally:
        os.umask(old)
    assert [str(p) for p in made] == ["/etc", "/etc/sysctl.d"]
    assert (tmp_path / "etc/sysctl.d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "etc/sysctl.d/99-x.conf").stat().st_mode & 0o777 == 0o644


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return int(child.stdout)


def test_stale_temp_files_of_ours_are_removed_by_the_next_write(tmp_path: Path) -> None:
    """A kill -9 between creating the temp file and the rename leaves a hidden file of ours in
    etc/sysctl.d; the next write there removes it. A live writer's temp and others' files stay."""
    host = make_root(tmp_path / "root")
    d = host.root / "etc/sysctl.d"
    dead = d / f".99-zz-portaudit.conf.portaudit-tmp.{_dead_pid()}"
    other_name = d / f".10-other.conf.portaudit-tmp.{_dead_pid()}.0a1b2c3d"
    live = d / f".99-zz-portaudit.conf.portaudit-tmp.{os.getpid()}.deadbeef"
    theirs = d / ".hidden-by-someone-else"
    for p in (dead, other_name, live, theirs):
        p.write_text("x")
    apply_plan(host, build_plan(host, [TW]))
    left = {p.name for p in d.iterdir()}
    assert dead.name not in left and other_name.name not in left
    assert {live.name, theirs.name, "99-zz-portaudit.conf"} <= left


def test_fix_makes_etc_sysctl_d_0755_whatever_the_umask(tmp_path: Path) -> None:
    """systemd-sysctl reads the directory as root, but tools and operators list it as users."""
    host = make_root(tmp_path / "root")
    (host.root / "etc/sysctl.d").rmdir()
    plan = build_plan(host, [TW])
    old = os.umask(0o077)
    try:
        apply_plan(host, plan)
    finally:
        os.umask(old)
    assert (host.root / "etc/sysctl.d").stat().st_mode & 0o777 == 0o755
    assert (host.root / DROPIN).stat().st_mode & 0o777 == 0o644


def test_restore_behind_a_new_link_is_reported_failed_not_restored(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """etc/sysctl.d is swapped for a link after fix wrote into it: the restore must not follow
    the link, and the message must not claim the files were restored."""
    host = make_root(tmp_path / "root")
    plan = build_plan(host, [TW])
    moved = tmp_path / "moved-sysctl.d"

    def swap_then_fail(*args: object) -> None:
        (host.root / "etc/sysctl.d").rename(moved)
        (host.root / "etc/sysctl.d").symlink_to(outside)
        raise FixError("injected verify failure")

    monkeypatch.setattr(apply_mod, "_verify", swap_then_fail)
    with pytest.raises(FixError) as exc:
        apply_plan(host, plan)
    assert "restore FAILED" in str(exc.value) and "were restored" not in str(exc.value)
    assert listing(outside) == {"precious": "keep me\n"}
    assert Journal(host).load()[-1].state == "restore-failed"


def test_runtime_write_never_follows_a_link_under_proc(tmp_path: Path, outside: Path) -> None:
    """A `--proc` tree is data: a sysctl file there that is a link is not written through."""
    host = make_root(tmp_path / "root")
    value = host.proc / "sys/net/ipv4/tcp_tw_reuse"
    (outside / "value").write_text("2\n")
    value.unlink()
    value.symlink_to(outside / "value")
    plan = build_plan(host, [TW])
    with pytest.raises(FixError, match="tcp_tw_reuse"):
        apply_plan(host, plan)
    assert (outside / "value").read_text() == "2\n"
    assert not (host.root / DROPIN).exists()
