"""The Cgroup manager against a temporary cgroupfs tree (root=tmp_path): every resource field
lands in the right file with the right value; controllers are enabled in the ancestors;
stats are parsed into runc's shape. No root needed."""
from __future__ import annotations

import os

import pytest

from pyoci.cgroups import Cgroup
from pyoci.errors import ConfigError, StageError

MiB = 1 << 20
LEAF_FILES = ["cgroup.procs", "cgroup.controllers", "cgroup.subtree_control", "cgroup.events",
              "cgroup.freeze", "cgroup.kill", "cgroup.max.depth",
              "memory.max", "memory.low", "memory.swap.max", "memory.current", "memory.stat",
              "memory.events", "memory.peak", "memory.swap.current",
              "cpu.weight", "cpu.max", "cpu.max.burst", "cpu.idle", "cpu.stat",
              "cpuset.cpus", "cpuset.mems", "io.weight", "io.max", "io.stat",
              "pids.max", "pids.current", "hugetlb.2MB.max", "hugetlb.2MB.rsvd.max",
              "hugetlb.2MB.current", "hugetlb.2MB.events", "rdma.max"]


def fake_tree(tmp_path, path: str, controllers: str, files=LEAF_FILES, make_leaf=True):
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("\n")
    d = root
    parts = path.strip("/").split("/")
    for i, p in enumerate(parts):
        d = d / p
        if i == len(parts) - 1 and not make_leaf:
            break
        d.mkdir()
        (d / "cgroup.controllers").write_text(controllers + "\n")
        (d / "cgroup.subtree_control").write_text("\n")
    if make_leaf:
        for f in files:
            if not (d / f).exists():
                (d / f).write_text("")
    return str(root), d


def content(d, name) -> str:
    return (d / name).read_text()


def test_create_writes_every_resource(tmp_path):
    root, leaf = fake_tree(tmp_path, "/a/ctr", "cpu cpuset io memory pids hugetlb rdma")
    cg = Cgroup("/a/ctr", root=root)
    cg.create({
        "memory": {"limit": 64 * MiB, "reservation": 32 * MiB, "swap": 96 * MiB},
        "cpu": {"shares": 2048, "quota": 20000, "period": 100000, "burst": 1000, "idle": 0,
                "cpus": "0-1", "mems": "0"},
        "pids": {"limit": 42},
        "blockIO": {"weight": 1000, "throttleReadBpsDevice": [{"major": 8, "minor": 0,
                                                               "rate": 4096}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB}],
        "rdma": {"mlx5_0": {"hcaHandles": 2}},
        "unified": {"cgroup.max.depth": "2"},
    })
    expect = {"memory.max": f"{64 * MiB}\n", "memory.low": f"{32 * MiB}\n",
              "memory.swap.max": f"{32 * MiB}\n", "cpu.weight": "174\n",
              "cpu.max": "20000 100000\n", "cpu.max.burst": "1000\n", "cpu.idle": "0\n",
              "cpuset.cpus": "0-1\n", "cpuset.mems": "0\n", "pids.max": "42\n",
              "io.weight": "10000\n", "io.max": "8:0 rbps=4096\n",
              "hugetlb.2MB.max": f"{4 * MiB}\n", "hugetlb.2MB.rsvd.max": f"{4 * MiB}\n",
              "rdma.max": "mlx5_0 hca_handle=2\n", "cgroup.max.depth": "2\n"}
    for name, value in expect.items():
        assert content(leaf, name) == value, name
    assert cg.created_dirs == []       # the whole tree existed already
    # the needed controllers were enabled in every ancestor (root and /a), not in the leaf
    for d in (tmp_path / "cg", tmp_path / "cg" / "a"):
        enabled = content(d, "cgroup.subtree_control").split()
        assert sorted(enabled) == sorted("+" + c for c in
                                         "memory cpu cpuset pids io hugetlb rdma".split())
    assert content(leaf, "cgroup.subtree_control") == "\n"


def test_multi_line_values_are_written_line_by_line(tmp_path):
    root, leaf = fake_tree(tmp_path, "/ctr", "io")
    Cgroup("/ctr", root=root).create({"blockIO": {
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1}, {"major": 8, "minor": 16,
                                                                        "rate": 2}]}})
    assert content(leaf, "io.max") == "8:0 rbps=1\n8:16 rbps=2\n"


def test_optional_files_follow_what_exists(tmp_path):
    files = [f for f in LEAF_FILES if f not in ("hugetlb.2MB.rsvd.max", "memory.swap.max")]
    files.append("io.bfq.weight")
    root, leaf = fake_tree(tmp_path, "/ctr", "io hugetlb memory", files=files)
    Cgroup("/ctr", root=root).create({"blockIO": {"weight": 300},
                                      "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
                                      "memory": {"limit": -1}})
    assert content(leaf, "io.bfq.weight") == "300\n"      # bfq: the raw blkio weight
    assert content(leaf, "io.weight") == ""
    assert content(leaf, "hugetlb.2MB.max") == "0\n"
    assert not (leaf / "hugetlb.2MB.rsvd.max").exists()
    assert not (leaf / "memory.swap.max").exists()
    assert content(leaf, "memory.max") == "max\n"


