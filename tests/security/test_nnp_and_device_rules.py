"""noNewPrivileges really set, and the default device rules deny what they should.

NNP class: with process.noNewPrivileges the kernel must refuse every privilege gain at
execve (setuid/setgid bits, file capabilities). The attack: a non-root container process
executes a setuid-root copy of the attacker helper that reports its effective uid; and
NoNewPrivs must read 1 in /proc/self/status for the init and for `exec` processes.
A control run without noNewPrivileges shows the setuid bit does work in this rootfs.

Device rules class (runc's default allow list plus the config's linux.resources.devices,
enforced by the eBPF device program of the container's cgroup): a container with CAP_MKNOD
(docker's default set has it) makes nodes for the host's disk, loop devices and the kernel
log, and tries to open them (reads only: never writes). With podman's default
`{"allow": false, "access": "rwm"}` every open must fail with EPERM, while a node of an
allowed device (1:3) opens fine, which shows the denial is the device program's doing.
"""
from __future__ import annotations

import os
import shutil

import pytest

from conftest import force_delete

pytestmark = pytest.mark.root


def _suid_helper(bundle, attacker_bin) -> str:
    dst = bundle.rootfs / "opt" / "suid-ids"
    dst.parent.mkdir(exist_ok=True)
    shutil.copy2(attacker_bin, dst)
    os.chown(dst, 0, 0)
    os.chmod(dst, 0o4755)
    return "/opt/suid-ids"


def _ids(out: str) -> dict[str, int]:
    line = next(x for x in out.splitlines() if x.startswith("uid="))
    return {k: int(v) for k, v in (f.split("=") for f in line.split())}


def test_nnp_set_in_init_and_exec(runtime, bundle):
    assert bundle.process["noNewPrivileges"] is True
    bundle.set_args("sh", "-c", "grep NoNewPrivs /proc/self/status; exec sleep 60")
    try:
        runtime.ok("create", "--bundle", bundle.path, "nnp")
        runtime.ok("start", "nnp")
        pid = runtime.state("nnp")["pid"]
        with open(f"/proc/{pid}/status") as f:
            assert "NoNewPrivs:\t1" in f.read()
        p = runtime.run("exec", "nnp", "grep", "NoNewPrivs", "/proc/self/status")
        assert p.returncode == 0 and p.stdout.split() == ["NoNewPrivs:", "1"], (p.stdout, p.stderr)
        p = runtime.run("exec", "nnp", "grep", "Seccomp:", "/proc/self/status")
        assert p.returncode == 0, p.stderr
    finally:
        force_delete(runtime, "nnp")


def test_nnp_exec_flag(runtime, bundle):
    bundle.process["noNewPrivileges"] = False
    bundle.set_args("sleep", "60")
    try:
        runtime.ok("create", "--bundle", bundle.path, "nnpx")
        runtime.ok("start", "nnpx")
        p = runtime.run("exec", "--no-new-privs", "nnpx", "grep", "NoNewPrivs", "/proc/self/status")
        assert p.returncode == 0 and p.stdout.split() == ["NoNewPrivs:", "1"], (p.stdout, p.stderr)
    finally:
        force_delete(runtime, "nnpx")


@pytest.mark.parametrize("nnp", [True, False])
def test_setuid_binary_gains_nothing_under_nnp(runtime, bundle, attacker_bin, nnp):
    helper = _suid_helper(bundle, attacker_bin)
    bundle.process["user"] = {"uid": 1000, "gid": 1000}
    bundle.process["noNewPrivileges"] = nnp
    bundle.set_args(helper, "ids")
    p = runtime.run("run", "--bundle", bundle.path, "suid")
    assert p.returncode == 0, p.stderr
    ids = _ids(p.stdout)
    assert ids["uid"] == 1000
    if nnp:
        assert ids["euid"] == 1000, f"a setuid binary gained root under noNewPrivileges: {ids}"
    else:
        assert ids["euid"] == 0, f"control: the setuid bit should work without NNP: {ids}"


def test_setuid_binary_through_exec_under_nnp(runtime, bundle, attacker_bin):
    helper = _suid_helper(bundle, attacker_bin)
    bundle.set_args("sleep", "60")
    try:
        runtime.ok("create", "--bundle", bundle.path, "suidx")
        runtime.ok("start", "suidx")
        p = runtime.run("exec", "--user", "1000:1000", "suidx", helper, "ids")
        assert p.returncode == 0, p.stderr
        assert _ids(p.stdout)["euid"] == 1000, p.stdout
    finally:
        force_delete(runtime, "suidx")


def _host_block_devices() -> list[tuple[str, int, int]]:
    out = []
    st = os.stat("/")
    out.append(("rootdisk", os.major(st.st_dev), os.minor(st.st_dev)))
    for name in ("loop0", "vda", "sda", "nvme0n1", "kmsg", "loop-control"):
        p = f"/dev/{name}"
        if os.path.exists(p):
            s = os.stat(p)
            out.append((name, os.major(s.st_rdev), os.minor(s.st_rdev)))
    return out


def test_default_device_rules_deny_host_devices(runtime, bundle, attacker_bin):
    assert bundle.linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    shutil.copy2(attacker_bin, bundle.rootfs / "bin" / "attacker")
    for k in ("bounding", "effective", "permitted"):
        bundle.process["capabilities"][k].append("CAP_MKNOD")
    script = []
    for name, major, minor in _host_block_devices():
        kind = "c" if name in ("kmsg", "loop-control") else "b"
        script.append(f"mknod /dev/x-{name} {kind} {major} {minor} && echo MKNOD-{name} ok; "
                      f"echo OPEN-{name} $(/bin/attacker open /dev/x-{name} r)")
    script.append("mknod /dev/x-null c 1 3; echo OPEN-null $(/bin/attacker open /dev/x-null r)")
    bundle.set_args("sh", "-c", "; ".join(script))
    p = runtime.run("run", "--bundle", bundle.path, "dev")
    assert p.returncode == 0, p.stderr
    lines = dict(x.split(" ", 1) for x in p.stdout.splitlines() if x.startswith("OPEN-"))
    assert lines.pop("OPEN-null") == "OK", p.stdout        # the allowed device opens
    assert lines, p.stdout
    for name, res in lines.items():
        assert res.startswith("ERR 1 "), f"{name}: a denied device was opened: {res}\n{p.stdout}"
    # mknod itself is allowed by the default list (as in runc): only access is denied
    assert "MKNOD-rootdisk ok" in p.stdout, p.stdout
