"""Parse and edit one sysctl config file the way `systemd-sysctl` reads it, byte for byte.

The parser follows systemd's `parse_file()` (src/sysctl/sysctl.c, v252; `parse_line()` over
`conf_file_read()` from v257 on, same rules). Lines end where systemd's `read_line()` ends them:
at "\\n", "\\r\\n", a lone "\\r" or a NUL, so `a = 1<CR>b = 2` is two assignments and both
apply (procps `sysctl --system` and editors see one line: that is reported, as `bare-cr` or
`nul-byte`). Each line is stripped of " \\t\\n\\r"; empty lines and lines whose first
character is `#` or `;` are comments; otherwise everything before the first `=` is the key and
everything after it, stripped, is the value, written to the kernel verbatim. So `a = 1 # note`
sets the value `1 # note` and `a = "1"` the value `"1"`: systemd has no inline comments and no
quoting. A leading `-` on the key means "ignore a failure to apply it"; a `-key` line without
`=` is a glob exclusion ("negative match").
Keys are normalised as `sysctl_normalize()` does: the first separator decides whether the key is
in dotted form (`net.ipv4.conf.eth0/100.rp_filter`) or slash form (`net/ipv4/conf/eth0.100/...`),
and a leading `/` is dropped (`/net/ipv4/tcp_tw_reuse` is `net.ipv4.tcp_tw_reuse`, the same
entry as the dotted spelling).

Every line keeps its exact text and line ending, so `set_value` can change one value and leave
every other byte of the file as it was (comments, odd spacing, CRLF, a missing final newline).
"""

from __future__ import annotations

import re

from auditor.errors import UsageError
from auditor.facts.sysctlvalue import fold
from auditor.hostfs import normalize_sysctl_key
from auditor.record import dataclass

_WS = " \t\n\r"
"""systemd's WHITESPACE: what `strstrip()` removes (not Unicode spaces, not \\v or \\f)."""

_COMMENTS = "#;"
_GLOB_CHARS = "*?["
_BOM = "\ufeff"
_KEY_OK = re.compile(r"^/?[A-Za-z0-9_*?\[\]!^][A-Za-z0-9_.:@+\-/*?\[\]!^]*$")
_INLINE_COMMENT = re.compile(r"[ \t][#;]|^[#;]")


@dataclass(frozen=True, slots=True)
class SysctlLine:
    """One line of a sysctl config file, as written and as systemd-sysctl reads it."""

    lineno: int
    """The line number an editor shows (lines counted by "\\n"); the parts of a line that a
    lone CR or a NUL splits share it."""
    raw: str
    """The exact text with its line ending ("\\n", "\\r\\n", a lone "\\r" or NUL that ends a
    part, or "" on an unterminated last line)."""
    key: str | None
    """Normalised dotted key (`net.ipv4.tcp_tw_reuse`; a glob stays a glob); None for comments,
    blank lines and lines boot cannot use."""
    value: str | None
    """The value exactly as systemd-sysctl would write it to /proc/sys; None for comments and
    for a `-key` glob exclusion (which has a key but no value)."""
    ignore_errors: bool
    """A leading `-`: boot ignores a failure to apply the line."""
    problem: str | None
    """Why boot reads this line differently from what its author meant (a
    `model.SysctlLineProblem.kind`), or None."""
    split: str | None = None
    """On the first part of an editor line that systemd reads as several: `bare-cr` or
    `nul-byte` (each part is parsed and applied on its own)."""

    @property
    def is_exclusion(self) -> bool:
        """A `-key` line without `=`: keeps globs off `key` and cancels its earlier values."""
        return self.key is not None and self.value is None


def is_glob(key: str) -> bool:
    """systemd's `string_is_glob()`: any of `*?[` makes the key a pattern over /proc/sys."""
    return any(c in key for c in _GLOB_CHARS)


def normalize_key(key: str) -> str:
    """The dotted key (`sysctl -a` style) for a key as written in a file, in either form."""
    return normalize_sysctl_key(key)


