"""`nft -j list ruleset` (libnftables-json(5)) read into the firewall model.

Only what decides a new TCP connection's fate is modelled (protocol, destination port and
address, conntrack state, input interface, verdicts, jumps, named sets, counters); any other
match becomes a condition the report shows verbatim instead of guessing.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import subprocess
from typing import Any

from auditor.diagnose.firewall import Chain, Cond, FirewallRule
from auditor.errors import InputError
from auditor.facts.model import Unavailable

_FAMILIES = {"ip": frozenset({4}), "ip6": frozenset({6}), "inet": frozenset({4, 6})}
_L4 = {"tcp", "udp", "udplite", "sctp", "dccp", "icmp", "icmpv6", "ipv6-icmp", "th"}
_VERDICTS = ("accept", "drop", "reject", "jump", "goto", "return")


def _port(v: Any) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        if v.isdigit():
            return int(v)
        try:
            return socket.getservbyname(v, "tcp")
        except OSError:
            return None
    return None


def _elements(right: Any, sets: dict[str, list[Any]]) -> list[Any] | None:
    """The values a match compares against: a literal, an anonymous set, or a named `@set`."""
    if isinstance(right, str) and right.startswith("@"):
        return sets.get(right[1:])
    if isinstance(right, dict) and "set" in right:
        return list(right["set"]) if isinstance(right["set"], list) else [right["set"]]
    if isinstance(right, list):
        return right
    return [right]


def _port_ranges(values: list[Any]) -> tuple[tuple[int, int], ...] | None:
    out: list[tuple[int, int]] = []
    for v in values:
        if isinstance(v, dict) and "elem" in v:
            v = v["elem"].get("val")
        if isinstance(v, dict) and "range" in v:
            lo, hi = (_port(x) for x in v["range"])
            if lo is None or hi is None:
                return None
            out.append((lo, hi))
            continue
        p = _port(v)
        if p is None:
            return None
        out.append((p, p))
    return tuple(out)


def _networks(values: list[Any]) -> tuple[object, ...] | None:
    out: list[object] = []
    for v in values:
        if isinstance(v, dict) and "elem" in v:
            v = v["elem"].get("val")
        try:
            if isinstance(v, dict) and "prefix" in v:
                out.append(ipaddress.ip_network(f"{v['prefix']['addr']}/{v['prefix']['len']}"))
            elif isinstance(v, dict) and "range" in v:
                lo, hi = (ipaddress.ip_address(x) for x in v["range"])
                out.extend(ipaddress.summarize_address_range(lo, hi))
            elif isinstance(v, str):
                out.append(ipaddress.ip_network(v, strict=False))
            else:
                return None
        except (ValueError, TypeError, KeyError):
            return None
    return tuple(out)


def _text(x: Any) -> str:
    """A short nft-like rendering of an expression, for the report."""
    if isinstance(x, dict):
        if "payload" in x:
            p = x["payload"]
            return f"{p.get('protocol', 'raw')} {p.get('field', '')}".strip()
        if "meta" in x:
            return f"meta {x['meta'].get('key')}"
        if "ct" in x:
            return f"ct {x['ct'].get('key')}"
        if "set" in x:
            items = x["set"] if isinstance(x["set"], list) else [x["set"]]
            return "{ " + ", ".join(_text(i) for i in items) + " }"
        if "range" in x:
            return "-".join(_text(i) for i in x["range"])
        if "prefix" in x:
            return f"{x['prefix'].get('addr')}/{x['prefix'].get('len')}"
        if "elem" in x:
            return _text(x["elem"].get("val"))
        key = next(iter(x), "?")
        return str(key)
    if isinstance(x, list):
        return ",".join(_text(i) for i in x)
    return str(x)


def _cond(match: dict[str, Any], sets: dict[str, list[Any]]) -> Cond:
    left, right, op = match.get("left"), match.get("right"), match.get("op", "==")
    negate = op == "!="
    shown_op = "" if op in ("==", "in") else f"{op} "
    text = f"{_text(left)} {shown_op}{_text(right)}"
    values = _elements(right, sets)
    plain = Cond(field="other", values=(), text=text)
    if values is None or op not in ("==", "!=", "in"):
        return plain
    if isinstance(left, dict) and "payload" in left:
        proto, fld = left["payload"].get("protocol"), left["payload"].get("field")
        if fld == "dport" and proto in _L4:
            if proto not in ("tcp", "th"):
                return Cond(field="l4proto", values=(str(proto),), text=text)
            ranges = _port_ranges(values)
            return plain if ranges is None else Cond("dport", ranges, text, negate)
        if proto in ("ip", "ip6") and fld in ("saddr", "daddr"):
            nets = _networks(values)
            fam = 4 if proto == "ip" else 6
            if nets is None:
                return Cond(field="other", values=(), text=text, family=fam)
            return Cond(fld, nets, text, negate, family=fam)
        if (proto, fld) in (("ip", "protocol"), ("ip6", "nexthdr")):
            return Cond("l4proto", tuple(str(v).lower() for v in values), text, negate)
        if proto in _L4 and proto not in ("tcp", "th"):
            return Cond(field="l4proto", values=(str(proto),), text=text)
        return plain
    if isinstance(left, dict) and "meta" in left:
        key = left["meta"].get("key")
        if key == "l4proto":
            return Cond("l4proto", tuple(str(v).lower() for v in values), text, negate)
        if key in ("iif", "iifname"):
            return Cond("iif", tuple(str(v) for v in values), text, negate)
        if key == "nfproto":
            fams = tuple(4 if v == "ipv4" else 6 for v in values if v in ("ipv4", "ipv6"))
            return Cond("family", fams, text, negate)
        return plain
    if isinstance(left, dict) and "ct" in left and left["ct"].get("key") == "state":
        flat: list[str] = []
        for v in values:
            flat.extend(v if isinstance(v, list) else [str(v)])
        return Cond("ctstate", tuple(s.lower() for s in flat), text, negate)
    return plain


def _rule(obj: dict[str, Any], sets: dict[str, list[Any]]) -> FirewallRule:
    fam, table, chain = obj.get("family", "?"), obj.get("table", "?"), obj.get("chain", "?")
    conds: list[Cond] = []
    parts: list[str] = []
    verdict, target, packets = "", "", None
    nat = ""
    nat_addr: str | None = None
    nat_port: int | None = None
    opaque = False
    for stmt in obj.get("expr", []):
        if not isinstance(stmt, dict):
            continue
        if "xt" in stmt:
            opaque = True
        if "match" in stmt:
            c = _cond(stmt["match"], sets)
            conds.append(c)
            parts.append(c.text)
            continue
        if "counter" in stmt:
            counter = stmt["counter"]
            if isinstance(counter, dict) and isinstance(counter.get("packets"), int):
                packets = counter["packets"]
            parts.append("counter")
            continue
        if "redirect" in stmt or "dnat" in stmt:
            nat = "redirect" if "redirect" in stmt else "dnat"
            arg = stmt[nat] if isinstance(stmt[nat], dict) else {}
            addr = arg.get("addr")
            nat_addr = addr if isinstance(addr, str) else None
            nat_port = _port(arg.get("port")) if arg.get("port") is not None else None
            shown = (nat_addr or "") + (f":{nat_port}" if nat_port is not None else "")
            parts.append(f"{nat} to {shown}".rstrip())
            continue
        name = next((k for k in _VERDICTS if k in stmt), None)
        if name is None:
            parts.append(next(iter(stmt), "?"))
            continue
        verdict = name
        arg = stmt[name]
        if name in ("jump", "goto") and isinstance(arg, dict):
            target = f"{fam} {table} {arg.get('target')}"
            parts.append(f"{name} {arg.get('target')}")
        elif name == "reject":
            if isinstance(arg, dict):
                target = " ".join(str(arg[k]) for k in ("type", "expr") if arg.get(k))
            target = target or "icmp port-unreachable"
            parts.append(f"reject with {target}")
        else:
            parts.append(name)
    return FirewallRule(
        where=f"{fam} {table} {chain} handle {obj.get('handle', '?')}",
        text=" ".join(parts),
        conds=tuple(conds),
        verdict=verdict,
        target=target,
        packets=packets,
        nat=nat,
        nat_addr=nat_addr,
        nat_port=nat_port,
        opaque=opaque,
    )


def parse_ruleset(data: Any, source: str = "nft -j list ruleset") -> list[Chain]:
    """Chains (with their rules, in order) from the parsed JSON document."""
    if not isinstance(data, dict) or not isinstance(data.get("nftables"), list):
        raise InputError(source, None, "expected an object with an 'nftables' list")
    items = [i for i in data["nftables"] if isinstance(i, dict)]
    sets: dict[str, list[Any]] = {}
    for item in items:
        s = item.get("set") or item.get("map")
        if isinstance(s, dict) and "name" in s:
            elem = s.get("elem", [])
            sets[str(s["name"])] = elem if isinstance(elem, list) else [elem]
    rules: dict[str, list[FirewallRule]] = {}
    for item in items:
        r = item.get("rule")
        if isinstance(r, dict):
            key = f"{r.get('family')} {r.get('table')} {r.get('chain')}"
            rules.setdefault(key, []).append(_rule(r, sets))
    chains: list[Chain] = []
    for item in items:
        c = item.get("chain")
        if not isinstance(c, dict):
            continue
        fam = str(c.get("family"))
        key = f"{fam} {c.get('table')} {c.get('name')}"
        prio = c.get("prio", 0)
        chains.append(
            Chain(
                key=key,
                label=f"{fam} {c.get('table')} {c.get('name')}",
                hook=c.get("hook"),
                kind=str(c.get("type", "filter")),
                priority=prio if isinstance(prio, int) else 0,
                policy=str(c.get("policy", "accept")),
                rules=tuple(rules.get(key, [])),
                families=_FAMILIES.get(fam, frozenset()),
            )
        )
    return chains


def read_nft(timeout: float = 5.0) -> list[Chain] | Unavailable:
    """The live ruleset of this network namespace, or why it could not be read."""
    nft = shutil.which("nft")
    if nft is None:
        return Unavailable("nft is not installed")
    try:
        proc = subprocess.run(
            [nft, "-j", "list", "ruleset"], capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Unavailable(f"nft -j list ruleset: {exc}")
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["failed"])[0]
        return Unavailable(f"nft -j list ruleset: {err}")
    try:
        data = json.loads(proc.stdout or '{"nftables": []}')
    except json.JSONDecodeError as exc:
        return Unavailable(f"nft -j list ruleset: unreadable JSON ({exc.msg})")
    return parse_ruleset(data)
