"""Shared pieces of the escape-class tests (tests/security/).

Each test plays the attacker against the pyoci CLI (a black box, through the `runtime`
fixture): from inside a container (busybox scripts, or the static `attacker` helper built
here from attacker.c with gcc -static) or through a crafted config.json.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


@pytest.fixture(scope="session")
def attacker_bin(tmp_path_factory) -> str:
    """Path of the static attacker helper (compiled once per session)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to build the attacker helper")
    out = str(tmp_path_factory.mktemp("attacker") / "attacker")
    p = subprocess.run([gcc, "-static", "-O2", "-Wall", "-o", out, os.path.join(HERE, "attacker.c")],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        pytest.fail(f"cannot build the attacker helper:\n{p.stderr}")
    return out


@pytest.fixture
def install_attacker(attacker_bin):
    """install_attacker(bundle) copies the helper to /bin/attacker in the bundle's rootfs."""
    def install(bundle) -> str:
        dst = bundle.rootfs / "bin" / "attacker"
        shutil.copy2(attacker_bin, dst)
        os.chmod(dst, 0o755)
        return "/bin/attacker"
    return install


@pytest.fixture
def second_bundle(tmp_path, busybox_rootfs):
    """A factory of more bundles (several containers in one test)."""
    from helpers.bundle import Bundle
    n = [0]

    def make(name: str | None = None):
        n[0] += 1
        return Bundle.make(tmp_path / (name or f"bundle{n[0]}"), busybox_rootfs)
    return make


def wait_for(pred, timeout: float = 10.0, interval: float = 0.02):
    """Poll pred() until it returns a true value or timeout (returns the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


class HookRecorder:
    """A createRuntime hook (runs in the runtime's namespaces, after the mounts are made and
    before pivot_root) that copies the container init's mountinfo to a file: what the
    container's mount namespace looks like with the host paths still visible."""

    CODE = ("import json,sys,shutil;s=json.load(sys.stdin);"
            "shutil.copyfile('/proc/%d/mountinfo' % s['pid'], sys.argv[1])")

    def __init__(self, path):
        self.path = str(path)

    def hook(self) -> dict:
        return {"path": sys.executable, "args": [sys.executable, "-c", self.CODE, self.path]}

    def mount_points(self) -> list[tuple[str, str]]:
        """[(mount point, fstype)] recorded by the last run of the hook."""
        out = []
        with open(self.path) as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                out.append((_unescape(fields[4]), fields[sep + 1]))
        return out


def swap_hook(path, link_target: str) -> dict:
    """A createRuntime hook (host side, after the mounts and /dev are made, before pivot_root,
    masking and the console bind) that replaces `path` by a symlink to `link_target`: a
    deterministic stand-in for a racing container that shares the directory."""
    code = ("import os,sys;p,t=sys.argv[1],sys.argv[2]\n"
            "try: os.unlink(p)\nexcept FileNotFoundError: pass\nos.symlink(t,p)")
    return {"path": sys.executable, "args": [sys.executable, "-c", code, str(path), link_target]}


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def own_mount_points() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {_unescape(line.split()[4]) for line in f}


def under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def force_delete(runtime, cid: str) -> None:
    """delete --force, then reap the init (pytest is a subreaper, so a container init whose
    parent exited is our child) so that no exiting process outlives the test."""
    if cid not in runtime.ids():
        return
    pid = None
    try:
        pid = runtime.state(cid).get("pid")
    except (AssertionError, ValueError):
        pass
    runtime.run("delete", "--force", cid, timeout=30)
    if pid:
        # a pid namespace's init cannot finish exiting while a process of that namespace
        # (e.g. a failed `pyoci exec` child, reparented to this subreaper) is an unreaped zombie
        wait_for(lambda: reap_zombies() or reap(pid, timeout=0.1), timeout=10)


def reap_zombies() -> bool:
    """Reap every exited child of pytest; False (so it can be polled)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return False


def reap(pid: int, timeout: float = 10.0) -> bool:
    """Wait (bounded) for a child of pytest to exit and reap it; True when it is gone."""
    def gone() -> bool:
        try:
            return os.waitpid(pid, os.WNOHANG)[0] == pid
        except ChildProcessError:
            return not os.path.exists(f"/proc/{pid}")
    return bool(wait_for(gone, timeout))


def dump(obj) -> str:
    return json.dumps(obj, indent=1)
