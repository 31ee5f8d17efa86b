"""CVE-2025-31133 class: maskedPaths bound from a /dev/null that is not the real /dev/null.

runc masks a file by bind-mounting the container's /dev/null over it. When /dev comes from
something the attacker controls (a bind of a volume, or a /dev shared with another
container), /dev/null can be a symlink to, e.g., /proc/sys/kernel/core_pattern: the "mask"
then makes that procfs file appear, writable, where a masked path was, or (as a regular file
or another device) makes the mask a no-op.

Defence (rootfs.py): the mask source is opened with O_PATH|O_NOFOLLOW inside the root and
must be the character device 1:3, and the bind is done from that fd (/proc/self/fd/N),
so the file that was checked is the file that is mounted.

The attack: /dev is bound from a host directory the attacker controls, whose `null` is a
symlink to a procfs file, a regular file, another character device, or (the race) is swapped
back and forth between the real null device and a symlink by a running container that shares
the directory. Either pyoci refuses to create the container, or every masked file in it is
the null device.
"""
from __future__ import annotations

import os
import stat

import pytest

from conftest import force_delete, swap_hook, wait_for

pytestmark = pytest.mark.root

MASKED_FILES = [p for p in ("/proc/keys", "/proc/timer_list", "/proc/kcore", "/proc/sched_debug",
                            "/proc/latency_stats", "/proc/timer_stats") if os.path.exists(p)]
REFUSAL = "/dev/null in the container is not the null device"


def _attacker_dev(tmp_path, name="evil-dev"):
    d = tmp_path / name
    d.mkdir()
    for sub in ("pts", "shm", "mqueue"):
        (d / sub).mkdir()
    return d


def _bind_dev(b, devdir) -> None:
    """Replace the default /dev tmpfs by a bind of the attacker's directory."""
    mounts = [m for m in b.config["mounts"] if m["destination"] != "/dev"]
    i = next(i for i, m in enumerate(mounts) if m["destination"].startswith("/dev/"))
    mounts.insert(i, {"destination": "/dev", "type": "none", "source": str(devdir),
                      "options": ["rbind", "rw"]})
    b.config["mounts"] = mounts
    b.config["linux"]["maskedPaths"] = sorted(set(b.config["linux"]["maskedPaths"]) | set(MASKED_FILES))
    b.save()


def _check_masks(pid: int) -> list[str]:
    """Problems with the masked files of a created container, seen through /proc/<pid>/root."""
    bad = []
    for p in MASKED_FILES:
        try:
            st = os.stat(f"/proc/{pid}/root{p}")
        except FileNotFoundError:
            continue
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
            bad.append(f"{p}: mode {oct(st.st_mode)} rdev {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    return bad


@pytest.mark.parametrize("kind", ["symlink-core_pattern", "symlink-sysrq", "regular-file", "zero-device",
                                  "dangling-symlink"])
def test_fake_dev_null_is_never_used_as_a_mask(runtime, bundle, tmp_path, kind):
    assert MASKED_FILES, "no maskable procfs file on this host"
    dev = _attacker_dev(tmp_path)
    null = dev / "null"
    if kind == "symlink-core_pattern":
        os.symlink("/proc/sys/kernel/core_pattern", null)
    elif kind == "symlink-sysrq":
        os.symlink("/proc/sysrq-trigger", null)
    elif kind == "regular-file":
        null.write_text("")
    elif kind == "zero-device":
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 5))
    else:
        os.symlink("/nonexistent/null", null)
    _bind_dev(bundle, dev)
    bundle.set_args("/bin/true")
    p = runtime.run("create", "--bundle", bundle.path, "mask")
    try:
        if p.returncode == 0:
            pid = runtime.state("mask")["pid"]
            assert not _check_masks(pid), _check_masks(pid)
        else:
            assert REFUSAL in p.stderr, p.stderr
    finally:
        force_delete(runtime, "mask")
    # the attacker's directory still holds what the attacker put there (nothing was written
    # through the symlink) and the host's core_pattern is a procfs file as before
    assert os.path.lexists(null)
    assert not stat.S_ISCHR(os.lstat("/proc/sys/kernel/core_pattern").st_mode)


