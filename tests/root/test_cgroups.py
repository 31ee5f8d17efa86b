"""cgroup v2 on this host, for real: placement, freeze/thaw, kill, hugetlb, eBPF device rules,
and the missing-controller error that leaves nothing behind.

conftest mounts cgroup2 at /sys/fs/cgroup in the test's private mount namespace; on this host
only `hugetlb` is offered there. Every test uses a unique top-level cgroup and removes it.
"""
from __future__ import annotations

import errno
import os
import signal
import time
import uuid

import pytest

from pyoci.cgroups import DEFAULT_ALLOWED_DEVICES, Cgroup, cgroup_root, resolve_path
from pyoci.errors import StageError, SyscallError
from vm.cgchild import Child

pytestmark = pytest.mark.root
ROOT = "/sys/fs/cgroup"


@pytest.fixture
def top():
    """A unique top-level cgroup name; asserts it is gone at the end (and removes leftovers)."""
    name = f"/pyoci-test-{uuid.uuid4().hex[:10]}"
    yield name
    leftover = os.path.join(ROOT, name.lstrip("/"))
    if os.path.isdir(leftover):
        for d, _, _ in os.walk(leftover, topdown=False):
            try:
                with open(os.path.join(d, "cgroup.kill"), "w") as f:
                    f.write("1")
            except OSError:
                pass
            try:
                os.rmdir(d)
            except OSError:
                pass
        pytest.fail(f"test left {leftover} behind")


def cgroup_of(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return ""


def test_root_is_the_v2_mount():
    assert cgroup_root() == ROOT
    assert "hugetlb" in open(f"{ROOT}/cgroup.controllers").read().split()


def test_placement_and_pids(top):
    cg = Cgroup(f"{top}/ctr")
    cg.create({})
    assert cg.created_dirs == [top, f"{top}/ctr"]
    with Child() as c:
        cg.add_pid(c.pid)
        assert cgroup_of(c.pid) == f"{top}/ctr"
        assert cg.pids() == [c.pid]
        assert c.ask("ping") == "pong"
        cg.destroy()
        assert os.WIFSIGNALED(c.wait()) and os.WTERMSIG(c.status) == signal.SIGKILL
    assert not os.path.exists(f"{ROOT}{top}")
    cg.destroy()  # idempotent


def test_pids_are_recursive(top):
    cg = Cgroup(f"{top}/ctr")
    cg.create(None)
    os.mkdir(f"{cg.dir}/sub")      # as the container itself would (no controllers enabled)
    sub = Cgroup(f"{top}/ctr/sub")
    with Child() as a, Child() as b:
        cg.add_pid(a.pid)
        sub.add_pid(b.pid)
        assert sorted(cg.pids()) == sorted([a.pid, b.pid])
        assert sub.pids() == [b.pid]
        cg.destroy()  # removes the sub-cgroup too
        assert a.wait() is not None and b.wait() is not None
    assert not os.path.exists(f"{ROOT}{top}")


def test_freeze_and_thaw_a_real_process(top):
    cg = Cgroup(f"{top}/ctr")
    cg.create({})
    try:
        with Child() as c:
            cg.add_pid(c.pid)
            assert not cg.is_frozen()
            cg.freeze()
            assert cg.is_frozen()
            assert open(f"{cg.dir}/cgroup.freeze").read().strip() == "1"
            # a frozen process does not answer
            assert c.ask("ping", timeout=0.5) is None
            cg.thaw()
            assert not cg.is_frozen()
            assert c.reply(timeout=10) == "pong"  # the answer to the ping sent while frozen
            assert c.ask("ping") == "pong"
    finally:
        cg.destroy()


def test_kill_reaches_every_process(top):
    cg = Cgroup(f"{top}/ctr")
    cg.create({})
    try:
        with Child() as c:
            cg.add_pid(c.pid)
            assert c.ask("fork 3") == "forked 3"
            assert len(cg.pids()) == 4
            cg.kill()
            assert os.WIFSIGNALED(c.wait()) and os.WTERMSIG(c.status) == signal.SIGKILL
            deadline = time.monotonic() + 10
            while cg.pids() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert cg.pids() == []
    finally:
        cg.destroy()


def test_kill_on_a_frozen_cgroup(top):
    cg = Cgroup(f"{top}/ctr")
    cg.create({})
    with Child() as c:
        cg.add_pid(c.pid)
        cg.freeze()
        cg.destroy()  # kills the frozen process and removes the cgroup
        assert os.WIFSIGNALED(c.wait())
    assert not cg.exists()


def test_hugetlb_limits_written(top):
    cg = Cgroup(f"{top}/ctr")
    two_mb = 2 << 20
    cg.create({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * two_mb},
                                  {"pageSize": "1GB", "limit": 0}]})
    try:
        assert open(f"{cg.dir}/hugetlb.2MB.max").read().strip() == str(4 * two_mb)
        assert open(f"{cg.dir}/hugetlb.1GB.max").read().strip() == "0"
        if os.path.exists(f"{cg.dir}/hugetlb.2MB.rsvd.max"):
            assert open(f"{cg.dir}/hugetlb.2MB.rsvd.max").read().strip() == str(4 * two_mb)
        # hugetlb was enabled in every ancestor's subtree_control
        assert "hugetlb" in open(f"{ROOT}{top}/cgroup.subtree_control").read().split()
        cg.update({"hugepageLimits": [{"pageSize": "2MB", "limit": two_mb}]})
        assert open(f"{cg.dir}/hugetlb.2MB.max").read().strip() == str(two_mb)
        st = cg.stats()
        assert st["hugetlb"]["2MB"]["usage"] == 0
        assert st["pids"]["current"] == 0
    finally:
        cg.destroy()


