"""Build a fake host tree (proc/ and etc/) from a rule scenario file.

A scenario is one small YAML file under `tests/scenarios/<RULE-ID>/`: a base tree from
`tests/fixtures/roots/<base>`, sysctl values, raw file overlays, symlinks (a sysctl.d link to
/etc/sysctl.conf, a mask to /dev/null; the target is written verbatim and the persisted model
resolves absolute targets inside the tree), counter patches, sockets, an optional portaudit
config, and the findings the rule must produce. Sockets are expanded into
real `/proc/net/tcp` and `tcp6` lines in the kernel's own format, so the scenario goes through
the same reader as a live host (auditor/facts/sockets.py), not around it.

Kernel formats followed (net/ipv4/tcp_ipv4.c, net/ipv6/tcp_ipv6.c):
- each 32-bit word of an address is printed with `%08X` in host byte order, so on a
  little-endian machine the bytes of every 4-byte group read reversed;
- ports are `%04X` of the host-order port number; the state is `%02X` of the kernel state
  number (`TCP_STATES` index + 1);
- `/proc/net/tcp` lines are padded with spaces to 149 characters (`seq_pad`, TMPSZ - 1);
  `tcp6` lines are not padded;
- TIME_WAIT lines are shorter (no rto/ato/cwnd fields) and have inode 0.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auditor.facts.model import Facts, Unavailable
from auditor.facts.rates import CounterState, read_boot_id, save_state, with_rates
from auditor.facts.tcp import TCP_STATES
from auditor.hostfs import HostRoot, sysctl_relpath

REPO = Path(__file__).resolve().parent.parent
ROOTS = REPO / "tests" / "fixtures" / "roots"
SCENARIOS = REPO / "tests" / "scenarios"

SCENARIO_KEYS = {
    "rule",
    "description",
    "base",
    "sysctl",
    "files",
    "symlinks",
    "counters",
    "sockets",
    "config",
    "expect",
    "skipped",
    "passed",
    "previous_run",
}
LISTEN_KEYS = {"listen", "count", "queued", "backlog", "v6only", "process"}
"""`queued` is written into the /proc line (rx_queue); `backlog`, `v6only` and `process`
({pid, command, fds, fd_limit, fds_free} or {note}) are what sock_diag and /proc add on a live host,
which a /proc tree cannot carry: `with_live_listener_facts` applies them to the facts."""
SOCKET_KEYS = {"src", "dst", "dport", "sport", "state", "count", "timer_left"}
EXPECT_KEYS = {"severity", "subject", "evidence", "fix_sysctl", "message", "advice"}

_STATE_NUM = {name: i + 1 for i, name in enumerate(TCP_STATES)}
_TCP4_WIDTH = 149  # seq_setwidth(seq, TMPSZ - 1) in tcp4_seq_show


class ScenarioError(ValueError):
    """A scenario file that cannot be built; the message names the file."""


@dataclass(frozen=True)
class Expected:
    severity: str
    subject: str
    evidence: dict[str, Any] = field(default_factory=dict)
    fix_sysctl: dict[str, str] = field(default_factory=dict)
    message: tuple[str, ...] = ()
    """Texts the finding's message must contain (the words a reader acts on)."""
    advice: tuple[str, ...] = ()
    """Texts the fix advice must contain."""


@dataclass(frozen=True)
class Scenario:
    path: Path
    rule: str
    description: str
    base: str
    sysctl: dict[str, str | None]
    files: dict[str, str]
    counters: dict[str, int]
    sockets: list[dict[str, Any]]
    config: dict[str, Any] | None
    expect: list[Expected]
    skipped: bool = False
    """The rule must be reported as skipped (with a reason), not passed: a fact is missing."""
    symlinks: dict[str, str] = field(default_factory=dict)
    """Relative link path -> target, written as is (`../sysctl.conf`, `/dev/null`)."""
    passed: bool = False
    """Every outcome of the rule must be a pass: checked, not skipped."""
    previous_run: tuple[float, dict[str, int]] | None = None
    """(seconds ago, counters that differed then as `Group.Field: value`): the state an earlier
    run left in /var/lib/portaudit, so the audit has counter rates (auditor/facts/rates.py)."""

    @property
    def case_id(self) -> str:
        return f"{self.path.parent.name}/{self.path.stem}"


