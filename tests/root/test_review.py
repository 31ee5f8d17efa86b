"""Adversarial review of the core lifecycle: each test reproduces one defect found in review
(through the CLI, as podman, containerd or a person would hit it)."""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import time

import pytest

from helpers.runner import Runtime

pytestmark = pytest.mark.root


def _wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _no_pid_ns(bundle):
    bundle.linux["namespaces"] = [n for n in bundle.linux["namespaces"] if n["type"] != "pid"]


from helpers.console import console_listener as _console_listener  # noqa: E402
from helpers.console import recv_master  # noqa: E402


def _recv_master(srv):
    return recv_master(srv)[1]


# ───────────────────────── run: exit codes and signals ─────────────────────────

def test_run_tty_exit_code_of_a_signalled_process_is_128_plus_n(runtime, bundle):
    """`run` with a terminal (no console socket: pyoci proxies the pty). The process is killed
    by SIGKILL while a background child keeps the pty slave open, so the proxy notices the
    death through waitpid (not EOF). The exit code must be 128+9, as without a terminal."""
    _no_pid_ns(bundle)                     # the background child survives its parent
    bundle.process["terminal"] = True
    # (HUP ignored: the slave's hangup must not end the background child first)
    bundle.set_args("sh", "-c", "trap '' HUP; sleep 2 & kill -KILL $$")
    p = runtime.run("run", "--bundle", bundle.path, "rt1", timeout=30)
    assert p.returncode == 128 + signal.SIGKILL, (p.returncode, p.stderr)
    assert runtime.ids() == []


def test_run_forwards_other_signals_and_cleans_up(runtime, bundle, tmp_path):
    """runc's foreground `run` forwards every signal it can catch to the container. pyoci
    forwarded a short list only: a SIGALRM (or SIGUSR-like SIGPWR, SIGIO...) killed pyoci and
    left the container running and its state dir behind."""
    bundle.set_args("sh", "-c", "trap 'exit 42' ALRM; touch /ready; while :; do sleep 0.05; done")
    ready = bundle.rootfs / "ready"
    with open(tmp_path / "out", "wb") as out:
        p = subprocess.Popen(runtime.argv("run", "--bundle", bundle.path, "rt2"),
                             stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            assert _wait_for(ready.exists), (tmp_path / "out").read_text()
            p.send_signal(signal.SIGALRM)
            rc = p.wait(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert rc == 42, (rc, (tmp_path / "out").read_text())
    assert runtime.ids() == []


def test_run_tty_with_stdout_a_closed_pipe(runtime, bundle):
    """`run -t` proxying the pty while its stdout is a pipe whose reader went away: pyoci must
    not die with a BrokenPipeError traceback and leave the container behind; it keeps waiting
    for the process and returns its exit code (runc ignores the failed copy)."""
    bundle.process["terminal"] = True
    bundle.set_args("sh", "-c", "echo one; sleep 0.3; echo two; sleep 0.3; exit 3")
    r, w = os.pipe()
    os.close(r)                                 # nobody reads our stdout
    try:
        p = subprocess.run(runtime.argv("run", "--bundle", bundle.path, "rt3"),
                           stdin=subprocess.DEVNULL, stdout=w, stderr=subprocess.PIPE, timeout=30)
    finally:
        os.close(w)
    assert p.returncode == 3, (p.returncode, p.stderr)
    assert b"Traceback" not in p.stderr
    assert runtime.ids() == []


# ───────────────────────── runc behaviour clients rely on ─────────────────────────

# Deliberate difference: runc 1.1.5 deletes a *created* container without --force (it kills
# the init). The runtime-spec says deleting a container that is not stopped MUST generate an
# error and have no effect, so pyoci refuses (tests/root/test_lifecycle.py asserts it); the
# clients' lanes pass either way (the containerd shim follows up with delete --force).


def test_kill_and_delete_force_of_a_paused_container(runtime, bundle):
    bundle.set_args("sleep", "30")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "pz1")
    runtime.ok("pause", "pz1")
    assert runtime.state("pz1")["status"] == "paused"
    runtime.ok("kill", "pz1", "KILL")
    assert runtime.wait_status("pz1", "stopped")["status"] == "stopped"
    runtime.ok("delete", "pz1")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "pz2")
    runtime.ok("pause", "pz2")
    runtime.ok("delete", "--force", "pz2")
    assert runtime.ids() == []


