"""`iptables-save` / `ip6tables-save` output read into the firewall model (hosts without nft).

Only the `filter` table's chains are modelled; INPUT is the input hook. Options portaudit does
not model become conditions shown as written.
"""

from __future__ import annotations

import ipaddress
import shlex
import shutil
import subprocess

from auditor.diagnose.firewall import Chain, Cond, FirewallRule
from auditor.facts.model import Unavailable

_BUILTIN_HOOKS = {"INPUT": "input", "FORWARD": "forward", "OUTPUT": "output"}


def _ports(text: str) -> tuple[tuple[int, int], ...] | None:
    out: list[tuple[int, int]] = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return None
        out.append((int(lo), int(hi or lo)))
    return tuple(out)


def _rule(chain: str, index: int, tokens: list[str], family: int, table: str) -> FirewallRule:
    conds: list[Cond] = []
    verdict, target = "", ""
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
        elif tok in ("-j", "--jump", "-g", "--goto"):
            if arg in ("ACCEPT", "DROP", "REJECT", "RETURN"):
                verdict = arg.lower()
                if verdict == "reject":
                    target = "icmp-port-unreachable"
            else:
                verdict = "goto" if tok in ("-g", "--goto") else "jump"
                target = f"{family} {table} {arg}"
        elif tok == "--reject-with":
            target = arg
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
        where=f"{'ip6tables' if family == 6 else 'iptables'} {table} {chain} rule {index}",
        text=" ".join(tokens),
        conds=tuple(conds),
        verdict=verdict,
        target=target,
    )


def parse_save(text: str, family: int = 4) -> list[Chain]:
    """Chains of the `filter` table from iptables-save text."""
    table = ""
    policies: dict[str, str] = {}
    rules: dict[str, list[FirewallRule]] = {}
    order: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:]
            continue
        if table != "filter":
            continue
        if line.startswith(":"):
            name, policy = [*line[1:].split(), "-"][:2]
            policies[name] = policy
            order.append(name)
            continue
        if line.startswith("[") and "] " in line:
            line = line.split("] ", 1)[1]  # `iptables-save -c` counters
        if line.startswith("-A "):
            tokens = shlex.split(line)
            chain = tokens[1]
            lst = rules.setdefault(chain, [])
            lst.append(_rule(chain, len(lst) + 1, tokens[2:], family, table))
    return [
        Chain(
            key=f"{family} filter {name}",
            label=f"{'ip6tables' if family == 6 else 'iptables'} filter {name}",
            hook=_BUILTIN_HOOKS.get(name),
            priority=0,
            policy=policies.get(name, "-").lower() if policies.get(name) != "-" else "accept",
            rules=tuple(rules.get(name, [])),
            families=frozenset({family}),
        )
        for name in order
    ]


def read_iptables(timeout: float = 5.0) -> list[Chain] | Unavailable:
    chains: list[Chain] = []
    reasons: list[str] = []
    for tool, family in (("iptables-save", 4), ("ip6tables-save", 6)):
        path = shutil.which(tool)
        if path is None:
            reasons.append(f"{tool} is not installed")
            continue
        try:
            proc = subprocess.run([path], capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reasons.append(f"{tool}: {exc}")
            continue
        if proc.returncode != 0:
            reasons.append(f"{tool}: {(proc.stderr.strip().splitlines() or ['failed'])[0]}")
            continue
        chains.extend(parse_save(proc.stdout, family))
    if not chains and reasons:
        return Unavailable("; ".join(reasons))
    return chains