def _texts(value: Any) -> tuple[str, ...]:
    """One text or a list of them, as a tuple."""
    if value is None:
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def load_scenario(path: Path) -> Scenario:
    """Parse and shape-check one scenario file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: expected a mapping")
    unknown = set(data) - SCENARIO_KEYS
    if unknown:
        raise ScenarioError(f"{path}: unknown keys {sorted(unknown)}")
    for required in ("rule", "description", "expect"):
        if required not in data:
            raise ScenarioError(f"{path}: missing {required!r}")
    expect_raw = data["expect"]
    if not isinstance(expect_raw, list):
        raise ScenarioError(f"{path}: expect must be a list ([] for a quiet case)")
    expect: list[Expected] = []
    for item in expect_raw:
        if not isinstance(item, dict) or set(item) - EXPECT_KEYS or "severity" not in item:
            raise ScenarioError(f"{path}: bad expect item {item!r}")
        expect.append(
            Expected(
                severity=str(item["severity"]),
                subject=str(item.get("subject", "")),
                evidence=dict(item.get("evidence") or {}),
                fix_sysctl={str(k): str(v) for k, v in (item.get("fix_sysctl") or {}).items()},
                message=_texts(item.get("message")),
                advice=_texts(item.get("advice")),
            )
        )
    sysctl = {
        str(k): (None if v is None else str(v)) for k, v in (data.get("sysctl") or {}).items()
    }
    files = {str(k): str(v) for k, v in (data.get("files") or {}).items()}
    symlinks = {str(k): str(v) for k, v in (data.get("symlinks") or {}).items()}
    if data.get("skipped") and data.get("passed"):
        raise ScenarioError(f"{path}: a rule cannot be both skipped and passed")
    counters = {str(k): int(v) for k, v in (data.get("counters") or {}).items()}
    sockets = list(data.get("sockets") or [])
    for s in sockets:
        if not isinstance(s, dict):
            raise ScenarioError(f"{path}: socket entries must be mappings, got {s!r}")
        if "listen" in s:
            if set(s) - LISTEN_KEYS:
                raise ScenarioError(
                    f"{path}: a listen entry takes only {sorted(LISTEN_KEYS)}: {s!r}"
                )
        elif set(s) - SOCKET_KEYS or not {"src", "dst", "dport", "state"} <= set(s):
            raise ScenarioError(f"{path}: socket entry needs src, dst, dport, state: {s!r}")
    config = data.get("config")
    if config is not None and not isinstance(config, dict):
        raise ScenarioError(f"{path}: config must be a mapping")
    previous_run = None
    if "previous_run" in data:
        prev = data["previous_run"]
        if not isinstance(prev, dict) or set(prev) - {"seconds_ago", "counters"}:
            raise ScenarioError(f"{path}: previous_run takes seconds_ago and counters")
        previous_run = (
            float(prev.get("seconds_ago", 300)),
            {str(k): int(v) for k, v in (prev.get("counters") or {}).items()},
        )
    return Scenario(
        path=path,
        rule=str(data["rule"]),
        description=str(data["description"]),
        base=str(data.get("base", "minimal")),
        sysctl=sysctl,
        files=files,
        counters=counters,
        sockets=sockets,
        config=config,
        expect=expect,
        skipped=bool(data.get("skipped", False)),
        symlinks=symlinks,
        passed=bool(data.get("passed", False)),
        previous_run=previous_run,
    )


def all_scenarios() -> list[Path]:
    return sorted(SCENARIOS.glob("*/*.yaml"))


# --- /proc/net/tcp line formatting -----------------------------------------------------------


def _words(packed: bytes) -> str:
    """Each 32-bit word as the kernel prints it: `%08X` of the word read in host order."""
    return "".join(f"{w:08X}" for w in struct.unpack(f"={len(packed) // 4}I", packed))


def address_hex(addr: str, family: int) -> str:
    """Kernel hex for `addr` in a tcp (family 4) or tcp6 (family 6) file."""
    ip = ipaddress.ip_address(addr)
    if family == 4:
        if ip.version != 4:
            raise ScenarioError(f"{addr}: an IPv6 address in /proc/net/tcp")
        return _words(ip.packed)
    if ip.version == 4:
        ip = ipaddress.IPv6Address(f"::ffff:{ip}")
    return _words(ip.packed)


def family_of(*addrs: str) -> int:
    """6 when any address is written in IPv6 form (including ::ffff:a.b.c.d), else 4."""
    return 6 if any(":" in a for a in addrs) else 4


def socket_line(
    sl: int,
    family: int,
    src: str,
    sport: int,
    dst: str,
    dport: int,
    state: str,
    inode: int,
    timer_left: float = 37.39,
    rx_queue: int = 0,
) -> str:
    """One socket as `/proc/net/tcp{,6}` prints it (without the newline). `timer_left` is
    the seconds left on a TIME_WAIT socket's timer (60 when it has just closed)."""
    st = _STATE_NUM[state]
    local = f"{address_hex(src, family)}:{sport:04X}"
    remote = f"{address_hex(dst, family)}:{dport:04X}"
    if state == "TIME_WAIT":
        # get_timewait{4,6}_sock: timer 3, clock ticks left, no uid/inode, refcount 3.
        ticks = round(timer_left * os.sysconf("SC_CLK_TCK"))
        line = (
            f"{sl:4d}: {local} {remote} {st:02X} 00000000:00000000 03:{ticks:08X} "
            f"00000000 {0:5d} {0:8d} 0 3 0000000000000000"
        )
    elif state == "LISTEN":
        line = (
            f"{sl:4d}: {local} {remote} {st:02X} 00000000:{rx_queue:08X} 00:00000000 "
            f"00000000 {0:5d} {0:8d} {inode} 1 0000000000000000 100 0 0 10 0"
        )
    else:
        line = (
            f"{sl:4d}: {local} {remote} {st:02X} 00000000:00000000 02:000AE5E0 "
            f"00000000 {1000:5d} {0:8d} {inode} 1 0000000000000000 20 4 30 10 -1"
        )
    if family == 4:
        line = line.ljust(_TCP4_WIDTH)
    return line