def test_exec_tty_through_console_socket_like_conmon(runtime, bundle, tmp_path):
    """conmon: `exec --detach --tty --console-socket S --pid-file P --process F ID`."""
    bundle.set_args("sleep", "30")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "et1")
    proc = dict(bundle.process, terminal=True, args=["sh", "-c", "tty; read x; exit 4"], cwd="/")
    pf = tmp_path / "proc.json"
    pf.write_text(json.dumps(proc))
    srv, path = _console_listener(tmp_path)
    pidf = tmp_path / "exec.pid"
    try:
        runtime.ok("exec", "--detach", "--tty", "--console-socket", path, "--pid-file", str(pidf),
                   "--process", str(pf), "et1")
        fds = _recv_master(srv)
    finally:
        srv.close()
    assert len(fds) == 1
    master = fds[0]
    try:
        buf = b""
        deadline = time.monotonic() + 10
        while b"/dev/pts/" not in buf and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                buf += os.read(master, 4096)
        assert b"/dev/pts/" in buf
        os.write(master, b"go\n")
        _, status = os.waitpid(int(pidf.read_text()), 0)
        assert os.waitstatus_to_exitcode(status) == 4
    finally:
        os.close(master)
    runtime.ok("delete", "--force", "et1")


def test_bad_numeric_flags_are_usage_errors(runtime, bundle):
    """exec --preserve-fds x / --user x crashed with a ValueError traceback; a negative
    --preserve-fds was accepted and made the child close fds from 2 on (the container's
    stderr). runc's flags are uint: both are parse errors."""
    bundle.set_args("sleep", "30")
    p = runtime.run("create", "--preserve-fds", "-1", "--bundle", bundle.path, "pf0")
    assert p.returncode == 1 and "preserve-fds" in p.stderr
    assert runtime.ids() == []
    runtime.ok("run", "--detach", "--bundle", bundle.path, "pf1")
    for args in (("--preserve-fds", "x"), ("--preserve-fds", "-1"), ("--user", "bob"),
                 ("--additional-gids", "wheel")):
        p = runtime.run("exec", *args, "pf1", "true")
        assert p.returncode != 0, args
        assert "Traceback" not in p.stderr and args[0][2:] in p.stderr, (args, p.stderr)
    runtime.ok("delete", "--force", "pf1")


# ───────────────────────── the child after pivot_root: no host Python ─────────────────────────

def _hook_script(bundle, tmp_path):
    """createContainer runs before pivot_root (host path); startContainer after (container path)."""
    host = tmp_path / "hook.sh"
    host.write_text("#!/bin/sh\ncat >/dev/null\necho \"$1\" >> " + str(tmp_path / "hooks.log") + "\n")
    host.chmod(0o755)
    (bundle.rootfs / "hook.sh").write_text("#!/bin/sh\ncat >/dev/null\necho \"$1\" >> /hooklog/hooks.log\n")
    (bundle.rootfs / "hook.sh").chmod(0o755)
    (bundle.rootfs / "hooklog").mkdir()
    bundle.config["mounts"].append({"destination": "/hooklog", "type": "bind", "source": str(tmp_path),
                                    "options": ["rbind", "rw"]})
    bundle.config["hooks"] = {
        "createContainer": [{"path": str(host), "args": ["hook.sh", "createContainer"]}],
        "startContainer": [{"path": "/hook.sh", "args": ["hook.sh", "startContainer"], "timeout": 10}],
    }


_SECCOMP_DENY_MKDIR = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                       "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                     "errnoRet": 1}]}


