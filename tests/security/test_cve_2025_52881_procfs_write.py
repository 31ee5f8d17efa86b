"""CVE-2025-52881 class: the runtime's writes to procfs redirected by a mount over /proc.

runc writes procfs files inside the container while setting it up: linux.sysctl under
/proc/sys, /proc/self/oom_score_adj, /proc/self/attr/* (LSM labels). If something is mounted
over those files first (by a crafted config, or by a racing container through a shared
mount), the write goes to whatever was mounted there: a host file (the runtime writes with
full privileges), or a harmless file that silently swallows the LSM label.

Defence (security.py `_open_proc`): /proc and the target are checked with fstatfs to be
procfs, and the path is opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_XDEV |
RESOLVE_NO_MAGICLINKS): a path that crosses any mount point inside /proc is refused. And
(mounts.py/rootfs.py) a config cannot put anything over /proc but procfs itself or the few
lxcfs-style files.

The attacks: (1) a config mount of a host file onto /proc/sys/kernel/ns_last_pid (a
destination the /proc rule allows) with that sysctl set; (2) a host file bind-mounted into
the container's /proc over the sysctl and oom_score_adj files after the mounts were made and
before the writes (a createRuntime hook does it with nsenter, as a racing container sharing
mounts would); (3) config mounts of tmpfs/bind over /proc/sys, /proc/self/attr,
/proc/self/oom_score_adj. Every time, pyoci refuses and the host file is untouched.
"""
from __future__ import annotations

import shutil
import sys

import pytest

from conftest import force_delete

pytestmark = pytest.mark.root

MARK = "host-file-must-not-change\n"


def _host_file(tmp_path, name="host-file"):
    f = tmp_path / name
    f.write_text(MARK)
    return f


def _nsenter_bind_hook(src, dests_in_rootfs: list[str], rootfs) -> dict:
    """createRuntime hook: bind `src` over each container path (under the rootfs, which is
    where the container's /proc is mounted before pivot_root) in the container's mount ns."""
    code = ("import json,subprocess,sys;s=json.load(sys.stdin);src,root=sys.argv[1],sys.argv[2]\n"
            "for d in sys.argv[3:]:\n"
            "    subprocess.run(['nsenter','-t',str(s['pid']),'-m','mount','--bind',src,root+d],check=True)\n")
    return {"path": sys.executable,
            "args": [sys.executable, "-c", code, str(src), str(rootfs)] + list(dests_in_rootfs)}


def test_config_bind_over_an_allowed_proc_file_with_its_sysctl(runtime, bundle, tmp_path):
    host = _host_file(tmp_path)
    bundle.config["mounts"].append({"destination": "/proc/sys/kernel/ns_last_pid", "type": "none",
                                    "source": str(host), "options": ["bind"]})
    bundle.linux["sysctl"] = {"kernel.ns_last_pid": "4242"}
    bundle.set_args("/bin/true")
    p = runtime.run("run", "--bundle", bundle.path, "nslp")
    assert host.read_text() == MARK, "the sysctl write went to the host file"
    assert p.returncode != 0, "a sysctl write through a mount over /proc was accepted"
    assert "sysctl" in p.stderr and ("mount point" in p.stderr or "procfs" in p.stderr), p.stderr
    assert runtime.ids() == []


@pytest.mark.skipif(shutil.which("nsenter") is None, reason="needs nsenter")
@pytest.mark.parametrize("what", ["sysctl", "oomScoreAdj"])
def test_mount_over_proc_before_the_writes_is_refused(runtime, bundle, tmp_path, what):
    host = _host_file(tmp_path)
    if what == "sysctl":
        bundle.linux["sysctl"] = {"kernel.domainname": "attacker.example"}
        dests = ["/proc/sys/kernel/domainname"]
    else:
        bundle.process["oomScoreAdj"] = 123
        # the init is pid 1 of its pid namespace: /proc/self is /proc/1 for it
        dests = ["/proc/1/oom_score_adj"]
    bundle.config["hooks"] = {"createRuntime": [_nsenter_bind_hook(host, dests, bundle.rootfs)]}
    bundle.set_args("/bin/true")
    p = runtime.run("create", "--bundle", bundle.path, "late")
    try:
        assert host.read_text() == MARK, f"the {what} write went to the host file"
        assert p.returncode != 0, f"{what}: a write through a mount over /proc was accepted"
        assert "mount point" in p.stderr or "procfs" in p.stderr, p.stderr
    finally:
        force_delete(runtime, "late")


@pytest.mark.parametrize("dest,mount", [
    ("/proc/sys", {"type": "tmpfs", "source": "tmpfs"}),
    ("/proc/sys/kernel", {"type": "tmpfs", "source": "tmpfs"}),
    ("/proc/self/attr", {"type": "tmpfs", "source": "tmpfs"}),
    ("/proc/self/oom_score_adj", "bind"),
    ("/proc/1/oom_score_adj", "bind"),
    ("/proc/sys/kernel/domainname", "bind"),
    ("/proc", {"type": "tmpfs", "source": "tmpfs"}),
    ("/proc", "bind-dir"),
])
def test_config_mounts_over_proc_are_refused(runtime, bundle, tmp_path, dest, mount):
    host = _host_file(tmp_path)
    fake = tmp_path / "fake-proc"
    fake.mkdir()
    if mount == "bind":
        mount = {"type": "none", "source": str(host), "options": ["bind"]}
    elif mount == "bind-dir":
        mount = {"type": "none", "source": str(fake), "options": ["rbind"]}
    bundle.config["mounts"].append(dict(mount, destination=dest))
    bundle.linux["sysctl"] = {"kernel.domainname": "attacker.example"}
    bundle.process["oomScoreAdj"] = 123
    bundle.set_args("/bin/true")
    p = runtime.run("run", "--bundle", bundle.path, "cfgproc")
    assert host.read_text() == MARK
    assert list(fake.iterdir()) == []
    assert p.returncode != 0, f"a mount on {dest} was accepted"
    assert "/proc" in p.stderr, p.stderr
    assert runtime.ids() == []


def test_writes_reach_the_real_procfs(runtime, bundle):
    """Control: without a mount in the way the same writes are made, in the container's
    namespaces."""
    bundle.linux["sysctl"] = {"kernel.domainname": "inside.example"}
    bundle.process["oomScoreAdj"] = 123
    bundle.set_args("sh", "-c", "cat /proc/sys/kernel/domainname /proc/self/oom_score_adj")
    p = runtime.run("run", "--bundle", bundle.path, "real")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["inside.example", "123"]
    with open("/proc/sys/kernel/domainname") as f:
        assert f.read().strip() != "inside.example"
