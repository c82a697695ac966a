"""Every network namespace on the host, and a facts snapshot collected inside each.

Containers run in their own network namespaces, each with its own sysctls (the ephemeral
range, `tcp_tw_reuse`), its own socket table and its own exhaustion. Namespaces are found
where `ip netns` names them (bind mounts under `/run/netns`) and through the `/proc/<pid>/ns/net`
link of every process (the unnamed ones Docker and Kubernetes make), deduplicated by the nsfs
inode. To read one, a forked child enters it with `setns(CLONE_NEWNET)` and runs the ordinary
collectors: after `setns`, `/proc/self/net`, `/proc/sys/net` and a new netlink socket all show
that namespace. The child sends the snapshot back as JSON over a pipe, so the parent never
leaves its own namespace.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auditor.facts.model import Facts, SnapshotError, Unavailable, facts_from_json, to_jsonable
from auditor.hostfs import HostRoot

CHILD_TIMEOUT = 120.0
"""A namespace whose collection takes longer than this is reported as skipped, not waited on."""
MAX_SNAPSHOT_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class NetnsRef:
    """One network namespace: its nsfs inode and how it was found (a name, else a pid)."""

    inode: int
    path: str
    """What to open for `setns`: `/run/netns/<name>` or `/proc/<pid>/ns/net`."""
    name: str = ""
    pid: int | None = None
    current: bool = False
    """The namespace portaudit itself runs in (collected in-process, no root needed)."""
    owner: str = ""
    """The container or pod it belongs to (`docker 3f2a1b2c3d4e`, `pod <uid>`), when known."""

    @property
    def label(self) -> str:
        """How findings name it: the `ip netns` name, else its container or pod, else the pid
        and inode it was found by."""
        if self.name:
            return self.name
        if self.current:
            return f"net:[{self.inode}]"
        if self.owner:
            return f"{self.owner} net:[{self.inode}]"
        return f"pid {self.pid} net:[{self.inode}]"


def _nsfs_stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _owner(host: HostRoot, pid: int) -> str:
    """The container or pod a process belongs to, from its cgroup path ("" when none)."""
    from auditor.containers import process_owner

    found = process_owner(host, pid)
    return found.label if found is not None else ""


def list_netns(host: HostRoot) -> tuple[list[NetnsRef], list[tuple[str, str]]]:
    """The namespaces, current first, then named ones, then those found only through a pid.

    Also returns (what, reason) for the places that could not be looked at (without root,
    other users' `/proc/<pid>/ns/net` cannot be read).
    """
    own = _nsfs_stat(str(host.proc_path("self/ns/net")))
    if own is None:
        return [], [("self", f"{host.proc_path('self/ns/net')}: cannot stat")]
    nsfs_dev = own.st_dev
    by_inode: dict[int, NetnsRef] = {}
    order: list[int] = []
    problems: list[tuple[str, str]] = []

    def add(ref: NetnsRef) -> None:
        if ref.inode not in by_inode:
            by_inode[ref.inode] = ref
            order.append(ref.inode)
        elif ref.name and not by_inode[ref.inode].name:
            old = by_inode[ref.inode]
            by_inode[ref.inode] = NetnsRef(ref.inode, ref.path, ref.name, old.pid, old.current)

    add(NetnsRef(own.st_ino, str(host.proc_path("self/ns/net")), pid=os.getpid(), current=True))
    run_netns = host.path("/run/netns")
    try:
        names = sorted(e.name for e in os.scandir(run_netns) if not e.name.startswith("."))
    except FileNotFoundError:
        names = []
    except OSError as exc:
        names = []
        problems.append((str(run_netns), exc.strerror or str(exc)))
    for name in names:
        path = str(run_netns / name)
        st = _nsfs_stat(path)
        if st is None or st.st_dev != nsfs_dev:
            problems.append((f"netns {name}", f"{path}: not a mounted network namespace"))
            continue
        add(NetnsRef(st.st_ino, path, name=name))
    denied = 0
    try:
        pids = sorted(int(e.name) for e in os.scandir(host.proc) if e.name.isdigit())
    except OSError as exc:
        pids = []
        problems.append((str(host.proc), exc.strerror or str(exc)))
    for pid in pids:
        path = str(host.proc_path(f"{pid}/ns/net"))
        try:
            st = os.stat(path)
        except PermissionError:
            denied += 1
            continue
        except OSError:  # the process exited, or a kernel thread without the link
            continue
        if st.st_ino not in by_inode:
            add(NetnsRef(st.st_ino, path, pid=pid, owner=_owner(host, pid)))
    if denied:
        what = f"{denied} process{'es' if denied != 1 else ''}"
        problems.append((what, "its /proc/<pid>/ns/net link is not readable here"))
    return [by_inode[i] for i in order], problems


def collect_in_netns(
    host: HostRoot,
    ref: NetnsRef,
    timeout: float = CHILD_TIMEOUT,
    owners_above: float | None = None,
) -> Facts | Unavailable:
    """A full snapshot collected inside `ref`, or why it could not be."""
    return _collect(host, [ref], timeout, owners_above, workers=1)[0]


@dataclass
class _Running:
    """A forked child collecting one namespace, and what it has sent so far."""

    index: int
    pid: int
    deadline: float
    chunks: list[bytes]
    size: int = 0


def _workers() -> int:
    """Children run at once: one per processor this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except OSError:
        return max(1, os.cpu_count() or 1)


def _collect(
    host: HostRoot,
    refs: list[NetnsRef],
    timeout: float,
    owners_above: float | None,
    workers: int,
) -> list[Facts | Unavailable]:
    """Each ref's snapshot or reason, in order, with up to `workers` children at a time.

    The current namespace is read in this process while the children run. setns and the
    collectors are resolved and imported here, once, so a forked child starts with them.
    """
    from auditor.facts.collect import collect_facts

    results: list[Facts | Unavailable | None] = [None] * len(refs)
    pending = list(range(len(refs)))
    running: dict[int, _Running] = {}  # read end of the child's pipe -> child
    current: list[int] = []
    if any(not ref.current for ref in refs) and os.geteuid() == 0:
        _setns_call()
    try:
        while pending or running:
            while pending and len(running) < workers:
                i = pending.pop(0)
                ref = refs[i]
                if ref.current:
                    current.append(i)
                elif os.geteuid() != 0:
                    results[i] = Unavailable(
                        "entering another network namespace needs root (CAP_SYS_ADMIN)"
                    )
                else:
                    started = _start(host, ref, i, timeout, owners_above)
                    if isinstance(started, Unavailable):
                        results[i] = started
                    else:
                        running[started[0]] = started[1]
            if current and (running or not pending):
                for i in current:  # in this process, while the children work
                    results[i] = collect_facts(host, owners_above)
                current.clear()
            if running:
                _step(running, results, timeout)
    finally:
        for rfd, child in running.items():
            _kill(child.pid)
            os.waitpid(child.pid, 0)
            os.close(rfd)
    return [r if r is not None else Unavailable("not collected") for r in results]


def _start(
    host: HostRoot, ref: NetnsRef, index: int, timeout: float, owners_above: float | None
) -> tuple[int, _Running] | Unavailable:
    try:
        fd = os.open(ref.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return Unavailable(f"{ref.path}: {exc.strerror or exc}")
    try:
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(rfd)
            _child(host, fd, wfd, owners_above)
        os.close(wfd)
    finally:
        os.close(fd)
    return rfd, _Running(index, pid, time.monotonic() + timeout, [])


def _step(
    running: dict[int, _Running], results: list[Facts | Unavailable | None], timeout: float
) -> None:
    """Wait for output from any child; finish those that closed their pipe or ran out of time."""
    now = time.monotonic()
    left = min(c.deadline for c in running.values()) - now
    ready, _, _ = select.select(list(running), [], [], max(0.0, left))
    for rfd in ready:
        child = running[rfd]
        chunk = os.read(rfd, 1 << 20)
        if chunk:
            child.size += len(chunk)
            child.chunks.append(chunk)
            if child.size <= MAX_SNAPSHOT_BYTES:
                continue
            reply: Facts | Unavailable = Unavailable(
                f"the snapshot was larger than {MAX_SNAPSHOT_BYTES >> 20} MiB"
            )
            _kill(child.pid)
        else:
            reply = _reply(b"".join(child.chunks))
        del running[rfd]
        os.close(rfd)
        os.waitpid(child.pid, 0)
        results[child.index] = reply
    now = time.monotonic()
    for rfd, child in list(running.items()):
        if child.deadline <= now:
            _kill(child.pid)
            del running[rfd]
            os.close(rfd)
            os.waitpid(child.pid, 0)
            results[child.index] = Unavailable(f"collection did not finish within {timeout:.0f} s")


def _reply(data: bytes) -> Facts | Unavailable:
    try:
        reply = json.loads(data)
        if "facts" in reply:
            facts: Facts = facts_from_json(reply["facts"])
            return facts
        return Unavailable(str(reply.get("error", "no reply from the collecting process")))
    except (ValueError, SnapshotError) as exc:
        return Unavailable(f"bad reply from the collecting process: {exc}")


def _child(host: HostRoot, nsfd: int, wfd: int, owners_above: float | None) -> None:
    code = 0
    try:
        from auditor.facts.collect import collect_facts

        try:
            setns_net(nsfd)
            reply = {"facts": to_jsonable(collect_facts(host, owners_above))}
        except Exception as exc:  # reported to the parent as this namespace's reason
            reply = {"error": f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)}
        payload = json.dumps(reply).encode()
        view = memoryview(payload)
        while view:
            view = view[os.write(wfd, view) :]
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


CLONE_NEWNET = 0x40000000


@functools.cache
def _setns_call() -> Callable[[int, int], None]:
    """`os.setns` on Python 3.12+; before that libc's, through ctypes, resolved once.

    The symbol comes from the running process (libc is loaded), so no `find_library`, which
    runs ldconfig; the parent resolves it before forking and every child inherits it.
    """
    setns = getattr(os, "setns", None)
    if setns is not None:
        fn: Callable[[int, int], None] = setns
        return fn
    import ctypes

    libc_setns = ctypes.CDLL(None, use_errno=True).setns

    def call(fd: int, nstype: int) -> None:
        if libc_setns(fd, nstype) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")

    return call


def setns_net(fd: int) -> None:
    """`setns(fd, CLONE_NEWNET)`."""
    _setns_call()(fd, CLONE_NEWNET)


def collect_all_netns(
    host: HostRoot,
    problems: list[tuple[str, str]] | None = None,
    owners_above: float | None = None,
) -> list[tuple[NetnsRef, Facts | Unavailable]]:
    """Every namespace with its snapshot, or the reason it was skipped.

    `problems`, when given, receives (what, reason) for places that could not be searched for
    namespaces at all (other users' processes without root), for the report's skipped list.
    Namespaces are read by one child each, as many at a time as there are processors.
    """
    refs, found_problems = list_netns(host)
    if problems is not None:
        problems.extend(found_problems)
    facts = _collect(host, refs, CHILD_TIMEOUT, owners_above, workers=_workers())
    return list(zip(refs, facts, strict=True))


def require_live(host: HostRoot) -> None:
    """`--all-netns` reads the running kernel; a fixture `--proc` has no namespaces to enter."""
    from auditor.errors import UsageError

    if not host.is_live:
        raise UsageError("--all-netns reads the running kernel; it cannot be used with --proc")
    if not Path("/proc/self/ns/net").exists():
        raise UsageError("--all-netns: this kernel has no network namespaces")