@pytest.mark.parametrize("nnp", [False, True])
def test_every_child_path_works_without_the_hosts_python(runtime, bundle, tmp_path, nnp):
    """The child imports nothing after pivot_root (the rootfs has no Python): terminal with a
    console socket, createContainer/startContainer hooks, seccomp before (no NNP) or after
    (NNP) the identity switch, sysctl, rlimits, all with --debug (its log lines come from the
    child too)."""
    _hook_script(bundle, tmp_path)
    bundle.process["terminal"] = True
    bundle.process["noNewPrivileges"] = nnp
    bundle.process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}]
    bundle.linux["seccomp"] = _SECCOMP_DENY_MKDIR
    bundle.linux["sysctl"] = {"kernel.shmmax": "123456789"}
    bundle.set_args("sh", "-c", "ulimit -n; cat /proc/sys/kernel/shmmax; mkdir /x || echo denied; "
                    "echo done-$((6*7))")
    log = tmp_path / "log.json"
    rt = Runtime(runtime.root, log=str(log))
    srv, path = _console_listener(tmp_path)
    try:
        p = rt.run("create", "--bundle", bundle.path, "--console-socket", path, "cp1",
                   global_flags=("--debug",))
        assert p.returncode == 0, (p.stderr, log.read_text() if log.exists() else "")
        fds = _recv_master(srv)
    finally:
        srv.close()
    master = fds[0]
    try:
        rt.ok("start", "cp1")
        buf = b""
        deadline = time.monotonic() + 10
        while b"done-42" not in buf and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
    finally:
        os.close(master)
    assert b"done-42" in buf, (buf, log.read_text())
    lines = buf.decode().split()
    assert lines[:2] == ["512", "123456789"] and "denied" in lines
    runtime.wait_status("cp1", "stopped")
    runtime.ok("delete", "cp1")
    assert (tmp_path / "hooks.log").read_text().split() == ["createContainer", "startContainer"]
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        assert rec["level"] != "error", rec
        assert "No module named" not in rec["msg"]


def test_user_namespace_container_with_debug(runtime, busybox_rootfs):
    import shutil
    import tempfile
    from helpers.bundle import Bundle
    top = tempfile.mkdtemp(prefix="pyoci-review-")
    try:
        os.chmod(top, 0o755)
        b = Bundle.make(os.path.join(top, "bundle"), busybox_rootfs)
        b.linux["namespaces"].append({"type": "user"})
        b.linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        b.linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        b.config["mounts"] = [m for m in b.config["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]
        b.linux["seccomp"] = _SECCOMP_DENY_MKDIR
        os.chmod(b.path, 0o755)
        subprocess.run(["chown", "-R", "100000:100000", str(b.rootfs)], check=True)
        b.set_args("sh", "-c", "id -u; mkdir /y || echo denied")
        p = runtime.run("run", "--bundle", b.path, "un1", global_flags=("--debug",))
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == ["0", "denied"]
        assert "No module named" not in p.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("debug", [False, True])
def test_child_error_after_pivot_is_reported_with_debug(runtime, bundle, tmp_path, debug):
    """A child failure that is not a PyociError (here: a console size that does not fit the
    winsize ioctl) must reach the user as the child's error, with and without --debug. With
    --debug the child imported `traceback` after pivot_root, which fails (the host's Python is
    gone), and the error frame was never sent: 'the container process exited during setup'."""
    bundle.process["terminal"] = True
    bundle.process["consoleSize"] = {"height": 70000, "width": 80}
    bundle.save()
    srv, path = _console_listener(tmp_path)
    try:
        p = runtime.run("create", "--bundle", bundle.path, "--console-socket", path, "dbg1",
                        global_flags=("--debug",) if debug else ())
    finally:
        srv.close()
    assert p.returncode == 1
    assert "terminal" in p.stderr and "exited during setup" not in p.stderr, p.stderr
    assert runtime.ids() == []


def test_exec_child_error_is_reported_with_debug(runtime, bundle, tmp_path):
    """The same for exec: its process runs in the container's mount namespace. (Not detached:
    pyoci is then the subreaper of the failed process and reaps it itself.)"""
    bundle.set_args("sleep", "30")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "dbg2")
    proc = dict(bundle.process, terminal=True, consoleSize={"height": 70000, "width": 80},
                args=["true"], cwd="/")
    pf = tmp_path / "proc.json"
    pf.write_text(json.dumps(proc))
    p = runtime.run("exec", "--process", str(pf), "dbg2", global_flags=("--debug",))
    assert p.returncode == 255
    assert "terminal" in p.stderr and "exited during setup" not in p.stderr, p.stderr[-2000:]
    runtime.ok("delete", "--force", "dbg2")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_kill_of_a_created_container_ends_the_init_by_that_signal(runtime, bundle, tmp_path, sig):
    """The init of a created container waits at the exec gate (runc 1.1.5: `kill` with TERM or
    INT ends it). pyoci's init is a fork of Python: SIGINT raised KeyboardInterrupt in it (an
    error logged, exit 1), and SIGTERM, left at SIG_DFL, was dropped by the kernel because the
    init is pid 1 of its pid namespace: the container stayed 'created' (podman stop then
    waits its whole timeout). The caller (conmon, the shim: subreapers, as pytest is here)
    sees the wait status."""
    bundle.set_args("sleep", "30")
    log = tmp_path / "log.json"
    rt = Runtime(runtime.root, log=str(log))
    rt.ok("create", "--bundle", bundle.path, "ks1")
    pid = rt.state("ks1")["pid"]
    rt.ok("kill", "ks1", str(int(sig)))
    status = None

    def reaped():
        nonlocal status
        r, st = os.waitpid(pid, os.WNOHANG)   # we are its subreaper
        if r:
            status = st
        return bool(r)
    assert _wait_for(reaped), "the init ignored the signal"
    # runc's init dies of it (or, being pid 1 of its namespace, exits); never 1 with an error
    code = os.waitstatus_to_exitcode(status)
    assert code in (-sig, 128 + sig), code
    assert rt.state("ks1")["status"] == "stopped"
    rt.ok("delete", "ks1")
    assert not any(json.loads(ln)["level"] == "error" for ln in log.read_text().splitlines())


def test_container_and_exec_processes_get_default_sigpipe(runtime, bundle):
    """Python ignores SIGPIPE; the container's processes must not inherit that (a writer to a
    closed pipe must die of SIGPIPE, as under runc)."""
    bundle.set_args("sleep", "30")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "sp1")
    init = runtime.state("sp1")["pid"]
    assert _wait_for(lambda: open(f"/proc/{init}/cmdline", "rb").read().startswith(b"sleep"))
    masks = [open(f"/proc/{init}/status").read()]
    e = runtime.run("exec", "sp1", "sh", "-c", "yes | head -n1; grep SigIgn /proc/self/status")
    assert e.returncode == 0 and e.stdout.startswith("y\n"), e.stderr
    masks.append(e.stdout)
    for m in masks:
        ign = int(m.split("SigIgn:")[1].split()[0], 16)
        assert not ign & (1 << (signal.SIGPIPE - 1)) and not ign & (1 << (signal.SIGINT - 1)), m
    runtime.ok("delete", "--force", "sp1")


