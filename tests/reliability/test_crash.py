"""Crash safety: pyoci is SIGKILLed at every fault point (PYOCI_FAULT=<point>); in between,
`state` and `list` tell the truth; then `delete --force ID` removes everything the partial
operation made, and the host is as it was (see docs/reliability.md for the table).

Every container here uses the own-IP bridge mode, with pyoci running inside a network namespace
the test made (it plays the host), so veths, the bridge and address leases are checked too.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile

import pytest

from pyoci.ipam import Ipam

from .util import HostCheck, Netns, cgroup_dirs_of, kill_pids, pids_with_cmdline, poll

pytestmark = pytest.mark.root

SUBNET = "10.213.21.0/24"
BRIDGE = "trel0"

CREATE_POINTS = ["after-state-dir", "after-cgroup", "after-namespaces", "after-mounts",
                 "after-network", "during-hooks"]


def pyoci(runtime, netns, *args, fault=None, timeout=60):
    env = dict(os.environ)
    env.pop("PYOCI_FAULT", None)
    if fault:
        env["PYOCI_FAULT"] = fault
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.run(["nsenter", f"--net={netns.path}", *runtime.argv(*args)], env=env,
                           stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True,
                           timeout=timeout)
        out.seek(0)
        err.seek(0)
        p.stdout, p.stderr = out.read(), err.read()
    return p


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def net_bundle(b, hook=False):
    b.set_args("/bin/sleep", "300")
    b.config.setdefault("annotations", {}).update({
        "org.pyoci.network": "bridge", "org.pyoci.network.bridge": BRIDGE,
        "org.pyoci.network.subnet": SUBNET})
    if hook:
        b.config["hooks"] = {"createRuntime": [{"path": "/bin/true", "args": ["true"]}]}
    return b.save()


def leftovers(runtime, host: Netns, cid: str) -> dict:
    """What exists of container `cid` right now."""
    cgs = cgroup_dirs_of(cid)
    procs = []
    for d in cgs:
        for dirpath, _, _ in os.walk(d):
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    procs += [int(x) for x in f.read().split()]
            except OSError:
                pass
    links = host.links()
    return {
        "state_dir": cid in runtime.ids(),
        "cgroup": cgs,
        "cgroup_procs": procs,
        "init": pids_with_cmdline(runtime.root),   # pyoci children carry --root in cmdline
        "veth": sorted(l for l in links if l.startswith("pyv")),
        "bridge": BRIDGE in links,
        "leases": sorted(Ipam(runtime.root, SUBNET).leases().items()),
    }


@pytest.fixture
def host():
    ns = Netns()
    yield ns
    ns.close()


def _status(runtime, host, cid):
    p = ok(pyoci(runtime, host, "state", cid))
    return json.loads(p.stdout)


def _listed(runtime, host, cid):
    rows = json.loads(ok(pyoci(runtime, host, "list", "--format", "json")).stdout)
    return {r["id"]: r for r in rows}.get(cid)


def _cleanup_and_check(runtime, host, cid, check, links_before):
    try:
        ok(pyoci(runtime, host, "delete", "--force", cid, timeout=30))
    finally:
        kill_pids(pids_with_cmdline(runtime.root))
    after = leftovers(runtime, host, cid)
    assert after == {"state_dir": False, "cgroup": [], "cgroup_procs": [], "init": [],
                     "veth": [], "bridge": False, "leases": []}, after
    assert host.links() == links_before
    assert runtime.ids() == []
    check.assert_clean()


@pytest.mark.parametrize("point", CREATE_POINTS)
def test_create_killed_then_delete_force(point, runtime, bundle, host):
    check = HostCheck(ignore_pids=[host.pid], cgroup_words=["crash-"])
    links_before = host.links()
    net_bundle(bundle, hook=(point == "during-hooks"))
    cid = "crash-" + point
    p = pyoci(runtime, host, "create", "--bundle", str(bundle.path), cid, fault=point)
    assert p.returncode == -signal.SIGKILL, p.stderr
    try:
        # the half-made container is listed; once its creator is dead and nothing of it runs
        # it is "stopped" (pid 0), as runc shows a container whose init is gone
        st = poll(lambda: (s := _status(runtime, host, cid))["status"] == "stopped" and s)
        assert st, _status(runtime, host, cid)
        assert st["pid"] == 0 and st["id"] == cid
        row = _listed(runtime, host, cid)
        assert row and row["status"] == "stopped", row
        left = poll(lambda: (l := leftovers(runtime, host, cid))["init"] == [] and l)
        assert left, "the container's processes outlived the killed create"
        assert left["state_dir"]
        if point == "after-state-dir":
            assert left["cgroup"] == [] and left["leases"] == []
        else:
            assert left["cgroup"], f"{point}: cgroup expected before cleanup"
            assert left["cgroup_procs"] == []
        if point in ("after-network", "during-hooks"):
            assert [c for _, c in left["leases"]] == [cid]
            assert left["bridge"]
        else:
            assert left["leases"] == []
        # a plain delete works too for a stopped container, but --force is what we test
        _cleanup_and_check(runtime, host, cid, check, links_before)
    finally:
        kill_pids(pids_with_cmdline(runtime.root))


def test_start_killed_then_delete_force(runtime, bundle, host):
    check = HostCheck(ignore_pids=[host.pid], cgroup_words=["crash-"])
    links_before = host.links()
    net_bundle(bundle)
    cid = "crash-start"
    ok(pyoci(runtime, host, "create", "--bundle", str(bundle.path), cid))
    try:
        p = pyoci(runtime, host, "start", cid, fault="during-start")
        assert p.returncode == -signal.SIGKILL, p.stderr
        st = _status(runtime, host, cid)
        assert st["status"] == "created" and st["pid"] > 0
        assert _listed(runtime, host, cid)["status"] == "created"
        left = leftovers(runtime, host, cid)
        assert left["cgroup_procs"] == [st["pid"]] and len(left["veth"]) == 1
        # the container is intact: a second start works
        ok(pyoci(runtime, host, "start", cid))
        assert _status(runtime, host, cid)["status"] == "running"
        _cleanup_and_check(runtime, host, cid, check, links_before)
    finally:
        kill_pids(pids_with_cmdline(runtime.root))


def test_delete_killed_then_delete_force(runtime, bundle, host):
    check = HostCheck(ignore_pids=[host.pid], cgroup_words=["crash-"])
    links_before = host.links()
    net_bundle(bundle)
    cid = "crash-delete"
    ok(pyoci(runtime, host, "create", "--bundle", str(bundle.path), cid))
    try:
        ok(pyoci(runtime, host, "start", cid))
        p = pyoci(runtime, host, "delete", "--force", cid, fault="during-delete")
        assert p.returncode == -signal.SIGKILL, p.stderr
        # the processes were killed before the fault; cgroup, veth, lease, state dir remain
        st = _status(runtime, host, cid)
        assert st["status"] == "stopped" and st["pid"] == 0
        assert _listed(runtime, host, cid)["status"] == "stopped"
        left = leftovers(runtime, host, cid)
        assert left["state_dir"] and left["cgroup"] and left["cgroup_procs"] == []
        assert [c for _, c in left["leases"]] == [cid]
        _cleanup_and_check(runtime, host, cid, check, links_before)
    finally:
        kill_pids(pids_with_cmdline(runtime.root))


def test_a_create_in_progress_is_creating(runtime, bundle, tmp_path):
    """While create runs (held in a createRuntime hook until the test says go), `state` and
    `list` say "creating"; once it is done, "created"."""
    check = HostCheck(cgroup_words=["crash-"])
    marker, go = tmp_path / "in-hook", tmp_path / "go"
    bundle.set_args("/bin/sleep", "300")
    bundle.config["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": [
        "sh", "-c", f"touch {marker}; for i in $(seq 300); do [ -e {go} ] && exit 0; sleep 0.1; done; exit 1"],
        "timeout": 60}]}
    bundle.save()
    cid = "crash-inprogress"
    proc = subprocess.Popen(runtime.argv("create", "--bundle", str(bundle.path), cid),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert poll(marker.exists, timeout=30), "create never reached its hook"
        st = runtime.state(cid)
        assert st["status"] == "creating" and st["pid"] > 0
        rows = {r["id"]: r for r in json.loads(runtime.ok("list", "--format", "json").stdout)}
        assert rows[cid]["status"] == "creating"
        go.touch()
        assert proc.wait(timeout=60) == 0
        assert runtime.state(cid)["status"] == "created"
        runtime.ok("delete", "--force", cid)
    finally:
        go.touch()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        kill_pids(pids_with_cmdline(runtime.root))
    assert runtime.ids() == []
    check.assert_clean()
