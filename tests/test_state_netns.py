"""Counter state is kept per network namespace, named by the namespace's inode (real kernel)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.netns import make_netns, requires_netns


@requires_netns
def test_two_namespaces_keep_two_bases(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    args = ("audit", "--root", str(root), "--state", "--format", "json", "--fail-on", "never")
    with make_netns("pa-sta") as a, make_netns("pa-stb") as b:
        inodes = {}
        for ns in (a, b):
            link = ns.run(["readlink", "/proc/self/ns/net"]).stdout.strip()
            m = re.fullmatch(r"net:\[(\d+)\]", link)
            assert m, link
            inodes[ns.name] = m[1]
            got = ns.portaudit(*args)
            assert got.returncode == 0, got.stderr
            assert json.loads(got.stdout)["host"]["netns"] == link
        counters = root / "var/lib/portaudit/counters"
        assert sorted(p.name for p in counters.iterdir()) == sorted(
            f"net-{i}.json" for i in inodes.values()
        )
        for ns in (a, b):
            saved = json.loads((counters / f"net-{inodes[ns.name]}.json").read_text())
            assert saved["netns"] == f"net:[{inodes[ns.name]}]"
        again = a.portaudit(*args)
        assert again.returncode == 0, again.stderr
        assert "another network namespace" not in again.stdout
