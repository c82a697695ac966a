"""The rule catalog cache: the same rules as from the YAML, and never used without its key."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from auditor.engine import load, rulecache
from auditor.errors import InputError
from tests.helpers import REPO


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "portaudit"


def _fresh(extra: list[Path]) -> list[load.Rule]:
    """The catalog loaded from the YAML, no cache involved."""
    saved = os.environ.pop("XDG_CACHE_HOME", None), os.environ.pop("HOME", None)
    try:
        return load.load_rules(extra)
    finally:
        for name, value in zip(("XDG_CACHE_HOME", "HOME"), saved, strict=True):
            if value is not None:
                os.environ[name] = value


def _no_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: Path) -> load.Rule:
        raise AssertionError(f"{path} parsed: the cache was not used")

    monkeypatch.setattr(load, "load_rule_file", refuse)


def test_second_load_comes_from_the_cache_and_is_the_same(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = _fresh([])
    first = load.load_rules()
    assert [p.name for p in cache.iterdir()] and oct(cache.stat().st_mode & 0o777) == "0o700"
    _no_yaml(monkeypatch)
    second = load.load_rules()
    assert [rulecache._row(r) for r in second] == [rulecache._row(r) for r in first]
    assert [rulecache._row(r) for r in second] == [rulecache._row(r) for r in fresh]


def test_changed_rule_file_is_a_miss(cache: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    text = (REPO / "tests" / "test_all_netns.py").read_text()
    rule = text.split('RULE = """\\\n', 1)[1].split('"""', 1)[0]
    extra.write_text(rule)
    assert {r.id for r in load.load_rules([extra])} >= {"TST-901", "EPH-001"}
    extra.write_text(rule.replace("rationale: Test copy", "rationale: Changed copy"))
    got = {r.id: r for r in load.load_rules([extra])}["TST-901"]
    assert got.rationale.startswith("Changed copy")
    extra.write_text(rule.replace("id: TST-901", "id: TST-9"))
    with pytest.raises(InputError, match="TST-9"):
        load.load_rules([extra])  # a bad file is reported from its YAML, never from a cache


def test_cache_with_another_key_inside_or_writable_by_others_is_ignored(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load.load_rules()
    (entry,) = cache.iterdir()
    files = load._rule_files(load.builtin_rules_dir())
    key = rulecache.catalog_key(files)
    assert key is not None and key[:32] in entry.name
    assert rulecache.read(cache, key) is not None

    other = cache / "other"
    other.mkdir(mode=0o700)
    rulecache.write(other, "0" * 64, _fresh([]))
    shutil.copy(other / f"rules-{'0' * 32}.marshal", entry)  # same name, another key inside
    assert rulecache.read(cache, key) is None

    rulecache.write(cache, key, _fresh([]))
    assert rulecache.read(cache, key) is not None
    entry.chmod(0o620)
    assert rulecache.read(cache, key) is None
    entry.chmod(0o600)
    cache.chmod(0o777)
    assert rulecache.read(cache, key) is None
    cache.chmod(0o700)
    entry.write_bytes(b"\x00garbage")
    assert rulecache.read(cache, key) is None
    assert len(load.load_rules()) == len(files)  # and the catalog still loads, from the YAML


def test_no_cache_directory_without_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    assert rulecache.cache_dir() is None
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    assert rulecache.cache_dir() is None


def test_audit_from_the_cache_equals_one_from_the_yaml(tmp_path: Path) -> None:
    """Cached expressions and templates are compiled only when first used: a run from the
    cache judges and prints exactly as a run that parsed every rule file."""
    import subprocess
    import sys

    from tests.helpers import ROOTS, root_args
    from tests.test_golden import normalise

    tree = ROOTS / "busy-client"

    def audit(env: dict[str, str], fmt: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "auditor", "audit", *root_args(tree), "--format", fmt],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert result.returncode == 1, result.stderr  # busy-client has findings
        return normalise(result.stdout, tree)

    base = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CACHE_HOME")}
    cached = {**base, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    for fmt in ("json", "table", "prometheus"):
        uncached = audit(base, fmt)
        audit(cached, fmt)
        assert list((tmp_path / "xdg" / "portaudit").iterdir())
        assert audit(cached, fmt) == uncached
        assert "finding" in uncached.lower() or "portaudit_" in uncached
