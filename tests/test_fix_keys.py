"""The typed table of keys `fix` writes agrees with the running kernel on scope."""

from __future__ import annotations

import os
import shutil

import pytest

from auditor.fix import keys, netns
from auditor.hostfs import HostRoot


def test_table_scope_matches_a_fresh_namespace() -> None:
    """`unshare --net stat` (reads only) shows which keys a new namespace has, writable: those
    are the per-namespace ones; every other key in the table must be marked global."""
    host = HostRoot()
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to look into a fresh network namespace")
    if not netns.in_initial_netns(host):
        pytest.skip("the test process is not in the initial network namespace")
    present = [k for k in keys.KEYS if os.path.exists(host.sysctl_path(k))]
    probed = netns._probe_fresh_netns(host, [k for k in present if k.startswith("net.")])
    assert probed is not None
    for key in present:
        measured = probed.get(key, False)
        assert keys.KEYS[key].per_netns is measured, key


def test_every_key_a_shipped_rule_fixes_is_in_the_table() -> None:
    from auditor.engine.load import load_rules

    for rule in load_rules():
        for key, _ in rule.fix_sysctl:
            assert key in keys.KEYS, (rule.id, key)
