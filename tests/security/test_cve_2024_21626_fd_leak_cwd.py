"""CVE-2024-21626 class: a host fd leaked into the container, or a cwd outside the rootfs.

runc's bug ("Leaky Vessels"): runc still had an fd of the host's /sys/fs/cgroup open when
it chdir'ed to process.cwd, so `cwd: /proc/self/fd/7` left the container process with a
working directory on the host, from which `../../..` reached the host's root. The same
holds for `runc exec --cwd`. pyoci's container init holds runtime fds at that point too (the
channel socket, an O_PATH fd of the host state directory).

Defence: cwd is resolved inside the container's root with openat2(RESOLVE_IN_ROOT), which
refuses magic links (/proc/self/fd/N, /proc/self/cwd, ...), entered with fchdir and checked
to be reachable from the root; every fd but stdio (and --preserve-fds) is closed before
execve.

The attack: a config (and an exec --cwd, and a rootfs symlink used as cwd) naming every
/proc/self/fd/N a runtime process could hold; from that cwd the process looks for a marker
file the test planted next to the state directory on the host. Either pyoci refuses to start
the process or the process is inside the rootfs and sees no host file.
"""
from __future__ import annotations

import os
import uuid

import pytest

from conftest import force_delete

pytestmark = pytest.mark.root

FDS = range(3, 16)
UP = "../" * 40


def _marker(tmp_path) -> tuple[str, str]:
    """A host file next to the state dir; returns (host path, unique content)."""
    token = uuid.uuid4().hex
    path = tmp_path / f"host-marker-{token[:8]}"
    path.write_text(token)
    return str(path), token


def _probe_script(marker: str) -> str:
    # from wherever the cwd is, walk up (at most to the root the process can reach) and
    # look for the host marker by its absolute host path; also report the cwd as seen
    return (f"echo CWD=$(pwd -P); cat {UP.rstrip('/')}{marker} 2>/dev/null; "
            f"cat ./{marker} 2>/dev/null; ls {UP} > /dev/null; true")


def test_config_cwd_through_proc_self_fd(runtime, bundle, tmp_path):
    marker, token = _marker(tmp_path)
    bundle.set_args("sh", "-c", _probe_script(marker))
    outcomes = {}
    for n in FDS:
        bundle.process["cwd"] = f"/proc/self/fd/{n}"
        bundle.save()
        p = runtime.run("run", "--bundle", bundle.path, f"fd{n}")
        outcomes[n] = (p.returncode, p.stdout.strip(), p.stderr.strip())
        assert token not in p.stdout, f"cwd /proc/self/fd/{n} reached a host file:\n{p.stdout}"
        if p.returncode == 0:
            cwd = p.stdout.split("CWD=", 1)[1].split()[0] if "CWD=" in p.stdout else ""
            assert cwd.startswith("/") and not cwd.startswith(str(tmp_path)), outcomes[n]
        else:
            assert "cwd" in p.stderr, outcomes[n]
    assert runtime.ids() == []
    # the fds a runtime process holds at chdir time exist: at least one N must have been
    # refused as a magic link, not merely missing (else the attack was not tried)
    assert any("magic link" in err for _, _, err in outcomes.values()), outcomes


def test_cwd_through_a_rootfs_symlink_to_proc_self_fd(runtime, bundle, tmp_path):
    """The image, not the config, carries the trick: cwd is a plain path whose last
    component is a symlink to /proc/self/fd/N."""
    marker, token = _marker(tmp_path)
    bundle.set_args("sh", "-c", _probe_script(marker))
    for n in FDS:
        link = bundle.rootfs / f"work{n}"
        os.symlink(f"/proc/self/fd/{n}", link)
        bundle.process["cwd"] = f"/work{n}"
        bundle.save()
        p = runtime.run("run", "--bundle", bundle.path, f"ln{n}")
        assert token not in p.stdout, f"cwd /work{n} -> /proc/self/fd/{n} reached a host file"
        assert p.returncode != 0 and "cwd" in p.stderr, (n, p.stdout, p.stderr)
    assert runtime.ids() == []


def test_dotdot_cwd_stays_in_the_rootfs(runtime, bundle, tmp_path):
    marker, token = _marker(tmp_path)
    bundle.set_args("sh", "-c", _probe_script(marker))
    bundle.process["cwd"] = "/" + UP
    bundle.save()
    p = runtime.run("run", "--bundle", bundle.path, "dots")
    assert token not in p.stdout
    if p.returncode == 0:
        assert "CWD=/\n" in p.stdout, p.stdout
    else:
        assert "cwd" in p.stderr


def test_exec_cwd_through_proc_self_fd(runtime, bundle, tmp_path):
    marker, token = _marker(tmp_path)
    bundle.set_args("sleep", "60")
    cid = "ex" + uuid.uuid4().hex[:6]
    try:
        runtime.ok("create", "--bundle", bundle.path, cid)
        runtime.ok("start", cid)
        refused = 0
        for n in FDS:
            p = runtime.run("exec", "--cwd", f"/proc/self/fd/{n}", cid, "sh", "-c", _probe_script(marker))
            assert token not in p.stdout, f"exec --cwd /proc/self/fd/{n} reached a host file:\n{p.stdout}"
            if p.returncode == 0:
                cwd = p.stdout.split("CWD=", 1)[1].split()[0]
                assert not cwd.startswith(str(tmp_path)), p.stdout
            else:
                refused += "magic link" in p.stderr
        assert refused, "no exec --cwd was refused as a magic link: the attack was not tried"
    finally:
        force_delete(runtime, cid)


def test_no_host_fd_visible_in_the_container(runtime, bundle):
    """What a container process holds when it starts: stdio only (run and exec), and every
    one of them is a container-side or caller-given file, not a runtime fd."""
    bundle.set_args("sh", "-c", "ls /proc/$$/fd; true")
    p = runtime.run("run", "--bundle", bundle.path, "fdl")
    assert p.returncode == 0, p.stderr
    assert sorted(int(x) for x in p.stdout.split()) == [0, 1, 2], p.stdout
    bundle.set_args("sleep", "60")
    try:
        runtime.ok("create", "--bundle", bundle.path, "fdl2")
        runtime.ok("start", "fdl2")
        p = runtime.run("exec", "fdl2", "sh", "-c", "ls /proc/$$/fd; true")
        assert p.returncode == 0, p.stderr
        assert sorted(int(x) for x in p.stdout.split()) == [0, 1, 2], p.stdout
    finally:
        force_delete(runtime, "fdl2")


def test_ordinary_symlinks_in_cwd_still_work(runtime, bundle):
    """Control: the defence only refuses magic links; a cwd through ordinary symlinks of the
    image (absolute or relative) is followed inside the rootfs, as before."""
    (bundle.rootfs / "srv" / "app").mkdir(parents=True)
    os.symlink("/srv/app", bundle.rootfs / "abs-link")
    os.symlink("srv/app", bundle.rootfs / "rel-link")
    bundle.set_args("sh", "-c", "pwd -P")
    for cwd in ("/abs-link", "/rel-link", "/abs-link/../app", "/srv/app/"):
        bundle.process["cwd"] = cwd
        bundle.save()
        p = runtime.run("run", "--bundle", bundle.path, "okcwd")
        assert p.returncode == 0, (cwd, p.stderr)
        assert p.stdout.strip() == "/srv/app", (cwd, p.stdout)
