"""Control groups (spec#117-132), judged from the cgroup v2 files the runner sees at /sys/fs/cgroup."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ..catalogue import check
from ..harness import CGROUP_ROOT, Fail, Skip, need, tail, wait_for
from .namespaces import _userns

ROOT = Path(CGROUP_ROOT)


def _controllers() -> set[str]:
    try:
        return set((ROOT / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def _cg_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return ""


def _created(ctx, mutate, args=("/bin/sleep", "30")):
    """Create a container (cleaned up at the end of the check); returns (bundle, container, pid)."""
    b = ctx.bundle(list(args))
    mutate(b)
    b.save()
    cm = ctx.container(b)
    c = cm.__enter__()
    ctx.on_cleanup(lambda: cm.__exit__(None, None, None))
    c.create()
    return b, c, c.state()["pid"]


@check(117, fails_on="crun 1.8.1 (cgroupfs) hangs in create on a frozen cgroup; a runtime that reports failure "
       "but leaves the container")
def cgroup_fit(ctx):
    path = ctx.cgroup_path("busy")
    d = ROOT / path.lstrip("/")
    d.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "60"])
    ctx.on_cleanup(lambda: (sleeper.kill(), sleeper.wait(5)))
    (d / "cgroup.procs").write_text(str(sleeper.pid))
    ctx.on_cleanup(lambda: (ROOT / "cgroup.procs").write_text(str(sleeper.pid)))
    b = ctx.bundle(["/bin/true"])
    b.linux["cgroupsPath"] = path
    b.save()
    with ctx.container(b) as c:
        p = c.create(check=False)
        if p.returncode != 0:
            need(c.state_or_none() is None, "create refused the non-empty cgroup but left a container")
            return "the runtime vets cgroups: a non-empty cgroup was refused cleanly"
        pid = c.state()["pid"]
        need(_cg_of(pid) == path, f"create accepted the cgroup but the process is in {_cg_of(pid)}")
    # a frozen cgroup: refuse cleanly, or (not vetting) still finish create in bounded time
    frozen = ctx.cgroup_path("frozen")
    fz = ROOT / frozen.lstrip("/")
    fz.mkdir(parents=True)
    (fz / "cgroup.freeze").write_text("1")
    ctx.on_cleanup(lambda: (fz / "cgroup.freeze").write_text("0"))
    b2 = ctx.bundle(["/bin/true"])
    b2.linux["cgroupsPath"] = frozen
    b2.save()
    with ctx.container(b2) as c:
        try:
            p = c.create(check=False, timeout=20)
        except Fail:
            raise Fail("create into a frozen cgroup neither failed nor finished within 20 s "
                       "(runc 1.1.5 refuses such a cgroup)") from None
        finally:
            (fz / "cgroup.freeze").write_text("0")
        if p.returncode != 0:
            need(c.state_or_none() is None, "create refused the frozen cgroup but left a container")
            return "the runtime vets cgroups: a frozen cgroup was refused cleanly"
    return "the runtime does not vet cgroups (allowed)"


@check(118, fails_on="crun 1.8.1 with --cgroup-manager=disabled (no cgroup made)")
def cgroups_path_absolute(ctx):
    path = ctx.cgroup_path("abs")
    _, c, pid = _created(ctx, lambda b: b.linux.update(cgroupsPath=path))
    need(_cg_of(pid) == path, f"the container is in {_cg_of(pid)!r}, not {path!r}")
    procs = (ROOT / path.lstrip("/") / "cgroup.procs").read_text().split()
    need(str(pid) in procs, f"{pid} not in {path}/cgroup.procs")


@check(119, fails_on="crun 1.8.1 with --cgroup-manager=disabled (no cgroup made)")
def cgroups_path_stable(ctx):
    path = ctx.cgroup_path("deep/er/path")
    seen = []
    for _ in range(2):
        b = ctx.bundle(["/bin/sleep", "30"])
        b.linux["cgroupsPath"] = path
        b.save()
        with ctx.container(b) as c:
            c.create()
            seen.append(_cg_of(c.state()["pid"]))
    need(seen == [path, path], f"the same cgroupsPath gave {seen}")


def _owner(path: str) -> dict[str, int]:
    d = ROOT / path.lstrip("/")
    if not d.is_dir():
        raise Fail(f"the container's cgroup {path} was not created")
    out = {".": d.stat().st_uid}
    for f in d.iterdir():
        if f.is_file():
            out[f.name] = f.stat().st_uid
    return out


def _cgroup_mount(b, ro: bool):
    b.mount(destination="/sys/fs/cgroup", type="cgroup", source="cgroup",
            options=["nosuid", "noexec", "nodev", "relatime"] + (["ro"] if ro else ["rw"]))


@check(120, fails_on="a runtime that chowns the cgroup to the user namespace without a cgroup namespace")
def cgroup_no_chown_without_cgroupns(ctx):
    path = ctx.cgroup_path("nocgns")

    def m(b):
        _userns(b)
        b.linux["cgroupsPath"] = path
    _created(ctx, m)
    owned = {k: v for k, v in _owner(path).items() if v != 0}
    need(not owned, f"chowned although no cgroup namespace is created: {owned}")


DELEGATE_FALLBACK = ["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"]


def _delegated() -> list[str]:
    p = Path("/sys/kernel/cgroup/delegate")
    return p.read_text().split() if p.exists() else DELEGATE_FALLBACK


def _delegation(ctx, rw_mount: bool):
    path = ctx.cgroup_path("deleg")

    def m(b):
        _userns(b)
        b.linux["namespaces"].append({"type": "cgroup"})
        b.linux["cgroupsPath"] = path
        _cgroup_mount(b, ro=not rw_mount)
    _created(ctx, m)
    return _owner(path)


@check(121, fails_on="runc 1.1.5 (no cgroup delegation: nothing is chowned)")
def cgroup_chown_with_rw_mount(ctx):
    owners = _delegation(ctx, rw_mount=True)
    need(owners["."] == 100000, f"the cgroup directory is owned by {owners['.']}, not the container root's host "
         "uid 100000, although the config has a writable cgroup mount")
    owners = _delegation(ctx, rw_mount=False)
    need(all(v == 0 for v in owners.values()), "the cgroup was chowned although the cgroup mount is read-only")


@check(122, fails_on="runc 1.1.5 (nothing is delegated)")
def cgroup_chown_only_delegated(ctx):
    owners = _delegation(ctx, rw_mount=True)
    want = {".", *(f for f in _delegated() if f in owners)}
    got = {k for k, v in owners.items() if v == 100000}
    need(got == want, f"chowned: {sorted(got)}; should be exactly {sorted(want)}")


@check(123, fails_on="crun 1.8.1 with --cgroup-manager=disabled (no device program); without the wrapper crun cannot "
       "load one here (RLIMIT_MEMLOCK needs CAP_SYS_RESOURCE)")
def device_rules(ctx):
    # host devices bound in (runtimes add their own allow rules for the default /dev nodes, so
    # judge devices outside that list): the block device loop0 7:0 and loop-control 10:237
    path = ctx.cgroup_path("devices")

    def m(b):
        b.process["args"] = ["/probe", "open", "/dev/cf-loop0", "/dev/cf-loop"]
        b.linux["cgroupsPath"] = path
        b.mount(destination="/dev/cf-loop0", type="bind", source="/dev/loop0", options=["bind"])
        b.mount(destination="/dev/cf-loop", type="bind", source="/dev/loop-control", options=["bind"])
        b.linux["resources"] = {"devices": [
            {"allow": False, "access": "rwm"},                                     # type unset = all
            {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"},
            {"allow": True, "type": "c", "major": 10, "minor": 237, "access": "rw"},
            {"allow": False, "type": "c", "major": 10, "minor": 237, "access": "w"},  # later rule wins
        ]}
    got = ctx.probe(mutate=m)
    want = {"/dev/cf-loop0": [0, 1], "/dev/cf-loop": [0, 1]}
    need(got == want, f"open errnos (read, write) {got}, expected {want} (1 = EPERM)")


def _controller_or_error(ctx, controller: str, resources: dict, judge):
    """With the controller: the setting must show in its file. Without: create must fail."""
    path = ctx.cgroup_path(controller)
    b = ctx.bundle(["/bin/sleep", "30"])
    b.linux["cgroupsPath"] = path
    b.linux["resources"] = resources
    b.save()
    if controller not in _controllers():
        ctx.expect_error(b, f"{list(resources)} although this host's cgroup v2 has no {controller} controller")
        return f"no {controller} controller here: create failed as it must"
    with ctx.container(b) as c:
        c.create()
        judge(ROOT / path.lstrip("/"))
    return None


@check(124, fails_on="a runtime that silently ignores memory limits it cannot apply")
def memory_limits(ctx):
    def judge(d):
        need((d / "memory.max").read_text().strip() == str(64 << 20), "memory.max not set")
    return _controller_or_error(ctx, "memory", {"memory": {"limit": 64 << 20}}, judge)


@check(125)
def memory_check_before_update(ctx):
    if "memory" not in _controllers():
        raise Skip("needs the cgroup v2 memory controller, which this host does not offer")
    path = ctx.cgroup_path("cbu")
    _, c, pid = _created(ctx, lambda b: b.linux.update(cgroupsPath=path, resources={
        "memory": {"limit": 256 << 20, "checkBeforeUpdate": True}}), args=("/bin/sh", "-c", "sleep 30"))
    c.start()
    res = ctx.tmpdir("upd") / "r.json"
    res.write_text(json.dumps({"memory": {"limit": 4096, "checkBeforeUpdate": True}}))
    p = c.op("update", "-r", str(res), c.id, check=False)
    need(p.returncode != 0, "update to a limit below current usage was accepted")


@check(126, fails_on="a runtime that silently ignores cpu settings it cannot apply")
def cpu_settings(ctx):
    def judge(d):
        need((d / "cpu.max").read_text().split() == ["50000", "100000"], "cpu.max not set")
    return _controller_or_error(ctx, "cpu", {"cpu": {"quota": 50000, "period": 100000}}, judge)


@check(127, fails_on="a runtime that silently ignores blockIO settings it cannot apply")
def blkio_settings(ctx):
    def judge(d):
        need("default" in (d / "io.weight").read_text() or (d / "io.bfq.weight").exists(), "io weight not set")
    return _controller_or_error(ctx, "io", {"blockIO": {"weight": 500}}, judge)


@check(128, fails_on="crun 1.8.1 with --cgroup-manager=disabled (limits not applied)")
def hugepage_limits(ctx):
    if "hugetlb" not in _controllers():
        raise Skip("no hugetlb controller")
    sizes = [p.name for p in Path("/sys/kernel/mm/hugepages").iterdir()] if Path("/sys/kernel/mm/hugepages").exists() else []
    if "hugepages-2048kB" not in sizes:
        raise Skip("no 2MB huge pages on this host")
    path = ctx.cgroup_path("huge")
    limit = 4 << 20
    _created(ctx, lambda b: b.linux.update(cgroupsPath=path, resources={"hugepageLimits": [{"pageSize": "2MB", "limit": limit}]}))
    d = ROOT / path.lstrip("/")
    rsvd = d / "hugetlb.2MB.rsvd.max"
    f = rsvd if rsvd.exists() else d / "hugetlb.2MB.max"
    need(f.exists(), f"{f.name} missing: the hugetlb controller is not enabled for the container's cgroup")
    need(f.read_text().strip() == str(limit), f"{f.name} is {f.read_text().strip()}, not {limit}"
         + (" (the kernel supports reservation limits)" if f is rsvd else ""))


@check(129, fails_on="a runtime that skips pids.limit 0 (treating 0 as unset)")
def pids_limit(ctx):
    def judge(d):
        need((d / "pids.max").read_text().strip() == "0", "pids.limit 0 did not give pids.max 0")
    return _controller_or_error(ctx, "pids", {"pids": {"limit": 0}}, judge)


@check(130, fails_on="a runtime that ignores rdma settings it cannot apply")
def rdma_limits(ctx):
    b = ctx.bundle(["/bin/true"])
    b.linux["resources"] = {"rdma": {"mlx5_0": {}}}
    b.save()
    ctx.expect_error(b, "an rdma entry with neither hcaHandles nor hcaObjects")

    def judge(d):
        need("mlx5_0" in (d / "rdma.max").read_text(), "rdma.max not set")
    return _controller_or_error(ctx, "rdma", {"rdma": {"mlx5_0": {"hcaHandles": 3, "hcaObjects": 100}}}, judge)


@check(131, fails_on="crun 1.8.1 with --cgroup-manager=disabled (unified keys not written)")
def unified(ctx):
    if "hugetlb" not in _controllers():
        raise Skip("no hugetlb controller")
    path = ctx.cgroup_path("unified")
    _created(ctx, lambda b: b.linux.update(cgroupsPath=path, resources={"unified": {"hugetlb.2MB.max": "6291456"}}))
    f = ROOT / path.lstrip("/") / "hugetlb.2MB.max"
    need(f.exists() and f.read_text().strip() == "6291456", "unified hugetlb.2MB.max was not written")
    if "memory" not in _controllers():
        b = ctx.bundle(["/bin/true"])
        b.linux["cgroupsPath"] = ctx.cgroup_path("unified-missing")
        b.linux["resources"] = {"unified": {"memory.max": "67108864"}}
        b.save()
        ctx.expect_error(b, "a unified key of a controller the host does not have (memory)")


@check(132, fails_on="a runtime that ignores v1-only settings on a v2 host")
def v1_only_settings(ctx):
    for res, what in (({"memory": {"kernel": 64 << 20}}, "memory.kernel"),
                      ({"cpu": {"realtimeRuntime": 1000, "realtimePeriod": 100000}}, "cpu.realtimeRuntime")):
        b = ctx.bundle(["/bin/true"])
        b.linux["cgroupsPath"] = ctx.cgroup_path("v1")
        b.linux["resources"] = res
        b.save()
        ctx.expect_error(b, f"the v1-only setting {what} on a cgroup v2 host")
