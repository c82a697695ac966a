"""Run the real `systemd-sysctl` over a fixture root, inside a private mount namespace.

Executed by tests as `unshare --mount [--net] SYS_EXECUTABLE tests/sysctl_ns.py ...` (the
tests' own interpreter, never a bare python3), never directly.
It first proves it is in a mount namespace other than the caller's (and, for `apply`, a network
namespace other than the caller's), then bind-mounts the fixture's sysctl directories and
`/etc/sysctl.conf` over the real ones (those mounts exist only in this namespace and vanish with
it), and runs `systemd-sysctl --cat-config` (`cat`) or `systemd-sysctl` itself (`apply`),
printing JSON. `apply` refuses any fixture line whose key is outside `net.`: in a fresh network
namespace `/proc/sys/net` is that namespace's own, so nothing it writes can reach the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SYSTEMD_SYSCTL = "/lib/systemd/systemd-sysctl"
DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d")


def mount(*argv: str) -> None:
    subprocess.run(["mount", *argv], check=True, capture_output=True)


def net_only(root: Path) -> None:
    """Refuse unless every assignment-like line in the fixture names a `net.` key."""
    files = [root / "etc/sysctl.conf"]
    for d in DIRS:
        p = root / d.lstrip("/")
        if p.is_dir():
            files.extend(f for f in sorted(p.iterdir()) if f.name.endswith(".conf"))
    for f in files:
        if not f.is_file():
            continue
        for line in f.read_bytes().decode("utf-8", "replace").splitlines():
            s = line.strip().lstrip("\ufeff").lstrip("-").strip()
            if not s or s[0] in "#;":
                continue
            if not (s.startswith("net.") or s.startswith("net/")):
                sys.exit(f"refusing: {f}: line {line!r} is not a net.* key")


def main() -> None:
    mode, root_s, parent_mnt, parent_net, *keys = sys.argv[1:]
    root = Path(root_s)
    if os.readlink("/proc/self/ns/mnt") == parent_mnt:
        sys.exit("refusing: not in a private mount namespace")
    if mode == "apply":
        if os.readlink("/proc/self/ns/net") == parent_net:
            sys.exit("refusing: not in a private network namespace")
        net_only(root)
    mount("--make-rprivate", "/")
    mount("-t", "tmpfs", "tmpfs", "/run")
    mount("-t", "tmpfs", "tmpfs", "/usr/local/lib")
    scratch = Path(tempfile.mkdtemp(dir="/run"))
    for d in DIRS:
        Path(d).mkdir(parents=True, exist_ok=True)
        src = root / d.lstrip("/")
        if not src.is_dir():
            src = scratch / d.strip("/").replace("/", "_")
            src.mkdir()
        mount("--bind", str(src), d)
    conf = root / "etc/sysctl.conf"
    if not conf.is_file():
        conf = scratch / "empty-sysctl.conf"
        conf.write_text("")
    mount("--bind", str(conf), "/etc/sysctl.conf")
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    env["SYSTEMD_LOG_LEVEL"] = "debug"
    if mode == "cat":
        out = subprocess.run(
            [SYSTEMD_SYSCTL, "--cat-config", "--no-pager"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        print(json.dumps({"rc": out.returncode, "stdout": out.stdout, "stderr": out.stderr}))
        return
    before = read_keys(keys)
    out = subprocess.run([SYSTEMD_SYSCTL], capture_output=True, text=True, env=env, check=False)
    after = read_keys(keys)
    print(
        json.dumps({"rc": out.returncode, "stderr": out.stderr, "before": before, "values": after})
    )


def read_keys(keys: list[str]) -> dict[str, str]:
    values = {}
    for key in keys:
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path) as fh:
                values[key] = " ".join(fh.read().split())
        except OSError as exc:
            values[key] = f"!{exc.strerror}"
    return values


if __name__ == "__main__":
    main()
