"""CVE-2021-30465 class: a mount destination that is, or is swapped to, a symlink out of the rootfs.

runc's bug: runc checked a mount destination with securejoin and then mounted onto the path
string; a container sharing a volume with the new container swapped a directory on that path
for a symlink between the check and the mount, so the mount landed outside the rootfs (the
host's filesystem tree, in the container's mount namespace, from where it could be reached).

Defence (rootfs.py): every destination is opened inside the rootfs with
openat2(RESOLVE_IN_ROOT) (a symlink, even "/../../../x", is read relative to the rootfs),
missing components are created one at a time the same way, and the mount targets the opened
fd through /proc/self/fd/N: there is no second path lookup an attacker could redirect.

What the tests check is the container's mount namespace itself, recorded by a createRuntime
hook (after every mount is made, before pivot_root, while host paths are still visible): every
mount point that the container added is inside the rootfs.
"""
from __future__ import annotations

import os
import uuid

import pytest

from conftest import HookRecorder, force_delete, own_mount_points, under, wait_for

pytestmark = pytest.mark.root

UP = "/.." * 30
ROUNDS = 25


def _host_target(tmp_path):
    d = tmp_path / f"host-target-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    (d / "host-file").write_text("host")
    return d


def _added_mounts_outside(rec: HookRecorder, rootfs) -> list[tuple[str, str]]:
    real = os.path.realpath(rootfs)
    mine = own_mount_points()
    return [(mp, fs) for mp, fs in rec.mount_points() if mp not in mine and not under(mp, real)]