def test_missing_controller_fails_before_creating_anything(tmp_path):
    root, _ = fake_tree(tmp_path, "/x", "hugetlb", make_leaf=False)
    cg = Cgroup("/new/a/b", root=root)
    with pytest.raises(StageError) as ei:
        cg.create({"pids": {"limit": 5}})
    assert "controller 'pids' is not available" in str(ei.value)
    assert "available: hugetlb" in str(ei.value)
    assert not os.path.exists(os.path.join(root, "new"))


def test_failure_after_mkdir_removes_created_dirs(tmp_path):
    # root offers memory, but the fresh dirs have no interface files: the write fails (ENOENT)
    root, _ = fake_tree(tmp_path, "/x", "memory", make_leaf=False)
    cg = Cgroup("/new/a/b", root=root)
    with pytest.raises(Exception):
        cg.create({"memory": {"limit": MiB}})
    assert not os.path.exists(os.path.join(root, "new"))
    assert cg.created_dirs == []


def test_invalid_config_creates_nothing(tmp_path):
    root, _ = fake_tree(tmp_path, "/x", "memory", make_leaf=False)
    cg = Cgroup("/new/ctr", root=root)
    with pytest.raises(ConfigError):
        cg.create({"memory": {"kernel": 1}})
    with pytest.raises(ConfigError):
        cg.create({"devices": [{"allow": True, "type": "z"}]})
    assert not os.path.exists(os.path.join(root, "new"))


def test_create_without_resources_makes_dirs_and_records_them(tmp_path):
    root, _ = fake_tree(tmp_path, "/x", "", make_leaf=False)
    cg = Cgroup("/p/q/ctr", root=root)
    cg.create(None)
    assert cg.created_dirs == ["/p", "/p/q", "/p/q/ctr"]
    assert os.path.isdir(cg.dir) and cg.exists()
    cg.destroy()
    assert not os.path.exists(os.path.join(root, "p"))
    cg.destroy()   # idempotent


def test_destroy_with_recorded_dirs_from_another_process(tmp_path):
    root, _ = fake_tree(tmp_path, "/x", "", make_leaf=False)
    Cgroup("/p/ctr", root=root).create({})
    again = Cgroup("/p/ctr", root=root, created_dirs=["/p", "/p/ctr"])
    again.destroy()
    assert not os.path.exists(os.path.join(root, "p"))


def test_destroy_keeps_a_parent_with_other_children(tmp_path):
    root, _ = fake_tree(tmp_path, "/x", "", make_leaf=False)
    a, b = Cgroup("/p/a", root=root), Cgroup("/p/b", root=root)
    a.create({})
    b.create({})
    assert b.created_dirs == ["/p/b"]
    a.destroy()
    assert os.path.isdir(os.path.join(root, "p")) and b.exists()
    b.destroy()
    assert os.path.isdir(os.path.join(root, "p"))   # b did not make /p; a's destroy was first


def test_default_parent_removed_when_empty(tmp_path):
    root, _ = fake_tree(tmp_path, "/x", "", make_leaf=False)
    os.mkdir(os.path.join(root, "pyoci"))
    cg = Cgroup("/pyoci/c1", root=root)
    cg.create({})
    cg.destroy()
    assert not os.path.exists(os.path.join(root, "pyoci"))


def test_update_and_check_before_update(tmp_path):
    root, leaf = fake_tree(tmp_path, "/ctr", "memory pids")
    (leaf / "memory.current").write_text(f"{10 * MiB}\n")
    cg = Cgroup("/ctr", root=root)
    cg.update({"pids": {"limit": -1}, "memory": {"limit": 20 * MiB, "checkBeforeUpdate": True}})
    assert content(leaf, "pids.max") == "max\n"
    assert content(leaf, "memory.max") == f"{20 * MiB}\n"
    with pytest.raises(StageError, match=f"rejecting memory limit {5 * MiB} <= usage"):
        cg.update({"memory": {"limit": 5 * MiB, "checkBeforeUpdate": True}})
    with pytest.raises(StageError, match="rejecting memory\\+swap limit"):
        cg.update({"memory": {"limit": 4 * MiB, "swap": 8 * MiB, "checkBeforeUpdate": True}})
    assert content(leaf, "memory.max") == f"{20 * MiB}\n"
    cg.update({"memory": {"limit": 5 * MiB}})          # without the check it is written
    assert content(leaf, "memory.max") == f"{5 * MiB}\n"


def test_update_of_missing_cgroup(tmp_path):
    root, _ = fake_tree(tmp_path, "/x", "", make_leaf=False)
    with pytest.raises(StageError, match="does not exist"):
        Cgroup("/nope", root=root).update({"pids": {"limit": 1}})