def test_real_dev_null_in_an_attacker_dev_still_masks(runtime, bundle, tmp_path):
    """Control: the same bound /dev with a genuine null device is accepted and masks."""
    dev = _attacker_dev(tmp_path)
    os.mknod(dev / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    _bind_dev(bundle, dev)
    bundle.set_args("/bin/true")
    try:
        runtime.ok("create", "--bundle", bundle.path, "mask-ok")
        pid = runtime.state("mask-ok")["pid"]
        assert not _check_masks(pid)
        assert any(os.path.exists(f"/proc/{pid}/root{p}") for p in MASKED_FILES)
    finally:
        force_delete(runtime, "mask-ok")


@pytest.mark.parametrize("target", ["/proc/sys/kernel/core_pattern", "/dev/zero"])
def test_dev_null_swapped_after_the_devices_are_made_is_refused(runtime, bundle, tmp_path, target):
    """The race won by the attacker, made deterministic: /dev/null is a real null device when
    /dev is set up, and becomes a symlink before the masks are applied (a hook does the swap
    at that point). Masking must refuse it, not follow it."""
    dev = _attacker_dev(tmp_path)
    os.mknod(dev / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    _bind_dev(bundle, dev)
    bundle.config["hooks"] = {"createRuntime": [swap_hook(dev / "null", target)]}
    bundle.set_args("/bin/true")
    try:
        p = runtime.run("create", "--bundle", bundle.path, "maskhook")
        assert os.path.islink(dev / "null"), "the hook did not run"
        if p.returncode == 0:
            pid = runtime.state("maskhook")["pid"]
            assert not _check_masks(pid), _check_masks(pid)
        assert p.returncode != 0 and REFUSAL in p.stderr, p.stderr
    finally:
        force_delete(runtime, "maskhook")


def test_dev_null_swapped_by_a_container_sharing_dev(runtime, second_bundle, install_attacker, tmp_path):
    """The race: container A shares the /dev directory with B and keeps exchanging B's
    /dev/null (a real null device) with a symlink to /proc/sys/kernel/core_pattern while B
    is created again and again."""
    dev = _attacker_dev(tmp_path, "shared-dev")
    os.mknod(dev / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    a = second_bundle("attacker")
    install_attacker(a)
    a.config["mounts"].append({"destination": "/shared-dev", "type": "none", "source": str(dev),
                               "options": ["rbind", "rw"]})
    a.set_args("/bin/attacker", "swapkeep", "/shared-dev", "null", "/proc/sys/kernel/core_pattern",
               "/shared-dev/stop", "60")
    b = second_bundle("victim")
    _bind_dev(b, dev)
    b.set_args("/bin/true")
    outcome = {"created": 0, "refused": 0}
    try:
        runtime.ok("create", "--bundle", a.path, "nullswap")
        runtime.ok("start", "nullswap")
        assert wait_for(lambda: os.path.lexists(dev / ".null.swap")), "the swapper did not start"
        for i in range(20):
            p = runtime.run("create", "--bundle", b.path, f"mv{i}")
            if p.returncode == 0:
                outcome["created"] += 1
                pid = runtime.state(f"mv{i}")["pid"]
                bad = _check_masks(pid)
                force_delete(runtime, f"mv{i}")
                assert not bad, f"round {i}: a mask is not the null device: {bad}"
            else:
                outcome["refused"] += 1
                assert "rootfs" in p.stderr, p.stderr
        (dev / "stop").touch()
        assert wait_for(lambda: runtime.state("nullswap")["status"] == "stopped", timeout=15)
    finally:
        (dev / "stop").touch()
        force_delete(runtime, "nullswap")
        for i in range(20):
            force_delete(runtime, f"mv{i}")
    assert outcome["refused"] > 0 or outcome["created"] == 20
