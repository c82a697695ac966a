"""`iptables-save` / `ip6tables-save` output read into the firewall model.

Two uses: hosts without nft (`iptables-save`, whichever backend it is), and rules loaded with
iptables-legacy, which live in the kernel's x_tables and never show in `nft list ruleset`
(`iptables-legacy-save`; rules made with iptables-nft are nft's and are not read twice). The
filter, raw and mangle tables' built-in chains are filter hooks; the nat table's PREROUTING and
OUTPUT are where DNAT/REDIRECT happen. Options portaudit does not model become conditions shown
as written; a target's own options (after `-j`) never do.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import selectors
import shlex
import shutil
import subprocess
import time

from auditor.diagnose.firewall import Chain, Cond, FirewallRule
from auditor.facts.model import Unavailable

_HOOKS: dict[tuple[str, str], tuple[str, str, int]] = {
    ("raw", "PREROUTING"): ("prerouting", "filter", -300),
    ("raw", "OUTPUT"): ("output", "filter", -300),
    ("mangle", "PREROUTING"): ("prerouting", "filter", -150),
    ("mangle", "INPUT"): ("input", "filter", -150),
    ("mangle", "FORWARD"): ("forward", "filter", -150),
    ("mangle", "OUTPUT"): ("output", "filter", -150),
    ("nat", "PREROUTING"): ("prerouting", "nat", -100),
    ("nat", "OUTPUT"): ("output", "nat", -100),
    ("nat", "INPUT"): ("input", "nat", 100),
    ("nat", "POSTROUTING"): ("postrouting", "nat", 100),
    ("filter", "INPUT"): ("input", "filter", 0),
    ("filter", "FORWARD"): ("forward", "filter", 0),
    ("filter", "OUTPUT"): ("output", "filter", 0),
}
"""(table, built-in chain) -> (hook, chain type, priority), as the kernel registers them."""
_TABLES = frozenset(t for t, _ in _HOOKS)
_VERDICT_TARGETS = ("ACCEPT", "DROP", "REJECT", "RETURN")
_NON_VERDICT = frozenset(
    [
        "LOG",
        "NFLOG",
        "MARK",
        "CONNMARK",
        "MASQUERADE",
        "SNAT",
        "CT",
        "NOTRACK",
        "TCPMSS",
        "DSCP",
        "TOS",
        "TRACE",
        "AUDIT",
        "ULOG",
    ]
)
MAX_OUTPUT = 8 << 20
"""Bytes of `*-save` output read at most: a ruleset larger than this is not judged."""


def _ports(text: str) -> tuple[tuple[int, int], ...] | None:
    out: list[tuple[int, int]] = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return None
        out.append((int(lo), int(hi or lo)))
    return tuple(out)


def _nat_to(arg: str) -> tuple[str | None, int | None]:
    """`--to-destination 10.0.0.1:8080` / `[fd00::1]:80` / `10.0.0.1` / `:80`, and
    `--to-ports 3128[-3130]`: the new address and first port."""
    addr, port = arg, ""
    if arg.startswith("["):
        addr, _, rest = arg[1:].partition("]")
        port = rest.lstrip(":")
    elif arg.count(":") == 1:
        addr, _, port = arg.partition(":")
    addr = addr.split("-", 1)[0]
    port = port.split("-", 1)[0]
    return (addr or None), (int(port) if port.isdigit() else None)


def _rule(
    chain: str, index: int, tokens: list[str], family: int, table: str, prefix: str = ""
) -> FirewallRule:
    prefix = prefix or ("ip6tables" if family == 6 else "iptables")
    conds: list[Cond] = []
    verdict, target, nat = "", "", ""
    nat_addr: str | None = None
    nat_port: int | None = None
    jumped = False
    i = 0
    negate = False
    while i < len(tokens):
        tok = tokens[i]
        arg = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok == "!":
            negate = True
            i += 1
            continue
        shown = ("! " if negate else "") + f"{tok} {arg}".strip()
        if jumped:
            # A target's own options: they say what the target does, never when it applies.
            if tok == "--reject-with":
                target = arg
            elif tok == "--to-destination" and nat == "dnat":
                nat_addr, nat_port = _nat_to(arg)
            elif tok == "--to-ports" and nat == "redirect":
                nat_port = _nat_to(":" + arg)[1]
            i += 2 if tok.startswith("-") else 1
            continue
        if tok in ("-p", "--protocol"):
            conds.append(Cond("l4proto", (arg.lower(),), shown, negate))
        elif tok in ("--dport", "--destination-port", "--dports", "--destination-ports"):
            ranges = _ports(arg)
            conds.append(
                Cond("dport", ranges, shown, negate) if ranges else Cond("other", (), shown)
            )
        elif tok in ("-s", "--source", "-d", "--destination"):
            try:
                nets = tuple(ipaddress.ip_network(a, strict=False) for a in arg.split(","))
                fld = "saddr" if tok in ("-s", "--source") else "daddr"
                conds.append(Cond(fld, nets, shown, negate, family=family))
            except ValueError:
                conds.append(Cond("other", (), shown))
        elif tok in ("-i", "--in-interface"):
            conds.append(Cond("iif", (arg,), shown, negate))
        elif tok in ("--state", "--ctstate"):
            conds.append(Cond("ctstate", tuple(s.lower() for s in arg.split(",")), shown, negate))
        elif tok == "--dst-type":
            conds.append(Cond("dsttype", (arg.lower(),), shown, negate))
        elif tok in ("-j", "--jump", "-g", "--goto"):
            jumped = True
            if arg in _VERDICT_TARGETS:
                verdict = arg.lower()
                if verdict == "reject":
                    target = "icmp-port-unreachable"
            elif arg in ("DNAT", "REDIRECT"):
                nat = arg.lower()
            elif arg not in _NON_VERDICT:
                verdict = "goto" if tok in ("-g", "--goto") else "jump"
                target = f"{prefix} {table} {arg}"
        elif tok in ("-m", "--match", "-c"):
            pass
        elif tok.startswith("-"):
            conds.append(Cond("other", (), shown))
        else:
            i += 1
            negate = False
            continue
        i += 2 if tok != "-c" else 3
        negate = False
    return FirewallRule(
        where=f"{prefix} {table} {chain} rule {index}",
        text=" ".join(tokens),
        conds=tuple(conds),
        verdict=verdict,
        target=target,
        nat=nat,
        nat_addr=nat_addr,
        nat_port=nat_port,
    )


def _counted(line: str) -> tuple[str, int | None]:
    """`[12:3456] -A ...` (`*-save -c`): the rule and its packet count."""
    if line.startswith("[") and "] " in line:
        head, rest = line[1:].split("] ", 1)
        packets = head.split(":", 1)[0]
        return rest, int(packets) if packets.isdigit() else None
    return line, None


def parse_save(text: str, family: int = 4, prefix: str = "") -> list[Chain]:
    """Chains of the filter, raw, mangle and nat tables from iptables-save text; `prefix`
    names where they came from (`iptables`, `iptables-legacy`). A line that cannot be split
    is shown as a condition-only rule, never a traceback."""
    prefix = prefix or ("ip6tables" if family == 6 else "iptables")
    table = ""
    policies: dict[tuple[str, str], str] = {}
    rules: dict[tuple[str, str], list[FirewallRule]] = {}
    order: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:].strip()
            continue
        if table not in _TABLES:
            continue
        if line.startswith(":"):
            name, policy = [*line[1:].split(), "-"][:2]
            policies[(table, name)] = policy
            order.append((table, name))
            continue
        line, packets = _counted(line)
        if not line.startswith("-A "):
            continue
        try:
            tokens = shlex.split(line)
        except ValueError:
            tokens = line.split()
        if len(tokens) < 2:
            continue
        key = (table, tokens[1])
        lst = rules.setdefault(key, [])
        rule = _rule(tokens[1], len(lst) + 1, tokens[2:], family, table, prefix)
        if packets is not None:
            rule = dataclasses.replace(rule, packets=packets)
        lst.append(rule)
    chains: list[Chain] = []
    for table, name in order:
        hook, kind, priority = _HOOKS.get((table, name), (None, "filter", 0))
        policy = policies.get((table, name), "-")
        chains.append(
            Chain(
                key=f"{prefix} {table} {name}",
                label=f"{prefix} {table} {name}",
                hook=hook,
                priority=priority,
                policy=policy.lower() if policy != "-" else "accept",
                rules=tuple(rules.get((table, name), [])),
                families=frozenset({family}),
                kind=kind,
            )
        )
    return chains


def run_save(argv: list[str], timeout: float, limit: int = MAX_OUTPUT) -> str | Unavailable:
    """`argv` (no shell; `iptables-save -c`) with a deadline and a cap on what is read."""
    tool = argv[0]
    path = shutil.which(tool)
    if path is None:
        return Unavailable(f"{tool} is not installed")
    try:
        proc = subprocess.Popen(
            [path, *argv[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
    except OSError as exc:
        return Unavailable(f"{tool}: {exc}")
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    with proc, selectors.DefaultSelector() as sel:
        assert proc.stdout is not None and proc.stderr is not None
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0 or len(out) > limit or len(err) > limit:
                proc.kill()
                why = "timed out" if left <= 0 else f"output over {limit} bytes"
                return Unavailable(f"{tool}: {why}")
            for key, _ in sel.select(left):
                chunk = key.fileobj.read1(65536)  # type: ignore[union-attr]
                if chunk:
                    key.data.extend(chunk)
                else:
                    sel.unregister(key.fileobj)
        code = proc.wait()
    if code != 0:
        first = (err.decode(errors="replace").strip().splitlines() or ["failed"])[0]
        return Unavailable(f"{tool}: {first}")
    return out.decode(errors="replace")


def read_legacy(timeout: float = 5.0) -> list[Chain] | Unavailable:
    """Rules loaded with iptables-legacy / ip6tables-legacy (empty when the tools are absent
    or no legacy table exists): the kernel runs them beside nft's."""
    return _read_saves(("iptables-legacy-save", "ip6tables-legacy-save"), timeout, False)


