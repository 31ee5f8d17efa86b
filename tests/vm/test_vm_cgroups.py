"""Every cgroup v2 limit enforced on a real kernel with all controllers (the VM lane).

Run by scripts/vm-lane inside a qemu guest; skipped elsewhere. Each test forks a helper child
(tests/vm/cgchild.py), moves it into a fresh cgroup and proves the kernel enforces the limit.
"""
from __future__ import annotations

import errno
import os
import signal
import time
import uuid

import pytest

from pyoci.cgroups import DEFAULT_ALLOWED_DEVICES, Cgroup
from pyoci.cgroups.resources import blkio_weight_to_io_weight
from pyoci.errors import StageError
from vm.cgchild import Child

pytestmark = [pytest.mark.vm, pytest.mark.root]
ROOT = "/sys/fs/cgroup"
MiB = 1 << 20


@pytest.fixture
def cg():
    top = f"/pyoci-vm-{uuid.uuid4().hex[:8]}"
    c = Cgroup(f"{top}/ctr")
    yield c
    c.destroy()
    assert not os.path.exists(ROOT + top), "the cgroup tree was not removed"


def read(cg: Cgroup, name: str) -> str:
    with open(os.path.join(cg.dir, name)) as f:
        return f.read().strip()


def test_all_controllers_are_offered():
    ctl = open(f"{ROOT}/cgroup.controllers").read().split()
    for c in ("cpu", "cpuset", "io", "memory", "pids", "hugetlb"):
        assert c in ctl


def test_memory_max_oom_kills_a_hog(cg):
    cg.create({"memory": {"limit": 32 * MiB, "swap": 32 * MiB}})
    assert read(cg, "memory.max") == str(32 * MiB)
    if os.path.exists(os.path.join(cg.dir, "memory.swap.max")):
        assert read(cg, "memory.swap.max") == "0"
    assert cg.oom_kill_count() == 0
    with Child() as c:
        cg.add_pid(c.pid)
        assert c.ask("alloc 8") == "allocated 8"            # below the limit: fine
        assert c.ask("alloc 128", timeout=60) is None      # the hog dies
        status = c.wait(30)
        assert status is not None and os.WIFSIGNALED(status)
        assert os.WTERMSIG(status) == signal.SIGKILL
    assert cg.oom_kill_count() >= 1
    st = cg.stats()
    assert st["memory"]["usage"]["limit"] == 32 * MiB
    assert st["memory"]["usage"]["failcnt"] >= 1
    assert int(st["memory"]["raw"].get("anon", 0)) >= 0


def test_memory_reservation_and_unlimited(cg):
    cg.create({"memory": {"limit": -1, "reservation": 16 * MiB}})
    assert read(cg, "memory.max") == "max"
    assert read(cg, "memory.low") == str(16 * MiB)
    if os.path.exists(os.path.join(cg.dir, "memory.swap.max")):
        assert read(cg, "memory.swap.max") == "max"


def test_pids_max_stops_fork(cg):
    cg.create({"pids": {"limit": 3}})
    assert read(cg, "pids.max") == "3"
    with Child() as c:
        cg.add_pid(c.pid)
        assert c.ask("fork 5") == f"errno {errno.EAGAIN} after 2"
        assert int(read(cg, "pids.current")) == 3
        assert cg.stats()["pids"] == {"current": 3, "limit": 3}
        # update of a running container: lift the limit, forking works again
        cg.update({"pids": {"limit": -1}})
        assert read(cg, "pids.max") == "max"
        assert c.ask("fork 2") == "forked 2"
        assert len(cg.pids()) == 5


def test_pids_limit_zero_is_a_real_limit(cg):
    cg.create({"pids": {"limit": 0}})
    assert read(cg, "pids.max") == "0"
    with Child() as c:
        cg.add_pid(c.pid)      # moving in is allowed, forking is not
        assert c.ask("fork 1") == f"errno {errno.EAGAIN} after 0"


