"""Seeded random sysctl.d trees for the differential boot-model test.

Each tree is a dict: host path -> file bytes, or `("link", target)` for a symlink. Every key is
a per-network-namespace `net.` key, written in the spellings real files carry: dotted, slash,
a leading `/`, globs, `-` prefixes and `-key` exclusions, with lone CRs, NULs, CRLF and
`\\n\\r` line ends, comments, repeats, `conf.default` and interface lines, masks and basename
overrides across the four directories, and /etc/sysctl.conf with or without the link to it.
"""

from __future__ import annotations

import random

Entry = bytes | tuple[str, str]

DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d")
CONF_KEYS = ("rp_filter", "accept_local", "log_martians", "arp_ignore", "promote_secondaries")
IFACES = ("all", "default", "lo")
OTHER_KEYS: dict[str, tuple[int, ...]] = {
    "net.ipv4.tcp_fin_timeout": (30, 45, 60),
    "net.ipv4.tcp_keepalive_time": (600, 7200),
    "net.core.somaxconn": (128, 4096),
}
PROBE_KEYS: tuple[str, ...] = (
    *(f"net.ipv4.conf.{i}.{k}" for k in CONF_KEYS for i in IFACES),
    *OTHER_KEYS,
)
NAMES = ("10-a.conf", "50-default.conf", "60-b.conf", "99-sysctl.conf", "zz-last.conf", ".h.conf")


def _spell(rng: random.Random, key: str) -> str:
    """`key` as a file might write it."""
    form = rng.random()
    if form < 0.45:
        return key
    slash = key.replace(".", "/")
    if form < 0.65:
        return slash
    if form < 0.85:
        return "/" + slash
    return "/" + key  # slash first: one odd component, which /proc/sys does not have


def _glob(rng: random.Random) -> str:
    k = rng.choice(CONF_KEYS)
    return rng.choice(
        [
            f"net.ipv4.conf.*.{k}",
            f"net/ipv4/conf/*/{k}",
            f"/net/ipv4/conf/*/{k}",
            f"net.ipv4.conf.l[o].{k}",
            f"net.ipv4.conf.de*.{k}",
            "net.ipv4.tcp_fin_time?ut",
        ]
    )


def _value(rng: random.Random, key: str) -> str:
    for k, choices in OTHER_KEYS.items():
        if key.endswith(k.split(".")[-1]):
            return str(rng.choice(choices))
    return str(rng.choice((0, 0, 1, 1, 2)))


def _line(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.08:
        return rng.choice(["# comment", "; note = 1", "", "   "])
    if r < 0.16:
        g = _glob(rng)
        return f"{g} = {_value(rng, g)}"
    if r < 0.21:
        k = f"net.ipv4.conf.{rng.choice(IFACES)}.{rng.choice(CONF_KEYS)}"
        return f"-{_spell(rng, k)}"
    if rng.random() < 0.5:
        key = f"net.ipv4.conf.{rng.choice(IFACES)}.{rng.choice(CONF_KEYS)}"
    else:
        key = rng.choice(list(OTHER_KEYS))
    dash = "-" if rng.random() < 0.1 else ""
    sp1, sp2 = rng.choice(["", " ", "\t"]), rng.choice(["", " ", "  "])
    return f"{dash}{_spell(rng, key)}{sp1}={sp2}{_value(rng, key)}"


def _file(rng: random.Random) -> bytes:
    out: list[str] = []
    for _ in range(rng.randint(1, 7)):
        out.append(_line(rng))
        r = rng.random()
        if r < 0.08:
            out.append("\r")  # a lone CR: the next line starts on the same editor line
        elif r < 0.14:
            out.append("\0")
        elif r < 0.22:
            out.append("\r\n")
        elif r < 0.26:
            out.append("\n\r")
        else:
            out.append("\n")
    text = "".join(out)
    if rng.random() < 0.15:
        text = text.rstrip("\n\r\0")
    return text.encode()


def generate(seed: int) -> dict[str, Entry]:
    """One tree, the same for the same seed."""
    rng = random.Random(seed)
    tree: dict[str, Entry] = {}
    for _ in range(rng.randint(1, 6)):
        d, name = rng.choice(DIRS), rng.choice(NAMES)
        path = f"{d}/{name}"
        if rng.random() < 0.08:
            tree[path] = ("link", "/dev/null")
        else:
            tree[path] = _file(rng)
    if rng.random() < 0.5:
        tree["/etc/sysctl.conf"] = _file(rng)
        if rng.random() < 0.6:
            tree["/etc/sysctl.d/99-sysctl.conf"] = ("link", "../sysctl.conf")
    return tree


def must_be_net_only(tree: dict[str, Entry]) -> None:
    """Refuse a tree with any key outside `net.` (cut as systemd cuts lines, and stricter)."""
    for path, entry in tree.items():
        if not isinstance(entry, bytes):
            continue
        text = entry.decode("utf-8", "replace")
        for raw in text.replace("\r", "\n").replace("\0", "\n").split("\n"):
            s = raw.strip().lstrip("-").strip().lstrip("/")
            if s and s[0] not in "#;" and not s.startswith(("net.", "net/")):
                raise ValueError(f"{path}: {raw!r} is not a net. key")
