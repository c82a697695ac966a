"""A non-editable install, run from another directory, must find the rules shipped in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (whl,) = out.glob("portaudit-*.whl")
    return whl


def test_wheel_ships_every_rule(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("auditor/rules/")}
    in_repo = {p.name for p in (REPO / "rules").glob("*.yaml")}
    assert in_repo and in_repo <= shipped
    assert any(n.endswith(".dist-info/entry_points.txt") for n in names)


def test_installed_wheel_finds_its_rules_from_elsewhere(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # PYTHONPATH puts the installed wheel ahead of any editable checkout on sys.path
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target), "PYTHONNOUSERSITE": "1"}
    result = subprocess.run(
        [sys.executable, str(target / "bin" / "portaudit"), "rules", "list"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "EPH-001" in result.stdout
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "from auditor.engine.load import builtin_rules_dir; print(builtin_rules_dir())",
        ],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(target)), where