def test_unified_is_written_as_given(top):
    cg = Cgroup(f"{top}/ctr")
    cg.create({"unified": {"hugetlb.2MB.max": str(6 << 20), "cgroup.max.depth": "3"}})
    try:
        assert open(f"{cg.dir}/hugetlb.2MB.max").read().strip() == str(6 << 20)
        assert open(f"{cg.dir}/cgroup.max.depth").read().strip() == "3"
    finally:
        cg.destroy()


def test_missing_controller_is_named_and_nothing_is_left(top):
    cg = Cgroup(f"{top}/a/b")
    with pytest.raises(StageError) as ei:
        cg.create({"memory": {"limit": 64 << 20}})
    assert "'memory'" in str(ei.value)
    assert not os.path.exists(f"{ROOT}{top}")
    with pytest.raises(StageError) as ei:
        cg.create({"unified": {"pids.max": "10"}})
    assert "'pids'" in str(ei.value)
    assert not os.path.exists(f"{ROOT}{top}")


def test_failed_write_after_mkdir_removes_what_create_made(top):
    cg = Cgroup(f"{top}/a/b")
    with pytest.raises(SyscallError) as ei:
        cg.create({"unified": {"hugetlb.2MB.max": "not-a-number"}})
    assert ei.value.errno == errno.EINVAL and "hugetlb.2MB.max" in str(ei.value)
    assert not os.path.exists(f"{ROOT}{top}")


def test_existing_parent_is_kept(top):
    parent = Cgroup(top)
    parent.create({})
    cg = Cgroup(f"{top}/ctr")
    cg.create({})
    assert cg.created_dirs == [f"{top}/ctr"]
    cg.destroy()
    assert parent.exists() and not cg.exists()
    parent.destroy()
    assert not parent.exists()


def test_default_path_under_pyoci_is_removed_when_empty():
    cid = f"t-{uuid.uuid4().hex[:8]}"
    pre = os.path.isdir(f"{ROOT}/pyoci")
    cg = Cgroup(resolve_path(None, cid))
    cg.create({})
    assert cg.exists() and cg.path == f"/pyoci/{cid}"
    cg.destroy()
    assert not cg.exists()
    if not pre:
        assert not os.path.exists(f"{ROOT}/pyoci")


# --- eBPF device program ------------------------------------------------------------------
def open_in_cgroup(cg: Cgroup, *requests: tuple[str, str]) -> list[str]:
    with Child() as c:
        cg.add_pid(c.pid)
        return [c.ask(f"open {path} {mode}") for path, mode in requests]


def test_device_rules_deny_and_allow(top):
    cg = Cgroup(f"{top}/ctr")
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"}]   # zero
    cg.create({"devices": rules})
    try:
        assert open_in_cgroup(cg, ("/dev/null", "r"), ("/dev/zero", "rw")) == \
            [f"errno {errno.EPERM}", "ok"]
        # outside the cgroup the same open works
        fd = os.open("/dev/null", os.O_RDONLY)
        os.close(fd)
    finally:
        cg.destroy()


def test_device_rule_access_bits(top):
    cg = Cgroup(f"{top}/ctr")
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "r"}]     # null, r
    cg.create({"devices": rules})
    try:
        assert open_in_cgroup(cg, ("/dev/null", "r"), ("/dev/null", "w"), ("/dev/null", "rw")) \
            == ["ok", f"errno {errno.EPERM}", f"errno {errno.EPERM}"]
    finally:
        cg.destroy()


def test_default_allow_list_and_update_replaces_program(top):
    cg = Cgroup(f"{top}/ctr")
    deny_all = [{"allow": False, "access": "rwm"}]
    cg.create({"devices": deny_all + DEFAULT_ALLOWED_DEVICES})
    try:
        assert open_in_cgroup(cg, ("/dev/null", "rw"), ("/dev/urandom", "r")) == ["ok", "ok"]
        # a later deny for /dev/null wins over the earlier allow; replaces the program
        cg.update({"devices": deny_all + DEFAULT_ALLOWED_DEVICES +
                   [{"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]})
        assert open_in_cgroup(cg, ("/dev/null", "r"), ("/dev/zero", "r")) == \
            [f"errno {errno.EPERM}", "ok"]
        from pyoci.cgroups import bpf
        fd = os.open(cg.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert len(bpf.query_device_programs(fd)) == 1   # the old one was detached
        finally:
            os.close(fd)
    finally:
        cg.destroy()


def test_a_running_process_is_restricted_by_update(top):
    cg = Cgroup(f"{top}/ctr")
    cg.create({})
    try:
        with Child() as c:
            cg.add_pid(c.pid)
            assert c.ask("open /dev/null r") == "ok"
            cg.update({"devices": [{"allow": False, "type": "c", "major": 1, "minor": 3,
                                    "access": "rwm"}, {"allow": True, "type": "c", "major": 1,
                                                       "minor": 5, "access": "rwm"}]})
            assert c.ask("open /dev/null r") == f"errno {errno.EPERM}"
            assert c.ask("open /dev/zero r") == "ok"
    finally:
        cg.destroy()