def test_symlink_destination_is_resolved_inside_the_rootfs(runtime, bundle, tmp_path):
    target = _host_target(tmp_path)
    for t in ("t1", "t2", "t3", "t4"):
        (target / t).mkdir()
        (target / t / "host-file").write_text("host")
    before = sorted(os.walk(target))
    secret = tmp_path / "volume"
    secret.mkdir()
    (secret / "volume-file").write_text("volume")
    # the symlink targets exist inside the rootfs too: that is where the mounts must land
    inside = bundle.rootfs / str(target).lstrip("/")
    for t in ("t1", "t2", "t3", "t4"):
        (inside / t).mkdir(parents=True)
        (inside / t / "host-file").write_text("inside")
    os.symlink(f"{UP}{target}/t1", bundle.rootfs / "evil-tmpfs")
    os.symlink(f"{UP}{target}/t2", bundle.rootfs / "evil-bind")
    os.symlink(f"{UP}{target}/t3/host-file", bundle.rootfs / "evil-file")
    os.symlink(f"../../../../../../../../../../../../../..{target}/t4", bundle.rootfs / "evil-rel")
    rec = HookRecorder(tmp_path / "mountinfo")
    bundle.config["mounts"] += [
        {"destination": "/evil-tmpfs", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/evil-bind", "type": "none", "source": str(secret), "options": ["rbind"]},
        {"destination": "/evil-file", "type": "none", "source": str(secret / "volume-file"),
         "options": ["bind"]},
        {"destination": "/evil-rel/sub/deeper", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
    ]
    bundle.config["hooks"] = {"createRuntime": [rec.hook()]}
    bundle.set_args("sh", "-c", f"cat /evil-file; echo; ls /evil-bind; cat {target}/t4/host-file")
    p = runtime.run("run", "--bundle", bundle.path, "sym")
    assert os.path.exists(rec.path), p.stderr
    outside = _added_mounts_outside(rec, bundle.rootfs)
    assert not outside, f"mounts made outside the rootfs: {outside}"
    # the mounts happened, inside: the symlinks were followed within the rootfs
    real = os.path.realpath(bundle.rootfs)
    points = {mp for mp, _ in rec.mount_points()}
    for want in (f"{real}{target}/t1", f"{real}{target}/t2", f"{real}{target}/t3/host-file",
                 f"{real}{target}/t4/sub/deeper"):
        assert want in points, (want, sorted(points))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["volume", "volume-file", "inside"], p.stdout
    # and nothing was created or mounted on the host target
    assert sorted(os.walk(target)) == before
    assert all((target / t / "host-file").read_text() == "host" for t in ("t1", "t2", "t3", "t4"))


def test_dangling_symlink_destination_is_refused_or_kept_inside(runtime, bundle, tmp_path):
    """A symlink to a host path that does not exist in the rootfs: pyoci refuses it (runc
    creates the target inside the rootfs); either way nothing is made on the host."""
    target = tmp_path / f"absent-{uuid.uuid4().hex[:8]}"
    os.symlink(f"{UP}{target}", bundle.rootfs / "dangling")
    rec = HookRecorder(tmp_path / "mountinfo")
    bundle.config["mounts"].append({"destination": "/dangling/sub", "type": "tmpfs",
                                    "source": "tmpfs", "options": ["size=1m"]})
    bundle.config["hooks"] = {"createRuntime": [rec.hook()]}
    bundle.save()
    p = runtime.run("run", "--bundle", bundle.path, "dangle")
    assert not os.path.lexists(target), "a host path was created through the symlink"
    if p.returncode == 0:
        assert not _added_mounts_outside(rec, bundle.rootfs)
    else:
        assert "dangling symlink" in p.stderr, p.stderr
    assert runtime.ids() == []


def test_destination_swapped_for_a_symlink_by_a_running_container(
        runtime, second_bundle, install_attacker, tmp_path):
    """The race: container A shares a volume with container B and keeps exchanging the
    directory B mounts onto with a symlink to a host path (renameat2 RENAME_EXCHANGE, as
    fast as it can) while B is created again and again."""
    target = _host_target(tmp_path)
    volume = tmp_path / "shared-volume"
    volume.mkdir()
    a = second_bundle("attacker")
    install_attacker(a)
    a.config["mounts"].append({"destination": "/vol", "type": "none", "source": str(volume),
                               "options": ["rbind", "rw"]})
    a.set_args("/bin/attacker", "swap", "/vol", "x", f"{UP}{target}", "/vol/stop", "60")

    b = second_bundle("victim")
    # the symlink's target exists inside B's rootfs as well, so that a mount that went
    # through the symlink is not followed by an error that would hide it
    (b.rootfs / str(target).lstrip("/")).mkdir(parents=True)
    rec = HookRecorder(tmp_path / "mountinfo")
    b.config["mounts"] += [
        {"destination": "/vol", "type": "none", "source": str(volume), "options": ["rbind", "rw"]},
        {"destination": "/vol/x", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
        {"destination": "/vol/x/inner", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]},
    ]
    b.config["hooks"] = {"createRuntime": [rec.hook()]}
    b.set_args("/bin/true")
    results = {"created": 0, "refused": 0}
    try:
        runtime.ok("create", "--bundle", a.path, "swapper")
        runtime.ok("start", "swapper")
        assert wait_for(lambda: os.path.lexists(volume / ".x.swap")), "the swapper did not start"
        for i in range(ROUNDS):
            if os.path.exists(rec.path):
                os.unlink(rec.path)
            p = runtime.run("create", "--bundle", b.path, f"victim{i}")
            if os.path.exists(rec.path):
                outside = _added_mounts_outside(rec, b.rootfs)
                assert not outside, f"round {i}: mounts made outside the rootfs: {outside}"
            if p.returncode == 0:
                results["created"] += 1
                force_delete(runtime, f"victim{i}")
            else:
                results["refused"] += 1
                assert "rootfs" in p.stderr or "mounts[" in p.stderr, p.stderr
            assert sorted(os.listdir(target)) == ["host-file"], f"round {i}: host target changed"
        (volume / "stop").touch()
        assert wait_for(lambda: runtime.state("swapper")["status"] == "stopped", timeout=15)
    finally:
        (volume / "stop").touch()
        force_delete(runtime, "swapper")
        for i in range(ROUNDS):
            force_delete(runtime, f"victim{i}")
    assert results["created"] + results["refused"] == ROUNDS
