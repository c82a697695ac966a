"""Apply generated sysctl.d trees with the real `systemd-sysctl`, each in a fresh network namespace.

Run by tests/test_boot_differential.py as `unshare --mount python3 tests/boot_ns.py batch ...`,
never directly. In `batch` mode it first proves it is in a mount namespace other than the
caller's, then mounts empty tmpfs over /run, /usr/local/lib, /etc/sysctl.d and /usr/lib/sysctl.d
and binds a scratch file over /etc/sysctl.conf: the host's own sysctl files (which set global
keys such as kernel.pid_max) are hidden, and the mounts vanish with the process. For each tree it
copies the files in, refuses any key outside `net.`, and runs `apply` under `unshare --net`:
`apply` proves it is in a network namespace other than the caller's, reads the probed keys,
runs systemd-sysctl, and reads them again (`batch-audit` then also runs `portaudit audit --only
CFG-001` over the tree, in that freshly booted namespace). `/proc/sys/net` is that fresh namespace's own, so
nothing reaches the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Run as a script: this directory is sys.path[0], so its sibling runner is importable.
from sysctl_ns import read_keys

SYSTEMD_SYSCTL = "/usr/lib/systemd/systemd-sysctl"
DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d")


def mount(*argv: str) -> None:
    subprocess.run(["mount", *argv], check=True, capture_output=True)


def net_only() -> None:
    """Refuse unless every line the four directories and /etc/sysctl.conf hold names `net.`."""
    files = [Path("/etc/sysctl.conf")]
    for d in DIRS:
        files.extend(sorted(Path(d).iterdir()))
    for f in files:
        if not f.is_file():
            continue
        text = f.read_bytes().decode("utf-8", "replace")
        for raw in text.replace("\r", "\n").replace("\0", "\n").split("\n"):
            s = raw.strip().lstrip("-").strip().lstrip("/")
            if s and s[0] not in "#;" and not s.startswith(("net.", "net/")):
                sys.exit(f"refusing: {f}: line {raw!r} is not a net. key")


def apply(parent_net: str, audit_root: str, keys: list[str]) -> None:
    """Boot this namespace with systemd-sysctl; with `audit_root`, then audit it for CFG-001."""
    if os.readlink("/proc/self/ns/net") == parent_net:
        sys.exit("refusing: not in a private network namespace")
    net_only()
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    before = read_keys(keys)
    out = subprocess.run([SYSTEMD_SYSCTL], capture_output=True, text=True, env=env, check=False)
    after = read_keys(keys)
    result = {"rc": out.returncode, "stderr": out.stderr, "before": before, "after": after}
    if audit_root != "-":
        argv = [sys.executable, "-m", "auditor", "audit", "--root", audit_root, "--only"]
        argv += ["CFG-001", "--format", "json", "--no-state", "--fail-on", "never"]
        audit = subprocess.run(argv, capture_output=True, text=True, check=False)
        result["audit"] = audit.stdout
        result["audit_stderr"] = audit.stderr
    print(json.dumps(result))


def _clear(d: Path) -> None:
    for p in d.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _copy_in(tree: Path) -> None:
    for d in DIRS:
        _clear(Path(d))
        src = tree / d.lstrip("/")
        if not src.is_dir():
            continue
        for p in src.iterdir():
            dst = Path(d) / p.name
            if p.is_symlink():
                os.symlink(os.readlink(p), dst)
            else:
                dst.write_bytes(p.read_bytes())
    conf = tree / "etc/sysctl.conf"
    Path("/etc/sysctl.conf").write_bytes(conf.read_bytes() if conf.is_file() else b"")


def batch(trees_dir: str, parent_mnt: str, parent_net: str, audit: bool, keys: list[str]) -> None:
    if os.readlink("/proc/self/ns/mnt") == parent_mnt:
        sys.exit("refusing: not in a private mount namespace")
    mount("--make-rprivate", "/")
    mount("-t", "tmpfs", "tmpfs", "/run")
    mount("-t", "tmpfs", "tmpfs", "/usr/local/lib")
    for d in DIRS:
        Path(d).mkdir(parents=True, exist_ok=True)
        if d != "/run/sysctl.d":
            mount("-t", "tmpfs", "tmpfs", d)
    scratch = Path("/run/boot-ns-sysctl.conf")
    scratch.write_bytes(b"")
    mount("--bind", str(scratch), "/etc/sysctl.conf")
    results = {}
    for tree in sorted(Path(trees_dir).iterdir(), key=lambda p: int(p.name)):
        _copy_in(tree)
        audit_root = str(tree) if audit else "-"
        out = subprocess.run(
            ["unshare", "--net", sys.executable, __file__, "apply", parent_net, audit_root, *keys],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            sys.exit(f"tree {tree.name}: {out.stderr.strip()}")
        results[tree.name] = json.loads(out.stdout)
    print(json.dumps(results))


def main() -> None:
    mode, *rest = sys.argv[1:]
    if mode in ("batch", "batch-audit"):
        trees_dir, parent_mnt, parent_net, *keys = rest
        batch(trees_dir, parent_mnt, parent_net, mode == "batch-audit", keys)
    elif mode == "apply":
        parent_net, audit_root, *keys = rest
        apply(parent_net, audit_root, keys)
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
