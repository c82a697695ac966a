"""Acceptance: `audit -o` never writes through a link another user could have planted on the
way to the file, only through links root (or the caller) made.

The textfile directory's parent is often writable by a service user (node_exporter), and
`-o` may point into a world-writable directory; a link planted there as a directory
component would send root's write anywhere with the name the operator chose.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from tests.helpers import ROOTS, run_cli

BASE = ROOTS / "busy-client"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to make a link owned by another user (lchown)"
)


def _audit_to(out: Path) -> tuple[int, str]:
    run = run_cli(
        "audit",
        "--root",
        str(BASE),
        "--proc",
        str(BASE / "proc"),
        "--format",
        "prometheus",
        "-o",
        str(out),
    )
    return run.returncode, run.stderr


def _nobody() -> tuple[int, int]:
    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


@needs_root
@pytest.mark.parametrize("mode", [0o1777, 0o777])
def test_a_directory_link_planted_by_another_user_is_refused(tmp_path: Path, mode: int) -> None:
    victim_dir = tmp_path / "out"
    victim_dir.mkdir()
    pub = tmp_path / "pub"
    pub.mkdir()
    pub.chmod(mode)
    link = pub / "textfile"
    link.symlink_to(victim_dir)
    os.lchown(link, *_nobody())
    code, err = _audit_to(link / "portaudit.prom")
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "textfile" in err, err
    assert list(victim_dir.iterdir()) == []


@needs_root
def test_a_link_in_a_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    victim_dir = tmp_path / "out"
    victim_dir.mkdir()
    theirs = tmp_path / "node_exporter"
    theirs.mkdir()
    os.chown(theirs, *_nobody())
    link = theirs / "textfile"
    link.symlink_to(victim_dir)
    os.lchown(link, *_nobody())
    code, err = _audit_to(link / "portaudit.prom")
    assert code == 2, err
    assert list(victim_dir.iterdir()) == []


def test_links_root_or_we_made_are_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "via").symlink_to(real)
    (real / "up").symlink_to("..")
    code, err = _audit_to(tmp_path / "via" / "up" / "real" / "portaudit.prom")
    assert code == 1, err
    assert (real / "portaudit.prom").read_text().startswith("# HELP")
