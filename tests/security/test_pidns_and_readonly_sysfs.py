"""A container that sees or signals processes outside its pid namespace, or writes the host's
/proc/sys or /sys although the config has them read-only.

pid namespace: the container's /proc is a procfs of its own pid namespace, so it lists only
the container's processes, and kill(2) cannot name a host process. The attack: a host
process (a `sleep` the test owns) is looked for from inside the container by /proc listing,
/proc/<host pid>, `kill -0` and `kill -TERM` of its host pid, from the init and from an
`exec` process; the sleep must survive and none of it may succeed.

read-only /proc/sys and /sys: the default config binds /proc/sys (readonlyPaths) and mounts
sysfs and cgroup2 with "ro". The attack writes host-wide kernel knobs from the container
(writing back the value they already have, so a failure of the defence changes nothing on
the host) and tries to remount them read-write; every write must fail with EROFS
("Read-only file system"), as must creating a cgroup under /sys/fs/cgroup.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import force_delete

pytestmark = pytest.mark.root

# host-wide files and the value they hold now (written back unchanged by the attack)
PROC_SYS = [p for p in ("/proc/sys/kernel/printk_ratelimit", "/proc/sys/vm/swappiness",
                        "/proc/sys/kernel/core_pattern", "/proc/sys/fs/suid_dumpable")
            if os.path.exists(p)]
SYS = [p for p in ("/sys/kernel/mm/ksm/run", "/sys/kernel/mm/ksm/sleep_millisecs",
                   "/sys/kernel/rcu_expedited", "/sys/kernel/mm/transparent_hugepage/defrag")
       if os.path.exists(p)]


def _current(path: str) -> str:
    with open(path) as f:
        v = f.read().strip()
    if "[" in v:                       # "always [madvise] never": the selected word
        v = v.split("[", 1)[1].split("]", 1)[0]
    return v


@pytest.fixture
def host_sleep():
    p = subprocess.Popen(["sleep", "120"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def _pidns_script(host_pid: int) -> str:
    return (f"echo PIDS $(cd /proc && echo [0-9]*); "
            f"test -e /proc/{host_pid} && echo SEE-PROC; "
            f"kill -0 {host_pid} 2>/dev/null && echo KILL0-OK; "
            f"kill -TERM {host_pid} 2>/dev/null && echo KILLTERM-OK; "
            f"echo INIT $(cat /proc/1/cmdline | tr '\\0' ' '); true")


def _check_pidns(out: str, host_sleep) -> None:
    lines = out.splitlines()
    assert not {"SEE-PROC", "KILL0-OK", "KILLTERM-OK"} & set(lines), out
    assert host_sleep.poll() is None, "the host process was killed from inside the container"
    pids = [int(x) for x in out.split("PIDS", 1)[1].split("\n", 1)[0].split() if x.isdigit()]
    assert pids and max(pids) < 100 and 1 in pids, out   # only the container's few processes


def test_container_cannot_see_or_signal_host_processes(runtime, bundle, host_sleep):
    bundle.set_args("sh", "-c", _pidns_script(host_sleep.pid))
    p = runtime.run("run", "--bundle", bundle.path, "pidns")
    assert p.returncode == 0, p.stderr
    _check_pidns(p.stdout, host_sleep)
    assert "INIT sh -c" in p.stdout, p.stdout       # /proc/1 is the container's own init


def test_exec_cannot_see_or_signal_host_processes(runtime, bundle, host_sleep):
    bundle.set_args("sleep", "60")
    try:
        runtime.ok("create", "--bundle", bundle.path, "pidnsx")
        runtime.ok("start", "pidnsx")
        p = runtime.run("exec", "pidnsx", "sh", "-c", _pidns_script(host_sleep.pid))
        assert p.returncode == 0, p.stderr
        _check_pidns(p.stdout, host_sleep)
        assert "INIT sleep 60" in p.stdout, p.stdout
    finally:
        force_delete(runtime, "pidnsx")


def test_readonly_proc_sys_and_sysfs_cannot_be_written(runtime, bundle):
    assert "/proc/sys" in bundle.linux["readonlyPaths"]
    sysfs = next(m for m in bundle.config["mounts"] if m["destination"] == "/sys")
    assert "ro" in sysfs["options"]
    before = {p: _current(p) for p in PROC_SYS + SYS}
    assert PROC_SYS and SYS, "no host knob to try on this machine"
    lines = [f"echo W {p} $(echo '{v}' 2>&1 > {p})" for p, v in before.items()]
    lines += ["echo W mkdir-cgroup $(mkdir /sys/fs/cgroup/pyoci-escape 2>&1)",
              "echo W touch-sys $(touch /sys/kernel/pyoci-escape 2>&1)",
              "echo M proc-sys $(mount -o remount,rw /proc/sys 2>&1 && echo REMOUNTED)",
              "echo M sys $(mount -o remount,rw /sys 2>&1 && echo REMOUNTED)",
              "echo M sys-bind $(mount -o bind,remount,rw /sys 2>&1 && echo REMOUNTED)"]
    bundle.set_args("sh", "-c", "; ".join(lines) + "; true")
    p = runtime.run("run", "--bundle", bundle.path, "rofs")
    assert p.returncode == 0, p.stderr
    results = [x for x in p.stdout.splitlines() if x.startswith(("W ", "M "))]
    assert len(results) == len(before) + 5, p.stdout
    for line in results:
        if line.startswith("W "):
            assert "Read-only file system" in line, f"a read-only file was written: {line}"
        else:
            assert "REMOUNTED" not in line, f"remounted read-write: {line}"
    assert {p: _current(p) for p in before} == before
    assert not os.path.exists("/sys/fs/cgroup/pyoci-escape")
    assert not os.path.exists("/sys/kernel/pyoci-escape")


def test_readonly_paths_hold_for_exec(runtime, bundle):
    """The same writes from a `pyoci exec` process (it joins the mount namespace: the
    read-only binds are already there)."""
    knob = PROC_SYS[0]
    value = _current(knob)
    bundle.set_args("sleep", "60")
    try:
        runtime.ok("create", "--bundle", bundle.path, "rofsx")
        runtime.ok("start", "rofsx")
        p = runtime.run("exec", "rofsx", "sh", "-c", f"echo '{value}' > {knob}")
        assert p.returncode != 0 and "Read-only file system" in p.stderr + p.stdout, (p.stdout, p.stderr)
        p = runtime.run("exec", "rofsx", "sh", "-c", "mkdir /sys/fs/cgroup/pyoci-escape")
        assert p.returncode != 0 and "Read-only file system" in p.stderr + p.stdout, (p.stdout, p.stderr)
    finally:
        force_delete(runtime, "rofsx")
    assert _current(knob) == value
