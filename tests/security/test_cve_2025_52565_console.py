"""CVE-2025-52565 class: the /dev/console bind target swapped for a symlink.

For a terminal container runc bind-mounts the pty slave onto /dev/console. When /dev comes
from something the attacker controls, /dev/console can be a symlink (set in advance, or
swapped in by a container that shares the directory) to a procfs file such as
/proc/sys/kernel/core_pattern or /proc/sysrq-trigger: the bind then lands on that file,
which is no longer protected (the pty replaces a read-only or masked file, and the
mountpoint is now writable by the container).

Defence (rootfs.py): a /dev/console that is not a regular file or character device is
replaced by an empty file before pivot_root; bind_console refuses a symlink (lstat, then
openat2 RESOLVE_NO_SYMLINKS + O_NOFOLLOW and fstat of the fd that is mounted on), and the
bind targets that fd through /proc/self/fd/N; the source must be a pty slave.

The tests create terminal containers whose /dev is a bind of an attacker directory, and check
the container's mounts: a devpts file is mounted only on /dev/console (and /dev/pts), and
the procfs targets are still procfs files.
"""
from __future__ import annotations

import os
import socket
import stat

import pytest

from conftest import force_delete, swap_hook, wait_for

pytestmark = pytest.mark.root

TARGETS = tuple(t for t in ("/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger",
                            "/proc/sys/kernel/modprobe") if os.path.exists(t))
PTY_MAJORS = range(136, 144)


class ConsoleListener:
    """The --console-socket end: accepts the pty master pyoci sends, and closes it."""

    def __init__(self, path):
        self.path = str(path)
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(64)
        self.srv.settimeout(10)

    def take(self) -> int:
        conn, _ = self.srv.accept()
        try:
            _msg, fds, _flags, _ = socket.recv_fds(conn, 4096, 4)
        finally:
            conn.close()
        for fd in fds:
            os.close(fd)
        return len(fds)

    def close(self):
        self.srv.close()