def read_nft_save(timeout: float = 5.0) -> list[Chain] | Unavailable:
    """The iptables-nft rules as `iptables-nft-save` prints them, for the tables whose rules
    nft shows only as opaque `xt` statements (Docker's `addrtype` match, its DNAT target)."""
    return _read_saves(("iptables-nft-save", "ip6tables-nft-save"), timeout, True)


def _read_saves(
    tools: tuple[str, str], timeout: float, absent_is_reason: bool
) -> list[Chain] | Unavailable:
    """The chains of the IPv4 and IPv6 `*-save` tools; Unavailable only when none could be
    read and some gave a reason (a missing tool is one when `absent_is_reason`)."""
    chains: list[Chain] = []
    reasons: list[str] = []
    for tool, family in zip(tools, (4, 6), strict=True):
        if shutil.which(tool) is None:
            if absent_is_reason:
                reasons.append(f"{tool} is not installed")
            continue
        text = run_save([tool, "-c"], timeout)
        if isinstance(text, Unavailable):
            reasons.append(text.reason)
            continue
        chains.extend(parse_save(text, family, tool.removesuffix("-save")))
    if reasons and not chains:
        return Unavailable("; ".join(reasons))
    return chains


def read_iptables(timeout: float = 5.0) -> list[Chain] | Unavailable:
    """The rules `iptables-save` shows (hosts without nft), plus the legacy ones when that
    tool is the nft backend (its rules and the legacy ones are then disjoint)."""
    chains: list[Chain] = []
    reasons: list[str] = []
    via_nft = False
    for tool, family in (("iptables-save", 4), ("ip6tables-save", 6)):
        text = run_save([tool, "-c"], timeout)
        if isinstance(text, Unavailable):
            reasons.append(text.reason)
            continue
        via_nft = via_nft or "(nf_tables)" in text.partition("\n")[0]
        chains.extend(parse_save(text, family))
    if via_nft:
        legacy = read_legacy(timeout)
        if isinstance(legacy, list):
            chains.extend(legacy)
    if not chains and reasons:
        return Unavailable("; ".join(reasons))
    return chains
