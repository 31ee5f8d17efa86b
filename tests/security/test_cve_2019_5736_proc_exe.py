"""CVE-2019-5736 class: the runtime's own executable reached from inside the container.

runc's bug: a process in the container opened /proc/<runc pid>/exe while `runc exec` (or
`runc init`) was joining the container, kept the fd, and once runc exited wrote the host's
runc binary through it. pyoci's "binary" is the host's Python interpreter, so the same attack
would let a container overwrite the host's python. The defence: every runtime process that
enters the container's namespaces is made non-dumpable (PR_SET_DUMPABLE 0) before it joins,
which makes /proc/<pid>/exe, /fd, /cwd and /environ unreachable for the container's processes
even when they hold the same uid and capabilities as that runtime process; and no host fd is
left open across the final execve.

The attacker is the static `attacker scan` helper: it watches /proc for every process that
appears and tries O_PATH/O_RDONLY/O_WRONLY opens of /proc/P/exe, readlink of exe and cwd,
reading environ and opening every /proc/P/fd/N. The victims are
  * the init of a second container created in the attacker's pid namespace: a runtime
    (python) process that has already dropped to the container's capabilities and waits at
    the exec gate until `start` (a long, deterministic window), and
  * the processes of several `pyoci exec` into the attacker's container.
"""
from __future__ import annotations

import os
import platform
import shutil
import struct
import subprocess
import sys
import time

import pytest

from conftest import HERE, force_delete, wait_for

pytestmark = pytest.mark.root

SCAN_SECONDS = 60


def _host_python() -> tuple[int, int, int]:
    st = os.stat(os.path.realpath(sys.executable))
    return os.major(st.st_dev), os.minor(st.st_dev), st.st_ino


def _lines(path) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True


