"""Helpers for the reliability tests: host snapshots per test, a test-made network namespace
that plays the host, and a bounded poll."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time

from helpers import hostcheck


def poll(fn, timeout: float = 10.0, step: float = 0.02):
    """Call fn() until it returns something truthy or the time is up; return the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


class HostCheck:
    """A snapshot of what a test could leak (mounts in our mount ns, cgroups under the private
    cgroup2 mount, netns, links, our child processes), compared again after the test."""

    def __init__(self, ignore_pids=(), cgroup_words=()):
        """cgroup_words: the cgroup hierarchy is shared with other test sessions running at
        the same time, so only cgroups whose path contains one of these words are judged
        (the test's container ids); empty = all."""
        self.ignore = {str(p) for p in ignore_pids}
        self.words = tuple(cgroup_words)
        self.before = hostcheck.snapshot()

    def _mine(self, item: str) -> bool:
        kind, _, what = item.partition(": ")
        if kind == "processes":
            return what.split()[0] not in self.ignore
        if kind == "cgroups" and self.words:
            return any(w in what for w in self.words)
        return True

    def leaks(self) -> list[str]:
        return [x for x in hostcheck.diff(self.before, hostcheck.snapshot()) if self._mine(x)]

    def assert_clean(self, timeout: float = 10.0) -> None:
        left = poll(lambda: not self.leaks(), timeout=timeout)
        assert left, "host not as before:\n" + "\n".join(self.leaks())


def cgroup_dirs_of(cid: str) -> list[str]:
    """Every cgroup directory (private cgroup2 mount) whose name is the container id."""
    out = []
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        if os.path.basename(dirpath) == cid:
            out.append(dirpath)
    return out


def pids_with_cmdline(needle: str) -> list[int]:
    out = []
    me = os.getpid()
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == me:
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] == "Z":
            continue
        if needle.encode() in cmd:
            out.append(int(p))
    return out


def kill_pids(pids) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Netns:
    """A network namespace held by a forked child until close() (at most 300 s); it plays the
    host for the bridge mode, so the machine's own links are never touched."""

    def __init__(self):
        r, w = os.pipe()
        hold_r, hold_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                from pyoci.linux import libc
                libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
                os.close(r)
                os.close(hold_w)
                libc.unshare(libc.CLONE_NEWNET)
                os.write(w, b"k")
                os.close(w)
                select.select([hold_r], [], [], 300)
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        os.close(hold_r)
        ok = os.read(r, 1)
        os.close(r)
        self.pid, self._hold = pid, hold_w
        if ok != b"k":
            self.close()
            raise RuntimeError("netns holder failed to unshare")
        self.path = f"/proc/{pid}/ns/net"

    def close(self) -> None:
        if self._hold is not None:
            os.close(self._hold)
            self._hold = None
            os.waitpid(self.pid, 0)

    def sh(self, *argv, check=True, timeout=10):
        p = subprocess.run(["nsenter", f"--net={self.path}", *argv], capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{argv} in {self.path}: {p.returncode} {p.stderr}")
        return p

    def links(self) -> set[str]:
        return {l["ifname"] for l in json.loads(self.sh("ip", "-j", "link", "show").stdout)}