def _split_lines(text: str) -> list[str]:
    """Lines with their endings; only "\\n" ends a line ("\\r\\n" keeps its "\\r")."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def _ending(raw: str) -> str:
    if raw.endswith("\r\n"):
        return "\r\n"
    if raw.endswith(("\n", "\r", "\0")):
        return raw[-1]
    return ""


_PART_END = re.compile(r"[\r\0]")


def _parts(raw: str) -> list[str]:
    """One editor line cut where systemd's `read_line()` also ends a line: a lone CR or a NUL.

    read_line() treats "\\n", "\\r" and NUL as line ends and folds a run holding each at most
    once ("\\r\\n") into one; the empty lines such a cut can add carry nothing, so cutting after
    every lone CR and NUL gives the same assignments in the same order.
    """
    end = _ending(raw)
    body = raw[: len(raw) - len(end)] if end in ("\n", "\r\n") else raw
    out: list[str] = []
    start = 0
    for m in _PART_END.finditer(body):
        out.append(body[start : m.end()])
        start = m.end()
    rest = body[start:]
    if end in ("\n", "\r\n"):
        rest += end
    if rest or not out:
        out.append(rest)
    return out


def _parse_line(lineno: int, raw: str) -> SysctlLine:
    body = raw[: len(raw) - len(_ending(raw))]
    bom = lineno == 1 and body.startswith(_BOM)

    def line(key: str | None, value: str | None, ignore: bool, problem: str | None) -> SysctlLine:
        return SysctlLine(lineno, raw, key, value, ignore, problem)

    p = body.strip(_WS)
    if bom:
        # The BOM is not whitespace to systemd: it becomes part of the first key, so an
        # assignment on the first line is lost at boot (a comment there stays harmless).
        rest = p[1:].strip(_WS)
        if not rest or rest[0] in _COMMENTS:
            return line(None, None, False, None)
        return line(None, None, False, "bom")
    if not p:
        return line(None, None, False, None)
    if p[0] in _COMMENTS:
        return line(None, None, False, None)
    key_part, eq, value_part = p.partition("=")
    ignore = key_part.startswith("-")
    if ignore:
        key_part = key_part[1:]
    key_text = key_part.strip(_WS)
    if not eq:
        if ignore and key_text and _KEY_OK.match(key_text):
            return line(normalize_key(key_text), None, True, None)
        return line(None, None, ignore, "no-equals")
    if not key_text:
        return line(None, None, ignore, "empty-key")
    if not _KEY_OK.match(key_text) or not normalize_key(key_text):
        return line(None, None, ignore, "bad-key")
    value = value_part.strip(_WS)
    key = normalize_key(key_text)
    problem: str | None = None
    if not value:
        problem = "empty-value"
    elif len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        problem = "quoted-value"
    elif _INLINE_COMMENT.search(value):
        problem = "inline-comment"
    return line(key, value, ignore, problem)


def parse_sysctl_text(text: str) -> list[SysctlLine]:
    """Every line of `text` as systemd-sysctl reads it, in order; the raws rebuild `text`."""
    out: list[SysctlLine] = []
    for n, raw in enumerate(_split_lines(text), start=1):
        parts = _parts(raw)
        for i, part in enumerate(parts):
            ln = _parse_line(n, part)
            if i == 0 and len(parts) > 1:
                kind = "nul-byte" if "\0" in raw else "bare-cr"
                ln = SysctlLine(n, ln.raw, ln.key, ln.value, ln.ignore_errors, ln.problem, kind)
            out.append(ln)
    return out


def _check_text(what: str, s: str) -> None:
    if any(c in s for c in "\r\n\0") or any(ord(c) < 32 and c != "\t" for c in s):
        raise UsageError(f"{what} {s!r} contains a line break or control character")


def _file_eol(lines: list[SysctlLine]) -> str:
    for ln in lines:
        end = _ending(ln.raw)
        if end in ("\n", "\r\n"):
            return end
    return "\n"


def _last_index(lines: list[SysctlLine], key: str) -> int | None:
    want = normalize_key(key)
    found = None
    for i, ln in enumerate(lines):
        if ln.key == want and ln.value is not None:
            found = i
    return found


def last_assignment(lines: list[SysctlLine], key: str) -> SysctlLine | None:
    """The line that decides `key` within this file (the last assignment), if any."""
    i = _last_index(lines, key)
    return None if i is None else lines[i]


def _with_value(raw: str, value: str) -> str:
    """`raw` with only the value part (after the first `=`, between its whitespace) replaced."""
    end = _ending(raw)
    body = raw[: len(raw) - len(end)]
    head, _, tail = body.partition("=")
    stripped = tail.strip(_WS)
    if stripped:
        lead = tail[: len(tail) - len(tail.lstrip(_WS))]
        trail = tail[len(tail.rstrip(_WS)) :]
    else:
        lead, trail = (" " if head.endswith((" ", "\t")) else ""), ""
    return f"{head}={lead}{value}{trail}{end}"


def set_value(text: str, key: str, value: str, *, comment: str, renames: str = "") -> str:
    """`text` with `key` set to `value` for boot, every other byte kept.

    Changes only the value part of the last assignment of `key` (its key spelling, `-` prefix,
    spacing around `=` and line ending stay); if the file has none, appends
    "# <comment>" and "<key> = <value>" in the file's line-ending style, first ending an
    unterminated last line. Returns `text` unchanged when the value already equals (whitespace
    folded), so a second run writes nothing. With `renames`, a comment line right above the
    edited assignment that starts with "# <renames>" (one an earlier append wrote) becomes
    "# <comment>", so it names what set the value now.
    """
    _check_text("value", value)
    _check_text("comment", comment)
    if not value.strip():
        raise UsageError(f"empty value for {key}")
    lines = parse_sysctl_text(text)
    dotted = normalize_key(key)
    at = _last_index(lines, dotted)
    if at is not None:
        target = lines[at]
        assert target.value is not None
        if fold(target.value) == fold(value):
            return text
        new = list(ln.raw for ln in lines)
        new[at] = _with_value(target.raw, value)
        if renames and at > 0:
            above = new[at - 1]
            end = _ending(above)
            if above.startswith(f"# {renames}"):
                new[at - 1] = f"# {comment}{end}"
        return "".join(new)
    eol = _file_eol(lines)
    prefix = text if (not text or text.endswith("\n")) else text + eol
    return f"{prefix}# {comment}{eol}{dotted} = {value}{eol}"


def remove_key(text: str, key: str, *, comment: str | None = None) -> str:
    """`text` without the last assignment of `key` (and the `# <comment>` line right above it).

    The inverse of an append by `set_value`; every other byte is kept. Unchanged if absent.
    """
    lines = parse_sysctl_text(text)
    at = _last_index(lines, key)
    if at is None:
        return text
    drop = {at}
    i = at - 1
    if comment is not None and i >= 0:
        prev = lines[i].raw
        if prev[: len(prev) - len(_ending(prev))] == f"# {comment}":
            drop.add(i)
    return "".join(ln.raw for n, ln in enumerate(lines) if n not in drop)
