"""Reverse-path filtering per interface: `net/ipv4/conf/<if>/rp_filter` under /proc/sys.

The kernel applies max(conf/all/rp_filter, conf/<if>/rp_filter) to packets arriving on an
interface (IN_DEV_RPFILTER in include/linux/inetdevice.h): 1 is strict (the reply must arrive
on the interface the route back would use), 2 loose, 0 off. Interfaces come and go, so they
are listed from the directory rather than from a fixed key list.
"""

from __future__ import annotations

from auditor.facts.model import Unavailable
from auditor.hostfs import HostRoot, absent


def collect_rp_filter(host: HostRoot) -> dict[str, int] | Unavailable:
    """{"all": 0, "default": 1, "lo": 0, "eth0": 1, ...}: each conf entry's own value."""
    conf = host.proc_path("sys/net/ipv4/conf")
    try:
        names = sorted(p.name for p in conf.iterdir())
    except FileNotFoundError:
        return absent(conf)
    except OSError as exc:
        return Unavailable(f"{conf}: {exc.strerror or exc}")
    out: dict[str, int] = {}
    for name in names:
        got = host.read_text(conf / name / "rp_filter")
        if isinstance(got, Unavailable):
            continue
        try:
            out[name] = int(got.strip())
        except ValueError:
            continue
    if not out:
        return Unavailable(f"{conf}: no readable rp_filter entry")
    return out
