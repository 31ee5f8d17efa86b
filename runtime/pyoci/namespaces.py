"""Namespace stage: join the ones given by path, create the others, write id maps and
time offsets. Runs in the intermediate process (except write_id_maps: parent side)."""
from __future__ import annotations

import os
from pyoci._record import dataclass

from pyoci.errors import StageError, SyscallError
from pyoci.linux import libc

# Join order: user first (it grants the capabilities to join the others), mount last
# (after it the filesystem view changes).
_JOIN_ORDER = ["user", "pid", "ipc", "uts", "network", "cgroup", "time", "mount"]


@dataclass(frozen=True)
class NamespacePlan:
    new: tuple[str, ...]                 # spec types to create
    join: tuple[tuple[str, str], ...]    # (type, path) to join, in join order
    uid_mappings: tuple[tuple[int, int, int], ...] = ()
    gid_mappings: tuple[tuple[int, int, int], ...] = ()
    time_offsets: tuple[tuple[str, int, int], ...] = ()   # (clock, secs, nanosecs)

    @property
    def new_flags(self) -> int:
        f = 0
        for t in self.new:
            f |= libc.NS_FLAGS[t]
        return f

    def creates(self, t: str) -> bool:
        return t in self.new

    def describe(self) -> dict:
        return {"create": list(self.new), "join": {t: p for t, p in self.join},
                "uidMappings": [list(m) for m in self.uid_mappings],
                "gidMappings": [list(m) for m in self.gid_mappings],
                "timeOffsets": {c: {"secs": s, "nanosecs": n} for c, s, n in self.time_offsets}}


def build_namespace_plan(linux: dict) -> NamespacePlan:
    new, join = [], []
    for ns in linux.get("namespaces") or []:
        t = ns["type"]
        if ns.get("path"):
            join.append((t, ns["path"]))
        else:
            new.append(t)
    join.sort(key=lambda tp: _JOIN_ORDER.index(tp[0]))

    def maps(key):
        return tuple((int(m["containerID"]), int(m["hostID"]), int(m["size"]))
                     for m in linux.get(key) or [])

    offsets = tuple((clock, int(v.get("secs", 0)), int(v.get("nanosecs", 0)))
                    for clock, v in sorted((linux.get("timeOffsets") or {}).items()))
    return NamespacePlan(tuple(new), tuple(join), maps("uidMappings"), maps("gidMappings"), offsets)


def join_all(joins: tuple[tuple[str, str], ...]) -> None:
    """Open every namespace file first (paths may live in namespaces we are about to
    leave), then setns in order; a wrong type is refused by the kernel (EINVAL)."""
    fds = []
    try:
        for t, path in joins:
            try:
                # O_NONBLOCK: a fifo given as a namespace path must not hang us (setns refuses it)
                fds.append((t, path, os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)))
            except OSError as e:
                raise SyscallError("open", e.errno, path, stage="namespaces",
                                   detail=f"{t} namespace") from None
        for t, path, fd in fds:
            try:
                libc.setns(fd, libc.NS_FLAGS[t], path)
            except SyscallError as e:
                e.detail = f"joining the {t} namespace (is it a {t} namespace file?)"
                raise e.with_stage("namespaces")
    finally:
        for _, _, fd in fds:
            os.close(fd)


def unshare(flags: int) -> None:
    if flags:
        try:
            libc.unshare(flags)
        except SyscallError as e:
            raise e.with_stage("namespaces")


def write_id_maps(pid: int, plan: NamespacePlan) -> None:
    """Parent side: fill /proc/PID/{uid,gid}_map of the child's new user namespace."""
    def fmt(maps):
        return "".join(f"{c} {h} {s}\n" for c, h, s in maps)

    for name, maps in (("uid_map", plan.uid_mappings), ("gid_map", plan.gid_mappings)):
        if not maps:
            continue
        path = f"/proc/{pid}/{name}"
        try:
            with open(path, "w") as f:
                f.write(fmt(maps))
        except OSError as e:
            raise SyscallError("write", e.errno, path, stage="namespaces",
                               detail=fmt(maps).strip().replace("\n", ", ")) from None


def write_time_offsets(plan: NamespacePlan) -> None:
    """In the process that just unshared CLONE_NEWTIME, before any process enters it."""
    if not plan.time_offsets:
        return
    data = "".join(f"{clock} {s} {n}\n" for clock, s, n in plan.time_offsets)
    try:
        with open("/proc/self/timens_offsets", "w") as f:
            f.write(data)
    except OSError as e:
        raise SyscallError("write", e.errno, "/proc/self/timens_offsets", stage="namespaces") from None


def set_names(hostname: str | None, domainname: str | None) -> None:
    try:
        if hostname is not None:
            libc.sethostname(hostname)
        if domainname is not None:
            libc.setdomainname(domainname)
    except SyscallError as e:
        raise e.with_stage("namespaces")


def require_new_uts(plan: NamespacePlan, hostname, domainname) -> None:
    if (hostname or domainname) and not plan.creates("uts") and not any(t == "uts" for t, _ in plan.join):
        raise StageError("namespaces", "unable to set hostname without a private UTS namespace")