def test_cpu_and_cpuset_written_read_back_and_enforced(cg):
    cpu = {"shares": 1024, "quota": 10000, "period": 100000, "burst": 5000, "idle": 0,
           "cpus": "0", "mems": "0"}
    cg.create({"cpu": cpu})
    assert read(cg, "cpu.weight") == "100"
    assert read(cg, "cpu.max") == "10000 100000"
    assert read(cg, "cpu.max.burst") == "5000"
    assert read(cg, "cpu.idle") == "0"
    assert read(cg, "cpuset.cpus") == "0"
    assert read(cg, "cpuset.mems") == "0"
    with Child() as c:
        cg.add_pid(c.pid)
        assert os.sched_getaffinity(c.pid) == {0}
        assert c.ask("spin 1", timeout=60).startswith("spun ")
        st = cg.stats()
        assert st["cpu"]["throttling"]["throttledPeriods"] > 0   # cpu.max was enforced
        assert st["cpu"]["usage"]["total"] > 0
        cg.update({"cpu": {"shares": 2048, "quota": -1, "period": 50000}})
        assert read(cg, "cpu.weight") == "174"
        assert read(cg, "cpu.max") == "max 50000"


def _block_device() -> tuple[int, int]:
    name = os.environ.get("PYOCI_VM_DISK")
    cands = [name] if name else sorted(os.listdir("/sys/block"))
    for n in cands:
        if n and not n.startswith(("loop", "ram", "sr", "zram")):
            with open(f"/sys/block/{n}/dev") as f:
                major, minor = f.read().strip().split(":")
            return int(major), int(minor)
    pytest.fail("the VM lane has no block device (scripts/vm-lane attaches one)")


def test_io_max_and_weight_written_and_read_back(cg):
    major, minor = _block_device()
    dev = f"{major}:{minor}"
    cg.create({"blockIO": {
        "weight": 500,
        "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": MiB}],
        "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}],
    }})
    assert read(cg, "io.max") == f"{dev} rbps={MiB} wbps=max riops=max wiops=100"
    if os.path.exists(os.path.join(cg.dir, "io.bfq.weight")):
        assert read(cg, "io.bfq.weight").split()[:2] == ["default", "500"]
    else:
        assert read(cg, "io.weight").splitlines()[0] == \
            f"default {blkio_weight_to_io_weight(500)}"
    cg.update({"blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor,
                                                       "rate": 2 * MiB}]}})
    assert read(cg, "io.max") == f"{dev} rbps={2 * MiB} wbps=max riops=max wiops=100"
    assert isinstance(cg.stats()["blkio"]["ioServiceBytesRecursive"], list)


def test_device_rule_denies_dev_null(cg):
    rules = [{"allow": False, "access": "rwm"}] + DEFAULT_ALLOWED_DEVICES + \
        [{"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
    cg.create({"devices": rules})
    with Child() as c:
        cg.add_pid(c.pid)
        assert c.ask("open /dev/null r") == f"errno {errno.EPERM}"
        assert c.ask("open /dev/zero rw") == "ok"
        # replace the program while the process runs: /dev/null allowed again
        cg.update({"devices": [{"allow": False, "access": "rwm"}] + DEFAULT_ALLOWED_DEVICES})
        assert c.ask("open /dev/null rw") == "ok"


def test_freeze_and_thaw(cg):
    cg.create({"pids": {"limit": 10}})
    with Child() as c:
        cg.add_pid(c.pid)
        cg.freeze()
        assert cg.is_frozen()
        assert c.ask("ping", timeout=0.5) is None
        cg.thaw()
        assert c.reply(timeout=10) == "pong"
        assert not cg.is_frozen()


def test_update_memory_of_a_running_process(cg):
    cg.create({"memory": {"limit": 256 * MiB}})
    with Child() as c:
        cg.add_pid(c.pid)
        assert c.ask("alloc 24") == "allocated 24"
        # checkBeforeUpdate: a limit below the current usage is rejected and not written
        with pytest.raises(StageError, match="rejecting memory limit"):
            cg.update({"memory": {"limit": 8 * MiB, "checkBeforeUpdate": True}})
        assert read(cg, "memory.max") == str(256 * MiB)
        cg.update({"memory": {"limit": 64 * MiB, "checkBeforeUpdate": True}})
        assert read(cg, "memory.max") == str(64 * MiB)
        assert c.ask("alloc 128", timeout=60) is None     # now the new limit kills it
        assert os.WIFSIGNALED(c.wait(30))
    assert cg.oom_kill_count() >= 1


def test_kill_and_destroy_everything(cg):
    cg.create({"pids": {"limit": 20}, "memory": {"limit": 128 * MiB}})
    with Child() as c:
        cg.add_pid(c.pid)
        assert c.ask("fork 4") == "forked 4"
        assert len(cg.pids()) == 5
        cg.kill()
        assert os.WIFSIGNALED(c.wait(10))
        deadline = time.monotonic() + 10
        while cg.pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cg.pids() == []
