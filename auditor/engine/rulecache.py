"""The checked rule catalog, cached by the content of the rule files and the rule compiler.

Loading the catalog parses about twenty YAML files and checks every name in every expression:
a third of what an idle `portaudit audit` costs beyond the interpreter. The checked rules are
plain data (texts, numbers, expression and template sources with the names each reads, and
each expression's checked tree as tuples), so they are kept in a `marshal` file. No code is
built from it: an expression is compiled from its tree the first time it is evaluated and a
template parsed the first time it is rendered, and on a given host most never are. The file
is named by a SHA-256 over every rule file's path and bytes, the size and modification time of
the modules that decide what a rule compiles to, and the Python version. A hit is used only
when the key stored inside the file equals the one just computed from the files, and only from
a directory and file that belong to this user and that no one else can write. Anything
unexpected is a miss: the catalog is then loaded and checked from the YAML as usual, and the
cache rewritten atomically.

The directory is `$XDG_CACHE_HOME/portaudit` (else `~/.cache/portaudit`); with neither
variable set (a bare `env -i`, some service managers) nothing is cached.
"""

from __future__ import annotations

import marshal
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditor.engine.expr import Expr
    from auditor.engine.load import Rule
    from auditor.engine.template import Template

FORMAT = 3
MAX_CACHE_BYTES = 4 << 20
# Modules whose code decides what a rule file compiles to (or whether it loads at all).
_COMPILER = (
    "engine/load.py",
    "engine/expr.py",
    "engine/template.py",
    "engine/names.py",
    "engine/report.py",
    "engine/rulecache.py",
    "fix/keys.py",
    "hostfs.py",
    "yamlfile.py",
)


def _sha256(data: bytes) -> Any:
    """SHA-256 from CPython's built-in module where there is one: importing hashlib loads
    OpenSSL, 2 ms of an idle audit's start."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]
    except ImportError:
        from hashlib import sha256
    return sha256(data)


def cache_dir() -> Path | None:
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "portaudit"
    home = os.environ.get("HOME")
    if home and os.path.isabs(home):
        return Path(home) / ".cache" / "portaudit"
    return None


def catalog_key(files: Sequence[Path]) -> str | None:
    """SHA-256 over the rule files (path and bytes) and the compiler's modules (path, size and
    modification time: what Python itself checks before it runs their cached bytecode, and a
    tenth of the cost of hashing them); None when a file cannot be read (the ordinary loader
    then says why, with its file and line)."""
    h = _sha256(f"portaudit-rules {FORMAT} {sys.version_info[:3]}\n".encode())
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    try:
        for rel in _COMPILER:
            st = os.stat(os.path.join(package, rel))
            h.update(f"{rel} {st.st_size} {st.st_mtime_ns}\n".encode())
        for f in files:
            data = f.read_bytes()
            h.update(f"{os.fsencode(str(f))!r} {len(data)}\n".encode() + data)
    except (OSError, ValueError):
        return None
    digest: str = h.hexdigest()
    return digest


def _ours(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def read(directory: Path, key: str) -> list[Rule] | None:
    """The cached rules for `key`, or None (absent, not ours, unreadable, another key)."""
    try:
        if not _ours(os.stat(directory)):
            return None
        fd = os.open(directory / f"rules-{key[:32]}.marshal", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _ours(st) or st.st_size > MAX_CACHE_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_CACHE_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        stored_key, rows = marshal.loads(data)  # noqa: S302 - our own file, mode checked
        if stored_key != key:
            return None
        return [_rule(row) for row in rows]
    except Exception:  # any damage is a miss: the catalog is loaded from its files
        return None


def write(directory: Path, key: str, rules: Sequence[Rule]) -> None:
    """Save `rules` under `key`, atomically; a directory we cannot use is left alone."""
    from auditor.safepath import Dir

    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _ours(os.stat(directory)):
            return
        data = marshal.dumps((key, [_row(r) for r in rules]))
        with Dir.open(directory) as d:
            d.replace(f"rules-{key[:32]}.marshal", data, mode=0o600)
    except (OSError, ValueError):
        return


def _src(e: Template) -> tuple[str, frozenset[str]]:
    return (e.source, e.names)


def _expr(e: Expr) -> tuple[str, frozenset[str], tuple[Any, ...]]:
    return (e.source, e.names, e.tree)


def _row(r: Rule) -> tuple[Any, ...]:
    return (
        r.id,
        r.name,
        r.title,
        r.rationale,
        r.example,
        dict(r.params),
        r.for_each,
        tuple(r.requires),
        tuple((n, _expr(e)) for n, e in r.lets),
        tuple((int(s), _expr(e)) for s, e in r.severity),
        _src(r.subject),
        _src(r.message),
        tuple((n, _expr(e)) for n, e in r.evidence),
        tuple((k, _src(t)) for k, t in r.fix_sysctl),
        _src(r.fix_advice),
        r.applicability.value,
        tuple(r.sources),
        r.path,
        r.line,
    )


def _rule(row: tuple[Any, ...]) -> Rule:
    from auditor.engine.expr import Expr
    from auditor.engine.load import Rule
    from auditor.engine.report import Applicability, Severity
    from auditor.engine.template import Template

    (
        rule_id,
        name,
        title,
        rationale,
        example,
        params,
        for_each,
        requires,
        lets,
        severity,
        subject,
        message,
        evidence,
        fix_sysctl,
        fix_advice,
        applicability,
        sources,
        path,
        line,
    ) = row
    expr, template = Expr.checked, Template.checked
    return Rule(
        id=rule_id,
        name=name,
        title=title,
        rationale=rationale,
        example=example,
        params=dict(params),
        for_each=for_each,
        requires=tuple(requires),
        lets=tuple((n, expr(*src)) for n, src in lets),
        severity=tuple((Severity(s), expr(*src)) for s, src in severity),
        subject=template(*subject),
        message=template(*message),
        evidence=tuple((n, expr(*src)) for n, src in evidence),
        fix_sysctl=tuple((k, template(*src)) for k, src in fix_sysctl),
        fix_advice=template(*fix_advice),
        applicability=Applicability(applicability),
        sources=tuple(sources),
        path=path,
        line=line,
    )
