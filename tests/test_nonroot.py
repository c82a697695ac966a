"""As a non-root user, reads that need root become "unavailable, with a reason", never a crash.

The child drops to `nobody` after fork (the interpreter and its imports are already loaded, so
no non-root-readable Python install is needed) and collects facts from the live /proc and from a
fixture tree with a file only root may read.
"""

from __future__ import annotations

import encodings.ascii  # noqa: F401 - loaded before dropping to nobody, who cannot read the stdlib here
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from auditor.config import Config
from auditor.engine.evaluate import evaluate
from auditor.engine.load import load_rules
from auditor.engine.report import AuditReport
from auditor.facts.collect import collect_facts
from auditor.facts.model import to_jsonable
from auditor.hostfs import HostRoot
from auditor.render.json import report_dict
from tests.helpers import ROOTS

NOBODY = 65534


def as_nobody(fn) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """Run fn() in a forked child with uid/gid nobody; return its JSON result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            payload = json.dumps(fn()).encode()
        except BaseException as exc:
            payload = json.dumps({"crash": repr(exc)}).encode()
            code = 1
        with os.fdopen(write, "wb") as fh:
            fh.write(payload)
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return json.loads(data)  # type: ignore[no-any-return]


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")


def test_live_audit_as_nobody_does_not_crash() -> None:
    rules = load_rules()

    def audit() -> dict:  # type: ignore[type-arg]
        facts = collect_facts(HostRoot())
        return report_dict(AuditReport.single(evaluate(rules, facts, Config())))

    result = as_nobody(audit)
    assert "crash" not in result, result
    assert result["schema"] == 1


def test_root_only_file_becomes_unavailable() -> None:
    # pytest's tmp_path sits in a root-only directory; nobody needs a path it can walk
    base = Path(tempfile.mkdtemp(prefix="portaudit-nonroot-"))
    base.chmod(0o755)
    tree = base / "tree"
    shutil.copytree(ROOTS / "busy-client", tree, symlinks=True)
    secret = tree / "proc/net/netstat"
    secret.chmod(0o600)
    snmp = tree / "proc/net/snmp"
    snmp.chmod(0o600)

    def facts() -> dict:  # type: ignore[type-arg]
        return to_jsonable(collect_facts(HostRoot(proc=tree / "proc", root=tree)))  # type: ignore[no-any-return]

    try:
        result = as_nobody(facts)
    finally:
        shutil.rmtree(base)
    assert "crash" not in result, result
    assert "permission denied" in result["counters"]["unavailable"]
    assert result["sockets"]["destinations"][0]["dport"] == 3306