def test_runtime_processes_are_unreachable_through_proc(runtime, second_bundle, install_attacker, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    out, stop = shared / "scan.txt", shared / "stop"

    a = second_bundle("attacker")
    install_attacker(a)
    a.config["mounts"].append({"destination": "/shared", "type": "none", "source": str(shared),
                               "options": ["rbind", "rw"]})
    a.set_args("/bin/attacker", "scan", "/shared/scan.txt", "/shared/stop", str(SCAN_SECONDS))

    victim = second_bundle("victim")
    try:
        runtime.ok("create", "--bundle", a.path, "att")
        runtime.ok("start", "att")
        assert wait_for(lambda: any(x.startswith("START") for x in _lines(out))), _lines(out)
        att_pid = runtime.state("att")["pid"]

        # a runtime process inside the attacker's pid namespace, same uid and capabilities
        # as the attacker, parked at the exec gate
        victim.config["linux"]["namespaces"] = [
            {"type": "pid", "path": f"/proc/{att_pid}/ns/pid"}] + [
            n for n in victim.config["linux"]["namespaces"] if n["type"] != "pid"]
        victim.set_args("/bin/true")
        runtime.ok("create", "--bundle", victim.path, "vic")
        assert b"pyoci" in open(f"/proc/{runtime.state('vic')['pid']}/cmdline", "rb").read()
        assert wait_for(lambda: any(x.startswith("SEEN") and "pyoci" in x for x in _lines(out))), \
            "the attacker never saw the parked runtime process:\n" + "\n".join(_lines(out))
        time.sleep(1.0)   # many probe rounds against the parked init

        # processes of `pyoci exec` while they join and set up
        for _ in range(5):
            p = runtime.run("exec", "att", "/bin/true")
            assert p.returncode == 0, p.stderr
        vic_pid = runtime.state("vic")["pid"]
        runtime.ok("start", "vic")
        # the victim's process was reparented to pytest (a subreaper): reap it, or the
        # attacker's pid namespace cannot finish dying
        assert wait_for(lambda: _reaped(vic_pid), timeout=10)

        stop.touch()
        assert wait_for(lambda: runtime.state("att")["status"] == "stopped", timeout=15)
    finally:
        stop.touch()
        force_delete(runtime, "vic")
        force_delete(runtime, "att")

    lines = _lines(out)
    assert lines and lines[-1].startswith("END"), lines[-20:]
    seen_runtime = [x for x in lines if x.startswith("SEEN") and "pyoci" in x]
    assert seen_runtime, "the scan saw no runtime process: the test proved nothing"
    py = "%d:%d:%d" % _host_python()
    leaks = sorted({x for x in lines if x.startswith("GOT") and (py in x.split()[3] or "pyoci" in x.split()[4])})
    assert not leaks, ("a container process reached a runtime process (the host interpreter) "
                       "through /proc:\n" + "\n".join(leaks[:20]))


def test_exec_process_holds_no_runtime_fd(runtime, bundle):
    """The same class from the other side: what a process started by `pyoci exec` (and the
    init) holds when it starts. Only stdio may be open: any other fd would be a runtime fd
    (channel socket, state dir, the interpreter's files) reachable from the container."""
    bundle.set_args("sleep", "30")
    try:
        runtime.ok("create", "--bundle", bundle.path, "fdc")
        runtime.ok("start", "fdc")
        # ls lists the fds of the shell pyoci exec started (`; true` keeps it from exec'ing ls)
        p = runtime.run("exec", "fdc", "sh", "-c", "ls /proc/$$/fd; true")
        assert p.returncode == 0, p.stderr
        fds = sorted(int(x) for x in p.stdout.split())
        assert fds == [0, 1, 2], p.stdout
        pid = runtime.state("fdc")["pid"]
        assert sorted(int(x) for x in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2]
    finally:
        force_delete(runtime, "fdc")


# ---------------------------------------------------------------------------------------------
# The original runc exploit: the container's own program is "#!/proc/self/exe"
# ---------------------------------------------------------------------------------------------
ATTACK_SH = """\
stat -L -c '%d %i' /proc/self/fd/3 > /shared/reached 2>&1
i=0
while [ $i -lt 100 ]; do
    if (echo PWNED-BY-A-CONTAINER > /proc/self/fd/3) 2>/dev/null; then echo wrote > /shared/wrote; break; fi
    i=$((i+1)); sleep 0.1
done
echo done > /shared/done
"""


def _elf_interpreter(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        off = phoff + i * phentsize
        if struct.unpack_from("<I", data, off)[0] == 3:            # PT_INTERP
            p_offset, = struct.unpack_from("<Q", data, off + 8)
            p_filesz, = struct.unpack_from("<Q", data, off + 32)
            return data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
    raise AssertionError(f"{path} has no ELF interpreter")


class CopyRuntime:
    """The pyoci CLI run by a private copy of the host's python binary (so that the attack
    below, if it works, overwrites the copy, not the host's interpreter)."""

    def __init__(self, runtime, python_copy: str):
        import pyoci
        self.rt, self.python = runtime, python_copy
        paths = [os.path.dirname(os.path.dirname(pyoci.__file__))] + [
            p for p in sys.path if p.endswith("site-packages")]
        self.env = dict(os.environ, PYTHONPATH=":".join(paths))

    def run(self, *args, **kw):
        from helpers import runner
        saved = runner.PYOCI
        runner.PYOCI = [self.python, "-m", "pyoci"]
        try:
            return self.rt.run(*args, env=self.env, **kw)
        finally:
            runner.PYOCI = saved


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the fake loader is x86-64 code")
def test_container_program_cannot_reach_the_interpreter_through_proc_self_exe(
        runtime, bundle, tmp_path):
    """The container's program is a script starting with "#!/proc/self/exe": the kernel
    resolves that interpreter in the process that calls execve, the runtime's container init,
    i.e. the host's python. With a loader of its own in the image, the attacker runs code
    in a process whose /proc/self/exe is that python, keeps an O_PATH fd of it, and once no
    runtime process executes the file any more, opens it for writing through
    /proc/self/fd/N. The test runs pyoci from a copy of the interpreter, so that at worst
    the copy is overwritten; the copy must be unchanged and never reached."""
    real = os.path.realpath(sys.executable)
    copy = tmp_path / "python-copy" / "bin" / "python3"
    copy.parent.mkdir(parents=True)
    shutil.copy2(real, copy)
    original = copy.read_bytes()
    st = os.stat(copy)
    fakeld = tmp_path / "fakeld"
    subprocess.run(["gcc", "-nostdlib", "-static-pie", "-fPIE", "-fno-stack-protector", "-fno-builtin",
                    "-mgeneral-regs-only", "-O2", "-o", str(fakeld), os.path.join(HERE, "fakeld.c")],
                   check=True, capture_output=True, timeout=120)
    interp = bundle.rootfs / _elf_interpreter(real).lstrip("/")
    interp.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(fakeld, interp)
    (bundle.rootfs / "attack.sh").write_text(ATTACK_SH)
    (bundle.rootfs / "entry").write_text("#!/proc/self/exe\n")
    os.chmod(bundle.rootfs / "entry", 0o755)
    shared = tmp_path / "shared"
    shared.mkdir()
    bundle.config["mounts"].append({"destination": "/shared", "type": "none", "source": str(shared),
                                    "options": ["rbind", "rw"]})
    bundle.set_args("/entry")
    rt = CopyRuntime(runtime, str(copy))
    try:
        p = rt.run("create", "--bundle", bundle.path, "selfexe")
        assert p.returncode == 0, p.stderr
        p = rt.run("start", "selfexe")
        assert p.returncode == 0, p.stderr
        wait_for(lambda: (shared / "done").exists() or not os.path.exists(
            f"/proc/{runtime.state('selfexe')['pid']}"), timeout=20)
    finally:
        force_delete(runtime, "selfexe")
    reached = (shared / "reached").read_text().split() if (shared / "reached").exists() else []
    assert copy.read_bytes() == original, "the container overwrote the runtime's interpreter"
    assert reached != [str(st.st_dev), str(st.st_ino)], \
        "a container process got an fd on the runtime's interpreter through /proc/self/exe"