def test_freeze_state_and_add_pid(tmp_path):
    root, leaf = fake_tree(tmp_path, "/ctr", "")
    (leaf / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    cg = Cgroup("/ctr", root=root)
    cg.freeze(timeout=1)
    assert content(leaf, "cgroup.freeze") == "1\n"
    assert cg.is_frozen()
    cg.add_pid(1234)
    assert content(leaf, "cgroup.procs") == "1234\n"
    with pytest.raises(StageError, match="did not thaw"):
        cg.thaw(timeout=0.05)      # the fake kernel never reports frozen 0
    (leaf / "cgroup.events").write_text("populated 0\nfrozen 0\n")
    assert not cg.is_frozen()
    with pytest.raises(StageError, match="did not freeze"):
        cg.freeze(timeout=0.05)
    assert content(leaf, "cgroup.freeze") == "0\n"     # rolled back to thawed


def test_pids_recursive_and_oom_count(tmp_path):
    root, leaf = fake_tree(tmp_path, "/ctr", "")
    (leaf / "cgroup.procs").write_text("10\n11\n")
    (leaf / "sub").mkdir()
    (leaf / "sub" / "cgroup.procs").write_text("12\n")
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n")
    cg = Cgroup("/ctr", root=root)
    assert sorted(cg.pids()) == [10, 11, 12]
    assert cg.oom_kill_count() == 2


def test_stats_shape(tmp_path):
    root, leaf = fake_tree(tmp_path, "/ctr", "")
    (leaf / "cpu.stat").write_text("usage_usec 2000\nuser_usec 1500\nsystem_usec 500\n"
                                   "nr_periods 10\nnr_throttled 3\nthrottled_usec 700\n")
    (leaf / "memory.stat").write_text("anon 4096\nfile 8192\n")
    (leaf / "memory.current").write_text("12288\n")
    (leaf / "memory.max").write_text("max\n")
    (leaf / "memory.peak").write_text("20000\n")
    (leaf / "memory.swap.current").write_text("0\n")
    (leaf / "memory.swap.max").write_text("max\n")
    (leaf / "memory.events").write_text("max 4\noom_kill 1\n")
    (leaf / "pids.current").write_text("3\n")
    (leaf / "pids.max").write_text("max\n")
    (leaf / "io.stat").write_text("8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n")
    (leaf / "hugetlb.2MB.current").write_text("2097152\n")
    (leaf / "hugetlb.2MB.events").write_text("max 5\n")
    st = Cgroup("/ctr", root=root).stats()
    assert st["cpu"] == {"usage": {"total": 2000000, "kernel": 500000, "user": 1500000},
                         "throttling": {"periods": 10, "throttledPeriods": 3,
                                        "throttledTime": 700000}}
    mem = st["memory"]
    assert mem["cache"] == 8192 and mem["raw"] == {"anon": 4096, "file": 8192}
    assert mem["usage"] == {"limit": (1 << 64) - 1, "usage": 12288, "max": 20000, "failcnt": 4}
    assert mem["swap"]["usage"] == 12288 and mem["swap"]["limit"] == (1 << 64) - 1
    assert st["pids"] == {"current": 3, "limit": 0}
    assert st["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 100},
        {"major": 8, "minor": 0, "op": "Write", "value": 200}]
    assert st["blkio"]["ioServicedRecursive"][1] == {"major": 8, "minor": 0, "op": "Write",
                                                     "value": 2}
    assert st["hugetlb"] == {"2MB": {"usage": 2097152, "failcnt": 5}}


def test_bad_paths():
    for p in ("relative", "/a/../b", "/", ""):
        with pytest.raises(ConfigError):
            Cgroup(p, root="/nonexistent")


def test_kill_falls_back_to_sigkill_per_pid_without_cgroup_kill(tmp_path):
    import signal
    files = [f for f in LEAF_FILES if f != "cgroup.kill"]
    root, leaf = fake_tree(tmp_path, "/ctr", "", files=files)
    pid = os.fork()
    if pid == 0:
        try:
            signal.pause()
        finally:
            os._exit(0)
    try:
        (leaf / "cgroup.procs").write_text(f"{pid}\n")
        Cgroup("/ctr", root=root).kill()
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_kill_with_another_signal_goes_to_every_pid(tmp_path):
    import signal
    root, leaf = fake_tree(tmp_path, "/ctr", "")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        signal.signal(signal.SIGUSR1, lambda *a: (os.write(w, b"usr1"), os._exit(0)))
        os.write(w, b"ready")
        signal.pause()
        os._exit(1)
    os.close(w)
    try:
        assert os.read(r, 5) == b"ready"
        (leaf / "cgroup.procs").write_text(f"{pid}\n")
        Cgroup("/ctr", root=root).kill(signal.SIGUSR1)
        assert os.read(r, 4) == b"usr1"
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        os.close(r)