def _attacker_dev(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    for sub in ("pts", "shm", "mqueue"):
        (d / sub).mkdir()
    os.mknod(d / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.symlink("pts/ptmx", d / "ptmx")
    return d


def _terminal_bundle(b, devdir):
    mounts = [m for m in b.config["mounts"] if m["destination"] != "/dev"]
    i = next(i for i, m in enumerate(mounts) if m["destination"].startswith("/dev/"))
    mounts.insert(i, {"destination": "/dev", "type": "none", "source": str(devdir),
                      "options": ["rbind", "rw"]})
    b.config["mounts"] = mounts
    b.process["terminal"] = True
    b.set_args("/bin/true")


def _problems(pid: int, racing: bool = False) -> list[str]:
    """What is wrong with a created terminal container's console, seen from the host. While
    the attacker still renames entries of the shared /dev (racing), the console mount may
    have moved with its dentry to another name in /dev: only a devpts file outside /dev,
    or a replaced procfs file, is a breach then."""
    bad = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype != "devpts" or fields[4] in ("/dev/pts", "/dev/console"):
                continue
            if not (racing and fields[4].startswith("/dev/")):
                bad.append(f"a devpts file is mounted on {fields[4]}")
    if not racing:
        st = os.stat(f"/proc/{pid}/root/dev/console")
        if not stat.S_ISCHR(st.st_mode) or os.major(st.st_rdev) not in PTY_MAJORS:
            bad.append(f"/dev/console is not a pty: mode {oct(st.st_mode)} rdev {st.st_rdev:#x}")
    for t in TARGETS:
        try:
            st = os.stat(f"/proc/{pid}/root{t}")
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            bad.append(f"{t} was replaced: mode {oct(st.st_mode)}")
    return bad


@pytest.mark.parametrize("target", TARGETS + ("/dev/pts/ptmx", "/dev/null", "dangling"))
def test_console_symlink_is_never_mounted_through(runtime, bundle, tmp_path, target):
    dev = _attacker_dev(tmp_path, "evil-dev")
    os.symlink("/nonexistent/console" if target == "dangling" else target, dev / "console")
    _terminal_bundle(bundle, dev)
    lis = ConsoleListener(tmp_path / "console.sock")
    try:
        p = runtime.run("create", "--bundle", bundle.path, "--console-socket", lis.path, "con")
        if p.returncode == 0:
            assert lis.take() == 1
            pid = runtime.state("con")["pid"]
            assert not _problems(pid), _problems(pid)
        else:
            assert "console" in p.stderr, p.stderr
    finally:
        force_delete(runtime, "con")
        lis.close()
    # the host's files behind the symlink are untouched
    for t in TARGETS:
        assert stat.S_ISREG(os.stat(t).st_mode)


@pytest.mark.parametrize("target", TARGETS + ("/dev/null",))
def test_console_swapped_after_the_placeholder_is_refused(runtime, bundle, tmp_path, target):
    """The race won by the attacker, made deterministic: /dev/console becomes a symlink after
    pyoci made its placeholder and before it binds the pty (a hook does the swap at that
    point). The bind must be refused, not follow the symlink."""
    dev = _attacker_dev(tmp_path, "evil-dev")
    _terminal_bundle(bundle, dev)
    bundle.config["hooks"] = {"createRuntime": [swap_hook(dev / "console", target)]}
    bundle.save()
    lis = ConsoleListener(tmp_path / "console.sock")
    try:
        p = runtime.run("create", "--bundle", bundle.path, "--console-socket", lis.path, "conhook")
        assert os.path.islink(dev / "console"), "the hook did not run"
        if p.returncode == 0:
            lis.take()
            pid = runtime.state("conhook")["pid"]
            assert not _problems(pid, racing=True), _problems(pid, racing=True)
        assert p.returncode != 0 and "/dev/console is a symlink" in p.stderr, p.stderr
    finally:
        force_delete(runtime, "conhook")
        lis.close()


def test_console_swapped_by_a_container_sharing_dev(runtime, second_bundle, install_attacker, tmp_path):
    """The race: container A shares B's /dev directory and keeps exchanging /dev/console
    (a regular file) with a symlink to /proc/sys/kernel/core_pattern while terminal container
    B is created again and again."""
    dev = _attacker_dev(tmp_path, "shared-dev")
    (dev / "console").write_text("")
    a = second_bundle("attacker")
    install_attacker(a)
    a.config["mounts"].append({"destination": "/shared-dev", "type": "none", "source": str(dev),
                               "options": ["rbind", "rw"]})
    a.set_args("/bin/attacker", "swapkeep", "/shared-dev", "console", TARGETS[0],
               "/shared-dev/stop", "60")
    b = second_bundle("victim")
    _terminal_bundle(b, dev)
    lis = ConsoleListener(tmp_path / "console.sock")
    outcome = {"created": 0, "refused": 0}
    rounds = 20
    try:
        runtime.ok("create", "--bundle", a.path, "conswap")
        runtime.ok("start", "conswap")
        assert wait_for(lambda: os.path.lexists(dev / ".console.swap")), "the swapper did not start"
        for i in range(rounds):
            p = runtime.run("create", "--bundle", b.path, "--console-socket", lis.path, f"cv{i}")
            if p.returncode == 0:
                outcome["created"] += 1
                assert lis.take() == 1
                pid = runtime.state(f"cv{i}")["pid"]
                bad = _problems(pid, racing=True)
                force_delete(runtime, f"cv{i}")
                assert not bad, f"round {i}: {bad}"
            else:
                outcome["refused"] += 1
                assert "console" in p.stderr or "rootfs" in p.stderr, p.stderr
        (dev / "stop").touch()
        assert wait_for(lambda: runtime.state("conswap")["status"] == "stopped", timeout=15)
    finally:
        (dev / "stop").touch()
        force_delete(runtime, "conswap")
        for i in range(rounds):
            force_delete(runtime, f"cv{i}")
        lis.close()
    assert sum(outcome.values()) == rounds
    assert stat.S_ISREG(os.stat(TARGETS[0]).st_mode)
