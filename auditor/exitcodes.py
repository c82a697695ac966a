"""Every exit code portaudit returns, named once.

`auditor.errors` carries these numbers on its exception classes (as plain ints, so the socket
reader that imports it does not pay for the enum module); tests/test_audit_pipeline.py holds the two
in step.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    """Nothing reached `--fail-on`; `fix` applied or had nothing to do; `diagnose` connected."""
    FINDINGS = 1
    """`audit`: a finding reached `--fail-on`. `diagnose`: the connection failed, or a cause
    is likely even though it connected."""
    INTERNAL_ERROR = 1
    """A bug, reported as one line (a traceback with --debug); shares 1 with FINDINGS."""
    USAGE = 2
    """Bad input or usage: a flag, a rule or config file, a snapshot, `/proc` content, or a
    write portaudit refuses to make."""
    FIX_FAILED = 3
    """`fix` failed after it started changing things, and what it changed was restored."""
    INTERRUPTED = 130
    """Ctrl-C (128 + SIGINT, as a shell reports it)."""