def test_concurrent_starts_exactly_one_wins(runtime, bundle):
    bundle.set_args("sleep", "30")
    runtime.ok("create", "--bundle", bundle.path, "cs1")
    procs = [subprocess.Popen(runtime.argv("start", "cs1"), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(4)]
    results = [(p.wait(timeout=30), p.stderr.read().decode()) for p in procs]
    for p in procs:
        p.stderr.close()
    assert sorted(rc for rc, _ in results) == [0, 1, 1, 1], results
    assert all("already running" in err for rc, err in results if rc), results
    assert runtime.state("cs1")["status"] == "running"
    runtime.ok("delete", "--force", "cs1")


def test_create_with_an_unwritable_pid_file_leaves_nothing(runtime, bundle, tmp_path):
    bundle.set_args("sleep", "30")
    p = runtime.run("create", "--bundle", bundle.path, "--pid-file", str(tmp_path / "no" / "such" / "pid"),
                    "pfw1")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert runtime.ids() == []
    assert not [d for d in os.listdir("/sys/fs/cgroup/pyoci") if d == "pfw1"] \
        if os.path.isdir("/sys/fs/cgroup/pyoci") else True


def test_exec_exit_code_of_a_signalled_process(runtime, bundle):
    bundle.set_args("sleep", "30")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "ex9")
    e = runtime.run("exec", "ex9", "sh", "-c", "kill -USR1 $$")
    assert e.returncode == 128 + signal.SIGUSR1, (e.returncode, e.stderr)
    runtime.ok("delete", "--force", "ex9")


def test_an_unexpected_os_error_is_one_clean_error_line(runtime, tmp_path):
    """`list` with a --root that is a file raised NotADirectoryError: a traceback on stderr and
    no JSON error line in --log (containerd then reports 'unable to retrieve OCI runtime
    error'). Any OSError that escapes a stage must still end as one error line."""
    f = tmp_path / "afile"
    f.write_text("")
    log = tmp_path / "log.json"
    rt = Runtime(str(f), log=str(log))
    p = rt.run("list")
    assert p.returncode == 1
    assert "Traceback" not in p.stderr and "not a directory" in p.stderr, p.stderr
    recs = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert [r["level"] for r in recs] == ["error"] and "not a directory" in recs[0]["msg"]
