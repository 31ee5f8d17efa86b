"""Snapshots of host resources a test could leak, and their difference.

Mounts are read in the test's own mount namespace (where the runtime works); network
namespaces, links and processes are host-wide; cgroups are read in the private cgroup2 mount.
"""
from __future__ import annotations

import os
import subprocess


def _mounts() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except OSError:
        return set()


def _links() -> set[str]:
    try:
        return set(os.listdir("/sys/class/net"))
    except OSError:
        return set()


def _cgroups() -> set[str]:
    out = set()
    root = "/sys/fs/cgroup"
    for dirpath, dirnames, _ in os.walk(root):
        depth = dirpath[len(root):].count("/")
        if depth >= 4:
            dirnames[:] = []
        for d in dirnames:
            out.add(os.path.join(dirpath, d))
    return out


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _descendants() -> set[str]:
    """Live children of this process. conftest makes pytest a child subreaper, so a container
    process that a test leaked is reparented here and shows up."""
    _reap()
    me = os.getpid()
    out = set()
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == me:
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            state, ppid = fields[0], int(fields[1])
            if ppid != me or state == "Z":
                continue
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):
            continue
        out.add(f"{p} {cmd}")
    return out


def snapshot() -> dict[str, set[str]]:
    return {"mounts": _mounts(), "netns": _netns(), "links": _links(),
            "cgroups": _cgroups(), "processes": _descendants()}


def diff(before: dict[str, set[str]], after: dict[str, set[str]]) -> list[str]:
    out = []
    for kind in before:
        extra = sorted(after[kind] - before[kind])
        if kind == "processes":
            # a process that was already running at the start is not a leak
            old_pids = {x.split()[0] for x in before[kind]}
            extra = [x for x in extra if x.split()[0] not in old_pids]
        for item in extra:
            out.append(f"{kind}: {item}")
    return out
