"""Namespaces, user namespace mappings, time namespace (spec#99-109)."""
from __future__ import annotations

import os
import subprocess
import time

from ..catalogue import check
from ..harness import Fail, Skip, need, ns_inode, wait_for

ALL = ["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"]
PROC_NAME = {"network": "net", "mount": "mnt"}
USERNS_MAPS = {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
               "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}


def _mine(kind: str) -> int:
    return ns_inode("self", PROC_NAME.get(kind, kind))


def _userns(b):
    b.linux["namespaces"].append({"type": "user"})
    b.linux.update(USERNS_MAPS)
    # sysfs and mqueue need the container's own user namespace to own them; keep the config minimal
    b.config["mounts"] = [m for m in b.config["mounts"] if m["destination"] not in ("/sys", "/dev/mqueue")]


@check(99, fails_on="runc 1.1.5 (no time namespace)")
def all_namespace_types(ctx):
    def m(b):
        _userns(b)
        b.linux["namespaces"] += [{"type": "cgroup"}, {"type": "time"}]
    d = ctx.probe(mutate=m)
    same = [k for k in ALL if d["ns"][PROC_NAME.get(k, k)] == _mine(k)]
    need(not same, f"namespaces not new although configured: {same}")


@check(100, fails_on="a runtime that resolves a relative namespace path against its cwd")
def ns_path_absolute(ctx):
    b = ctx.bundle(["/bin/true"])
    b.linux["namespaces"] = [n for n in b.linux["namespaces"] if n["type"] != "network"]
    b.linux["namespaces"].append({"type": "network", "path": "proc/self/ns/net"})
    b.save()
    ctx.expect_error(b, "a relative namespace path")


def _holder(ctx, *flags):
    p = subprocess.Popen(["unshare", *flags, "--", "sleep", "60"])
    ctx.on_cleanup(lambda: (p.kill(), p.wait(5)))
    need(wait_for(lambda: ns_inode(p.pid, "uts") != _mine("uts") if "--uts" in flags else
                  ns_inode(p.pid, "net") != _mine("network"), 5), "helper namespace not ready")
    return p


@check(101, fails_on="a runtime that makes a new namespace although a path is given")
def ns_join_path(ctx):
    h = _holder(ctx, "--net", "--uts")

    def m(b):
        b.linux["namespaces"] = [n for n in b.linux["namespaces"] if n["type"] not in ("network", "uts")]
        b.linux["namespaces"] += [{"type": "network", "path": f"/proc/{h.pid}/ns/net"},
                                  {"type": "uts", "path": f"/proc/{h.pid}/ns/uts"}]
        b.config.pop("hostname", None)
    d = ctx.probe(mutate=m)
    need(d["ns"]["net"] == ns_inode(h.pid, "net"), "the container did not join the given network namespace")
    need(d["ns"]["uts"] == ns_inode(h.pid, "uts"), "the container did not join the given uts namespace")


@check(102, fails_on="a runtime that joins whatever the path names")
def ns_path_type_mismatch(ctx):
    h = _holder(ctx, "--net")
    b = ctx.bundle(["/bin/true"])
    b.linux["namespaces"] = [n for n in b.linux["namespaces"] if n["type"] != "ipc"]
    b.linux["namespaces"].append({"type": "ipc", "path": f"/proc/{h.pid}/ns/net"})
    b.save()
    ctx.expect_error(b, "an ipc namespace path that names a network namespace")


@check(103, fails_on="a runtime that shares a listed namespace with the host")
def ns_new_without_path(ctx):
    d = ctx.probe(mutate=lambda b: b.linux["namespaces"].append({"type": "cgroup"}))
    same = [k for k in ("pid", "network", "mount", "ipc", "uts", "cgroup") if d["ns"][PROC_NAME.get(k, k)] == _mine(k)]
    need(not same, f"listed namespaces were not created: {same}")


@check(104, fails_on="a runtime that always creates every namespace")
def ns_unlisted_inherited(ctx):
    def m(b):
        b.linux["namespaces"] = [n for n in b.linux["namespaces"] if n["type"] in ("pid", "mount")]
        b.config.pop("hostname", None)
        b.config["mounts"] = [x for x in b.config["mounts"] if x["destination"] not in ("/sys", "/dev/mqueue")]
    d = ctx.probe(mutate=m)
    new = [k for k in ("network", "ipc", "uts", "user", "cgroup", "time") if d["ns"][PROC_NAME.get(k, k)] != _mine(k)]
    need(not new, f"namespaces not listed were not inherited: {new}")


@check(105, fails_on="a runtime that keeps the last of two entries of one type")
def ns_duplicate(ctx):
    b = ctx.bundle(["/bin/true"])
    b.linux["namespaces"].append({"type": "uts"})
    b.save()
    ctx.expect_error(b, "two uts namespace entries")


@check(106, fails_on="runc 1.1.5 (ignores domainname)")
def hostname_domainname(ctx):
    d = ctx.probe(mutate=lambda b: b.config.update(hostname="cf-host", domainname="cf.example"))
    need(d["hostname"] == "cf-host", f"hostname {d['hostname']!r}")
    need(d["domainname"] == "cf.example", f"domainname {d['domainname']!r}")


@check(107, fails_on="a runtime that writes other maps than configured")
def userns_mappings(ctx):
    def m(b):
        _userns(b)
        b.linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 1000},
                                  {"containerID": 1000, "hostID": 300000, "size": 10}]
    d = ctx.probe(mutate=m)
    uid_map = [tuple(map(int, ln.split())) for ln in d["uid_map"].splitlines()]
    gid_map = [tuple(map(int, ln.split())) for ln in d["gid_map"].splitlines()]
    need(sorted(uid_map) == [(0, 100000, 1000), (1000, 300000, 10)], f"uid_map {uid_map}")
    need(gid_map == [(0, 100000, 65536)], f"gid_map {gid_map}")
    need(d["uid"] == 0, f"uid 0 in the container is {d['uid']}")


@check(108, fails_on="a runtime that chowns the rootfs to the mapped root")
def userns_no_chown(ctx):
    b = ctx.bundle(["/probe"])
    _userns(b)
    b.save()
    before = [(p, os.lstat(p).st_uid, os.lstat(p).st_gid) for p in (b.rootfs, b.rootfs / "bin/busybox", b.rootfs / "tmp")]
    rc, out, err, _ = ctx.run(b)
    need(rc == 0, f"the user-namespace container failed: {err[-300:]}")
    after = [(p, os.lstat(p).st_uid, os.lstat(p).st_gid) for p, _, _ in before]
    need(before == after, f"ownership changed: {before} -> {after}")


@check(109, fails_on="runc 1.1.5 (no time namespace or timeOffsets)")
def time_offsets(ctx):
    off = 10 * 365 * 86400

    def m(b):
        b.linux["namespaces"].append({"type": "time"})
        b.linux["timeOffsets"] = {"monotonic": {"secs": off, "nanosecs": 0}, "boottime": {"secs": 2 * off, "nanosecs": 0}}
    t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
    b0 = time.clock_gettime(time.CLOCK_BOOTTIME)
    d = ctx.probe(mutate=m)
    need(d["ns"]["time"] != _mine("time"), "no new time namespace")
    need(abs(d["monotonic"] - (t0 + off)) < 60, f"monotonic {d['monotonic']} is not host {t0:.0f} + {off}")
    need(abs(d["boottime"] - (b0 + 2 * off)) < 60, f"boottime {d['boottime']} is not host {b0:.0f} + {2 * off}")