def _split_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:6379` or `[::]:8080` -> (address, port)."""
    if text.startswith("["):
        addr, sep, port = text[1:].partition("]:")
    else:
        addr, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ScenarioError(f"bad listen address {text!r} (want 1.2.3.4:80 or [::]:80)")
    ipaddress.ip_address(addr)
    return addr, int(port)


def _plain(addr: str) -> str:
    """The address a port is unique against: `::ffff:10.0.0.2` is the same host as `10.0.0.2`."""
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _port_range(proc: Path) -> tuple[int, int]:
    text = (proc / "sys" / sysctl_relpath("net.ipv4.ip_local_port_range")).read_text()
    low, high = (int(p) for p in text.split())
    return low, high


def render_sockets(
    sockets: list[dict[str, Any]], low: int, high: int
) -> tuple[dict[int, list[str]], Counter[tuple[int, str]]]:
    """Lines per family, and (family, state) counts for sockstat.

    Local ports are assigned sequentially from `low` per (src, dst, dport) unless `sport` is
    given, the way a lightly loaded kernel hands them out; a destination never gets the same
    local port twice, so every line is a distinct 4-tuple.
    """
    lines: dict[int, list[str]] = {4: [], 6: []}
    counts: Counter[tuple[int, str]] = Counter()
    next_port: dict[tuple[str, str, int], int] = {}
    inode = 40000
    # LISTEN lines first, as the kernel prints them (the readers rely on it)
    for entry in sorted(sockets, key=lambda e: "listen" not in e):
        count = int(entry.get("count", 1))
        if "listen" in entry:
            addr, port = _split_listen(str(entry["listen"]))
            fam = family_of(addr)
            wildcard = "::" if fam == 6 else "0.0.0.0"
            for _ in range(count):
                inode += 1
                queued = int(entry.get("queued", 0))
                line = socket_line(
                    len(lines[fam]), fam, addr, port, wildcard, 0, "LISTEN", inode, rx_queue=queued
                )
                lines[fam].append(line)
                counts[(fam, "LISTEN")] += 1
            continue
        src, dst, dport = str(entry["src"]), str(entry["dst"]), int(entry["dport"])
        state = str(entry["state"])
        if state not in _STATE_NUM:
            raise ScenarioError(f"unknown TCP state {state!r} (one of {', '.join(TCP_STATES)})")
        fam = family_of(src, dst)
        key = (_plain(src), _plain(dst), dport)
        start = int(entry["sport"]) if "sport" in entry else next_port.get(key, low)
        if "sport" not in entry and start + count - 1 > high:
            raise ScenarioError(
                f"{count} sockets to {dst}:{dport} from {start} run past the range end {high}"
            )
        left = float(entry.get("timer_left", 37.39))
        for sport in range(start, start + count):
            inode += 1
            lines[fam].append(
                socket_line(len(lines[fam]), fam, src, sport, dst, dport, state, inode, left)
            )
            counts[(fam, state)] += 1
        if "sport" not in entry:
            next_port[key] = start + count
    return lines, counts


# --- tree building ---------------------------------------------------------------------------


def _patch_sockstat(path: Path, family: int, counts: Counter[tuple[int, str]]) -> None:
    """Make `TCP:`/`TCP6:` in sockstat{,6} agree with the generated socket table."""
    if not path.exists():
        return
    tw_total = sum(n for (_, st), n in counts.items() if st == "TIME_WAIT")
    live = {
        f: sum(n for (ff, st), n in counts.items() if ff == f and st != "TIME_WAIT") for f in (4, 6)
    }
    out = []
    for line in path.read_text().splitlines():
        if family == 4 and line.startswith("TCP:"):
            line = f"TCP: inuse {live[4]} orphan 0 tw {tw_total} alloc {live[4] + live[6]} mem 0"
        elif family == 6 and line.startswith("TCP6:"):
            line = f"TCP6: inuse {live[6]}"
        out.append(line)
    path.write_text("\n".join(out) + "\n")


def _patch_counters(proc: Path, patches: dict[str, int]) -> None:
    """Set `Group.Field` values in proc/net/netstat or proc/net/snmp (header/value pairs)."""
    remaining = dict(patches)
    for rel in ("net/netstat", "net/snmp"):
        path = proc / rel
        if not path.exists():
            continue
        lines = path.read_text().splitlines()
        for i in range(0, len(lines) - 1, 2):
            group, _, names = lines[i].partition(":")
            vgroup, _, values = lines[i + 1].partition(":")
            name_list, value_list = names.split(), values.split()
            changed = False
            for key in list(remaining):
                g, _, f = key.partition(".")
                if g == group and f in name_list:
                    value_list[name_list.index(f)] = str(remaining.pop(key))
                    changed = True
            if changed:
                lines[i + 1] = f"{vgroup}: " + " ".join(value_list)
        path.write_text("\n".join(lines) + "\n")
    if remaining:
        raise ScenarioError(f"counters not found in the base tree: {sorted(remaining)}")


def build_tree(scenario: Scenario, dest: Path) -> Path:
    """Materialise the scenario's host under `dest` (proc/ and etc/); returns `dest`."""
    base = ROOTS / scenario.base
    if not base.is_dir():
        raise ScenarioError(f"{scenario.path}: no base tree {base}")
    shutil.copytree(base, dest, symlinks=True, dirs_exist_ok=True)
    proc = dest / "proc"
    for key, value in scenario.sysctl.items():
        path = proc / "sys" / sysctl_relpath(key)
        if value is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value + "\n")
    if scenario.counters:
        _patch_counters(proc, scenario.counters)
    low, high = _port_range(proc)
    lines, counts = render_sockets(scenario.sockets, low, high)
    for fam, rel in ((4, "net/tcp"), (6, "net/tcp6")):
        path = proc / rel
        if not path.exists() and not lines[fam]:
            continue  # a kernel without IPv6, and no IPv6 socket asked for
        header = path.read_text().splitlines()[0]
        path.write_text("\n".join([header, *lines[fam]]) + "\n")
    if "proc/net/sockstat" not in scenario.files:
        _patch_sockstat(proc / "net" / "sockstat", 4, counts)
    if "proc/net/sockstat6" not in scenario.files:
        _patch_sockstat(proc / "net" / "sockstat6", 6, counts)
    for rel, text in scenario.files.items():
        rel_path = Path(rel)
        if rel_path.is_absolute() or ".." in rel_path.parts:
            raise ScenarioError(f"{scenario.path}: file overlay {rel!r} must be relative")
        path = dest / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for rel, link_target in scenario.symlinks.items():
        rel_path = Path(rel)
        if rel_path.is_absolute() or ".." in rel_path.parts:
            raise ScenarioError(f"{scenario.path}: symlink {rel!r} must be relative")
        path = dest / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(link_target)
    if scenario.config is not None:
        cfg = dest / "etc" / "portaudit" / "config.yaml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(yaml.safe_dump(scenario.config, sort_keys=False))
    return dest


def with_previous_run(scenario: Scenario, host: HostRoot, facts: Facts) -> Facts:
    """`facts` with rates against the scenario's earlier run, through the real state file."""
    if scenario.previous_run is None:
        return facts
    seconds_ago, patches = scenario.previous_run
    if isinstance(facts.counters, Unavailable):
        raise ScenarioError(f"{scenario.path}: previous_run needs counters in the base tree")
    counters = {group: dict(row) for group, row in facts.counters.items()}
    for dotted, value in patches.items():
        group, _, name = dotted.partition(".")
        if name not in counters.get(group, {}):
            raise ScenarioError(f"{scenario.path}: previous_run: no counter {dotted}")
        counters[group][name] = value
    save_state(
        host,
        CounterState(
            collected_at=facts.collected_at - seconds_ago,
            boot_id=read_boot_id(host),
            netns=facts.host.netns,
            counters=counters,
        ),
    )
    return with_rates(facts, host, save=False)[0]


def with_live_listener_facts(scenario: Scenario, facts: Facts) -> Facts:
    """`facts` with the listener facts only a live host gives (backlog and IPV6_V6ONLY from
    sock_diag, the holding process from /proc/PID/fd and /proc/PID/limits), from the listen
    entries."""
    wanted = {}
    for entry in scenario.sockets:
        if "listen" in entry and set(entry) & {"backlog", "v6only", "process"}:
            wanted[_split_listen(str(entry["listen"]))] = entry
    if not wanted or isinstance(facts.sockets, Unavailable):
        return facts
    listeners = []
    for li in facts.sockets.listeners:
        entry = wanted.get((li.addr, li.port))
        if entry is None:
            listeners.append(li)
            continue
        changes: dict[str, Any] = {}
        if "backlog" in entry:
            changes["backlog"] = int(entry["backlog"])
        if "v6only" in entry:
            changes["v6only"] = bool(entry["v6only"])
            changes["v6only_source"] = "sock_diag"
        proc = entry.get("process")
        if isinstance(proc, dict):
            unknown = set(proc) - {"pid", "command", "fds", "fd_limit", "fds_free", "note"}
            if unknown:
                raise ScenarioError(f"{scenario.path}: process takes no {sorted(unknown)}")
            changes.update(
                pid=proc.get("pid"),
                command=str(proc.get("command", "")),
                fds=proc.get("fds"),
                fd_limit=proc.get("fd_limit"),
                fds_free=proc.get("fds_free"),
                process_note=str(proc.get("note", "")),
            )
        listeners.append(dataclasses.replace(li, **changes))
    sockets = dataclasses.replace(facts.sockets, listeners=tuple(listeners))
    return dataclasses.replace(facts, sockets=sockets)
