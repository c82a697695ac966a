"""The typed table of keys `fix` writes covers every key a shipped rule fixes.

Its per-namespace scope is checked against a real namespace in tests/test_fix_netns.py.
"""

from __future__ import annotations

from auditor.fix import keys


def test_every_key_a_shipped_rule_fixes_is_in_the_table() -> None:
    from auditor.engine.load import load_rules

    for rule in load_rules():
        for key, _ in rule.fix_sysctl:
            assert key in keys.KEYS, (rule.id, key)
