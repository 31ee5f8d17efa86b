"""Broken state: state.json truncated, empty, garbage or missing while the container runs.
`state` explains what is wrong; `delete --force` still finds the processes (through
cleanup.json, or the id's default cgroup when no record is left) and removes everything.
A stale state whose pid now belongs to another process never gets that process signalled."""
from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from pyoci.state import proc_start_time

from .util import HostCheck, cgroup_dirs_of, poll

pytestmark = pytest.mark.root


def _alive(pid: int) -> bool:
    return proc_start_time(pid) is not None


def _running(runtime, bundle, cid, cgroups_path=None):
    bundle.set_args("/bin/sleep", "300")
    if cgroups_path:
        bundle.config["linux"]["cgroupsPath"] = cgroups_path
        bundle.save()
    runtime.ok("run", "-d", "--bundle", str(bundle.path), cid)
    st = runtime.state(cid)
    assert st["status"] == "running"
    return st["pid"]


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(b"\x00\xffnot json at all\n"),
    "not-an-object": lambda p: p.write_text("[1, 2, 3]"),
    "missing": lambda p: p.unlink(),
}


@pytest.mark.parametrize("how", sorted(DAMAGE))
@pytest.mark.parametrize("records", ["cleanup-record", "no-record"])
def test_damaged_state_then_delete_force(how, records, runtime, bundle, tmp_path):
    cid = f"broken-{how}-{records}"
    check = HostCheck(cgroup_words=["broken-"])
    pid = _running(runtime, bundle, cid)
    sdir = os.path.join(runtime.root, cid)
    DAMAGE[how](tmp_path.parent / sdir if False else __import__("pathlib").Path(sdir, "state.json"))
    if records == "no-record":
        os.unlink(os.path.join(sdir, "cleanup.json"))
    try:
        p = runtime.run("state", cid)
        assert p.returncode == 1 and p.stdout == ""
        word = "missing" if how == "missing" else ("empty" if how == "empty" else "corrupt")
        assert f"{sdir}/state.json is {word}" in p.stderr, p.stderr
        assert f"delete --force {cid}" in p.stderr
        rows = json.loads(runtime.ok("list", "--format", "json").stdout)
        row = {r["id"]: r for r in rows}[cid]
        assert row["status"] == "unknown"
        assert row["pid"] == (pid if records == "cleanup-record" else 0)
        # without --force: refused, with the reason
        p = runtime.run("delete", cid)
        assert p.returncode == 1 and "state.json" in p.stderr and _alive(pid)
        p = runtime.run("kill", cid, "KILL")
        assert p.returncode == 1 and "state.json" in p.stderr and _alive(pid)
        assert cgroup_dirs_of(cid)
        runtime.ok("delete", "--force", cid)
        assert poll(lambda: not _alive(pid)), "the container's init survived delete --force"
        assert cgroup_dirs_of(cid) == []
        assert runtime.ids() == []
        check.assert_clean()
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_custom_cgroup_found_through_the_cleanup_record(runtime, bundle):
    cid = "broken-custom"
    check = HostCheck(cgroup_words=["broken-", "reltest"])
    pid = _running(runtime, bundle, cid, cgroups_path="/reltest/deep/broken-custom-cg")
    os.unlink(os.path.join(runtime.root, cid, "state.json"))
    try:
        assert runtime.run("state", cid).returncode == 1
        runtime.ok("delete", "--force", cid)
        assert poll(lambda: not _alive(pid))
        # the ancestors create made (/reltest, /reltest/deep) are gone as well
        assert not os.path.exists("/sys/fs/cgroup/reltest")
        check.assert_clean()
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_state_while_create_holds_the_lock_before_saving(runtime, tmp_path):
    """A state dir without state.json whose lock is held (create between mkdir and its first
    save) is "creating", not broken."""
    import fcntl
    sdir = os.path.join(runtime.root, "broken-early")
    os.makedirs(sdir)
    fd = os.open(os.path.join(sdir, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert runtime.state("broken-early")["status"] == "creating"
        fcntl.flock(fd, fcntl.LOCK_UN)
        p = runtime.run("state", "broken-early")
        assert p.returncode == 1 and "state.json is missing" in p.stderr
    finally:
        os.close(fd)
    runtime.ok("delete", "--force", "broken-early")
    assert runtime.ids() == []


def test_reused_pid_is_never_signalled(runtime, bundle):
    """The container's init died; its pid now belongs to an unrelated process (simulated by
    writing that process's pid with the init's start time into the state). Nothing may
    signal it: state says stopped, kill refuses, delete --force removes only the container."""
    cid = "broken-reuse"
    check = HostCheck(cgroup_words=["broken-"])
    _running(runtime, bundle, cid)
    runtime.ok("kill", cid, "KILL")
    assert runtime.wait_status(cid, "stopped")["status"] == "stopped"
    other = subprocess.Popen(["/bin/sleep", "300"])
    try:
        sdir = os.path.join(runtime.root, cid)
        for name in ("state.json", "cleanup.json"):
            path = os.path.join(sdir, name)
            data = json.load(open(path))
            assert data["pid_start"] != proc_start_time(other.pid)
            data["pid"] = other.pid
            json.dump(data, open(path, "w"))
        st = runtime.state(cid)
        assert st["status"] == "stopped" and st["pid"] == 0
        p = runtime.run("kill", cid, "KILL")
        assert p.returncode == 1 and "container not running" in p.stderr
        runtime.ok("kill", "--all", cid, "KILL")     # nothing left in its cgroup: a no-op
        os.unlink(os.path.join(sdir, "state.json"))  # and through the cleanup record
        runtime.ok("delete", "--force", cid)
        assert other.poll() is None, "an unrelated process with a reused pid was signalled"
        assert runtime.ids() == []
    finally:
        other.kill()
        other.wait()
    check.assert_clean()
