"""The seccomp stage for real: compile in this (parent) process, fork, load in the child, make
syscalls there and report what the kernel did through a pipe.

Every child makes its syscalls through ctypes with raw numbers, so the test knows exactly which
syscall the filter saw. Children that may die by SIGSYS are made non-dumpable first (this
machine's core_pattern is a relative "core").
"""
from __future__ import annotations

import ctypes
import errno
import glob
import json
import os
import platform
import resource
import select
import signal
import socket
import struct
import threading
import time

import pytest

from pyoci.errors import ConfigError, SyscallError
from pyoci.linux import libc
from pyoci import seccomp as sc

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(platform.machine() != "x86_64", reason="raw x86_64 syscall numbers")]

NR_MKDIR = 83
NR_MKDIRAT = 258
NR_GETCWD = 79
NR_GETPRIORITY = 140
NR_PERSONALITY = 135
NR_GETPPID = 110

TRACE_CONFIG_DIR = "/work/shared/client-traces/trace-configs"
CAP_SYS_ADMIN = 21

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def raw(nr: int, *args) -> tuple[int, int]:
    """A raw syscall: (return value, errno or 0)."""
    ctypes.set_errno(0)
    cargs = [a if not isinstance(a, int) else ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF) for a in args]
    ret = _libc.syscall(ctypes.c_long(nr), *cargs)
    return ret, (ctypes.get_errno() if ret < 0 else 0)


def profile(default="SCMP_ACT_ALLOW", syscalls=(), **kw) -> dict:
    p = {"defaultAction": default, "syscalls": list(syscalls)}
    p.update(kw)
    return p


def _no_core():
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class Child:
    """A forked child that runs `body()` and sends its JSON result back through a pipe."""

    def __init__(self, body, *, stdout_fd: int | None = None, sock: socket.socket | None = None):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                os.close(r)
                _no_core()
                if stdout_fd is not None:
                    os.dup2(stdout_fd, 1)
                result = body()
                os.write(w, json.dumps(result).encode())
            except BaseException as e:  # report, never return into pytest
                try:
                    os.write(w, json.dumps({"exception": f"{type(e).__name__}: {e}",
                                            "errno": getattr(e, "errno", None)}).encode())
                except BaseException:
                    pass
                code = 3
            os._exit(code)
        os.close(w)
        self.pid = pid
        self.r = r

    def wait(self, timeout: float = 20.0) -> tuple[int, dict | None]:
        """(wait status, result or None); kills the child if it overstays `timeout`."""
        deadline = time.monotonic() + timeout
        chunks = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self.r], [], [], left)
            if not ready:
                break
            data = os.read(self.r, 65536)
            if not data:
                break
            chunks.append(data)
        os.close(self.r)
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                pytest.fail("seccomp test child did not finish in time")
            time.sleep(0.01)
        raw_out = b"".join(chunks)
        return status, (json.loads(raw_out) if raw_out else None)


def run_child(body, timeout: float = 20.0, **kw):
    return Child(body, **kw).wait(timeout)


def ok_result(status, result):
    assert result is not None and "exception" not in result, result
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return result


def killed_by_sigsys(status) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def load_then(prog, *calls):
    """Body: load `prog`, then make each raw syscall; result: [[ret, errno], ...]."""
    def body():
        sc.load(prog)
        return [list(raw(*c)) for c in calls]
    return body


# --- actions -----------------------------------------------------------------------------------
def test_errno_default_eperm_and_given_errno(tmp_path):
    prog = sc.compile_filter(profile(syscalls=[
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42},
    ]))
    buf = ctypes.create_string_buffer(4096)
    target = str(tmp_path / "denied")
    res = ok_result(*run_child(load_then(prog, (NR_MKDIR, target.encode(), 0o755),
                                         (NR_GETCWD, buf, 4096), (NR_GETPPID,))))
    assert res[0] == [-1, errno.EPERM]
    assert res[1] == [-1, 42]
    assert res[2][0] == os.getpid() and res[2][1] == 0  # everything else allowed
    assert not os.path.exists(target)


def test_allow_without_filter_mkdir_really_works(tmp_path):
    # control for the test above: the same child without the deny rule creates the directory
    prog = sc.compile_filter(profile(syscalls=[
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]))
    target = str(tmp_path / "allowed")
    res = ok_result(*run_child(load_then(prog, (NR_MKDIR, target.encode(), 0o755))))
    assert res[0] == [0, 0]
    assert os.path.isdir(target)


def test_default_errno_with_defaultErrnoRet():
    needed = ["write", "exit_group", "exit", "brk", "mmap", "munmap", "mprotect", "madvise",
              "rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "futex", "sigaltstack",
              "close", "getpid", "gettid", "clock_gettime", "getrandom"]
    prog = sc.compile_filter(profile(default="SCMP_ACT_ERRNO", defaultErrnoRet=95, syscalls=[
        {"names": needed, "action": "SCMP_ACT_ALLOW"}]))
    assert prog.default_action == "SCMP_ACT_ERRNO(95)"
    res = ok_result(*run_child(load_then(prog, (NR_GETPPID,))))
    assert res[0] == [-1, errno.EOPNOTSUPP]


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD"])
def test_kill_actions_kill_with_sigsys(action):
    prog = sc.compile_filter(profile(syscalls=[{"names": ["getppid"], "action": action}]))
    # a SIGSYS handler must not save the process: a kill cannot be caught
    def body():
        signal.signal(signal.SIGSYS, lambda *a: None)
        sc.load(prog)
        raw(NR_GETPPID)
        return {"survived": True}
    status, result = run_child(body)
    assert result is None, result
    assert killed_by_sigsys(status), status


@pytest.mark.parametrize("action,process_dies", [
    ("SCMP_ACT_KILL_THREAD", False), ("SCMP_ACT_KILL", False), ("SCMP_ACT_KILL_PROCESS", True)])
def test_kill_thread_versus_kill_process(action, process_dies):
    prog = sc.compile_filter(profile(syscalls=[{"names": ["getppid"], "action": action}]))

    def body():
        sc.load(prog)
        returned = []
        t = threading.Thread(target=lambda: returned.append(raw(NR_GETPPID)), daemon=True)
        t.start()
        deadline = time.monotonic() + 10
        while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        return {"threads": len(os.listdir("/proc/self/task")), "returned": returned}

    status, result = run_child(body)
    if process_dies:
        assert killed_by_sigsys(status) and result is None, (status, result)
    else:
        # only the calling thread was killed; the main thread lives on
        assert ok_result(status, result) == {"threads": 1, "returned": []}


def test_trap_sends_sigsys():
    prog = sc.compile_filter(profile(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_TRAP"}]))
    got = []

    def body():
        signal.signal(signal.SIGSYS, lambda signum, frame: got.append(signum))
        sc.load(prog)
        ret = raw(NR_GETPPID)
        return {"signals": got, "ret": ret[0]}

    res = ok_result(*run_child(body))
    assert res["signals"] == [signal.SIGSYS]
    assert res["ret"] != os.getpid()  # the syscall did not run

    # without a handler the default disposition of SIGSYS ends the process
    status, result = run_child(load_then(prog, (NR_GETPPID,)))
    assert killed_by_sigsys(status) and result is None


def test_trace_without_tracer_is_enosys():
    prog = sc.compile_filter(profile(syscalls=[
        {"names": ["getppid"], "action": "SCMP_ACT_TRACE", "errnoRet": 7}]))
    res = ok_result(*run_child(load_then(prog, (NR_GETPPID,))))
    assert res[0] == [-1, errno.ENOSYS]


def test_log_allows():
    prog = sc.compile_filter(profile(default="SCMP_ACT_ALLOW", syscalls=[
        {"names": ["getppid"], "action": "SCMP_ACT_LOG"}], flags=["SECCOMP_FILTER_FLAG_LOG"]))
    assert prog.flags & sc.SECCOMP_FILTER_FLAG_LOG
    res = ok_result(*run_child(load_then(prog, (NR_GETPPID,))))
    assert res[0] == [os.getpid(), 0]


def test_log_default_with_deny_rule():
    prog = sc.compile_filter(profile(default="SCMP_ACT_LOG", syscalls=[
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES}]))
    buf = ctypes.create_string_buffer(4096)
    res = ok_result(*run_child(load_then(prog, (NR_GETPPID,), (NR_GETCWD, buf, 4096))))
    assert res[0] == [-1, errno.EACCES]
    assert res[1][0] > 0


def test_spec_allow_flag_loads():
    prog = sc.compile_filter(profile(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}],
                                     flags=["SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                                            "SECCOMP_FILTER_FLAG_TSYNC"]))
    assert prog.flags == sc.SECCOMP_FILTER_FLAG_SPEC_ALLOW | sc.SECCOMP_FILTER_FLAG_TSYNC
    res = ok_result(*run_child(load_then(prog, (NR_GETPPID,))))
    assert res[0] == [-1, errno.EPERM]


def test_unknown_syscall_is_skipped_and_the_rest_applies(tmp_path):
    prog = sc.compile_filter(profile(syscalls=[
        {"names": ["no_such_syscall_pyoci", "mkdir"], "action": "SCMP_ACT_ERRNO"}]))
    assert any("no_such_syscall_pyoci" in w for w in prog.warnings)
    target = str(tmp_path / "d")
    res = ok_result(*run_child(load_then(prog, (NR_MKDIR, target.encode(), 0o755))))
    assert res[0] == [-1, errno.EPERM]


# --- argument operators ---------------------------------------------------------------------------
MARK = 99  # errno the rule returns when it matches; getpriority never fails with it on its own


@pytest.mark.parametrize("op,value,value_two,matches,misses", [
    ("SCMP_CMP_NE", 5, 0, [3, 7], [5]),
    ("SCMP_CMP_LT", 5, 0, [3, 4], [5, 7]),
    ("SCMP_CMP_LE", 5, 0, [3, 5], [6, 7]),
    ("SCMP_CMP_EQ", 5, 0, [5], [3, 7, (1 << 32) | 5]),     # 64-bit compare: high word counts
    ("SCMP_CMP_GE", 5, 0, [5, 7, 1 << 40], [3, 4]),
    ("SCMP_CMP_GT", 5, 0, [6, 1 << 40], [3, 5]),
    ("SCMP_CMP_MASKED_EQ", 0xF0, 0x50, [0x50, 0x55, 0x5F, 0x150], [0x40, 0x60, 0x05]),
])
def test_arg_operator(op, value, value_two, matches, misses):
    arg = {"index": 0, "op": op, "value": value}
    if value_two:
        arg["valueTwo"] = value_two
    prog = sc.compile_filter(profile(syscalls=[
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": MARK, "args": [arg]}]))
    calls = [(NR_GETPRIORITY, v, 0) for v in matches + misses]
    res = ok_result(*run_child(load_then(prog, *calls)))
    got = [r[1] == MARK for r in res]
    assert got == [True] * len(matches) + [False] * len(misses), (op, res)


def test_args_on_different_indexes_are_anded():
    prog = sc.compile_filter(profile(syscalls=[
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": MARK, "args": [
            {"index": 0, "op": "SCMP_CMP_EQ", "value": 0},
            {"index": 1, "op": "SCMP_CMP_EQ", "value": 12345}]}]))
    assert prog.rule_count == 1
    res = ok_result(*run_child(load_then(prog, (NR_GETPRIORITY, 0, 12345), (NR_GETPRIORITY, 0, 1),
                                         (NR_GETPRIORITY, 1, 12345))))
    assert [r[1] == MARK for r in res] == [True, False, False]


def test_args_on_the_same_index_are_ored():
    prog = sc.compile_filter(profile(syscalls=[
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": MARK, "args": [
            {"index": 0, "op": "SCMP_CMP_EQ", "value": 3},
            {"index": 0, "op": "SCMP_CMP_EQ", "value": 7}]}]))
    assert prog.rule_count == 2
    res = ok_result(*run_child(load_then(prog, *[(NR_GETPRIORITY, v, 0) for v in (3, 7, 5)])))
    assert [r[1] == MARK for r in res] == [True, True, False]


def test_masked_eq_on_personality():
    # deny any persona with READ_IMPLIES_EXEC set, whatever the other bits
    prog = sc.compile_filter(profile(syscalls=[
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": MARK, "args": [
            {"index": 0, "op": "SCMP_CMP_MASKED_EQ", "value": 0x0400000, "valueTwo": 0x0400000}]}]))
    res = ok_result(*run_child(load_then(prog, (NR_PERSONALITY, 0), (NR_PERSONALITY, 0x0400000),
                                         (NR_PERSONALITY, 0x0400008), (NR_PERSONALITY, 0x8))))
    assert res[0][1] == 0 and res[3][1] == 0
    assert res[1] == [-1, MARK] and res[2] == [-1, MARK]


# --- load errors ----------------------------------------------------------------------------------
def test_load_without_nnp_and_cap_sys_admin_is_eacces():
    prog = sc.compile_filter(profile(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]))

    def body():
        eff, perm, inh = libc.capget()
        libc.capset(eff & ~(1 << CAP_SYS_ADMIN), perm, inh)
        out = {}
        try:
            sc.load(prog)
            out["first"] = "loaded"
        except SyscallError as e:
            out["first"] = [e.errno, e.stage, str(e)]
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1)  # with no_new_privs the same load works
        sc.load(prog)
        out["after_nnp"] = list(raw(NR_GETPPID))
        return out

    res = ok_result(*run_child(body))
    eno, stage, msg = res["first"]
    assert eno == errno.EACCES and stage == "seccomp"
    assert "no_new_privs" in msg and "CAP_SYS_ADMIN" in msg
    assert res["after_nnp"] == [-1, errno.EPERM]


def test_unsupported_flag_is_named():
    good = sc.compile_filter(profile(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]))
    bogus = sc.SeccompProgram(bpf=good.bpf, flags=good.flags | (1 << 20) | sc.SECCOMP_FILTER_FLAG_LOG,
                              listener_path=None, listener_metadata="", default_action="x",
                              rule_count=1)

    def body():
        try:
            sc.load(bogus)
        except SyscallError as e:
            return [e.errno, str(e)]
        return "loaded"

    eno, msg = ok_result(*run_child(body))
    assert eno == errno.EINVAL
    assert "does not support 0x100000" in msg
    assert "SECCOMP_FILTER_FLAG_LOG" not in msg.split("does not support")[1]  # LOG is supported


def test_load_does_not_need_libseccomp():
    # the child never imports the binding: load() works with it made unimportable
    prog = sc.compile_filter(profile(syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]))

    def body():
        import sys
        for m in ("pyseccomp", "seccomp"):
            sys.modules[m] = None  # any import now raises ImportError
        sc.load(prog)
        return [list(raw(NR_GETPPID))]

    assert ok_result(*run_child(body)) == [[-1, errno.EPERM]]


# --- SCMP_ACT_NOTIFY with a listener ------------------------------------------------------------
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)     (80 bytes)
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp) (24 bytes)
NOTIF = struct.Struct("=QII" + "iIQ6Q")   # id, pid, flags, data{nr, arch, ip, args[6]}
NOTIF_RESP = struct.Struct("=QqiI")       # id, val, error, flags


class Listener(threading.Thread):
    """A seccomp agent: accepts one connection, takes the fd, answers one notification."""

    def __init__(self, path: str, answer_errno: int):
        super().__init__(daemon=True)
        self.path = path
        self.answer_errno = answer_errno
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        self.srv.settimeout(20)
        self.payload = None
        self.nfds = None
        self.notif = None
        self.error = None

    def run(self):
        import fcntl
        try:
            conn, _ = self.srv.accept()
            with conn:
                conn.settimeout(20)
                msg, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
                rest = b""
                while True:  # the runtime closes the connection after one state
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
            self.payload = json.loads(msg + rest)
            self.nfds = len(fds)
            nfd = fds[0]
            for extra in fds[1:]:
                os.close(extra)
            try:
                ready, _, _ = select.select([nfd], [], [], 20)
                assert ready, "no seccomp notification arrived"
                buf = bytearray(NOTIF.size)
                fcntl.ioctl(nfd, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
                self.notif = NOTIF.unpack(buf)
                resp = bytearray(NOTIF_RESP.pack(self.notif[0], 0, -self.answer_errno, 0))
                fcntl.ioctl(nfd, SECCOMP_IOCTL_NOTIF_SEND, resp, True)
            finally:
                os.close(nfd)
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.srv.close()


@pytest.mark.parametrize("flags", [[], ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]])
def test_notify_answered_by_listener(tmp_path, flags):
    sock_path = str(tmp_path / "agent.sock")
    prog = sc.compile_filter(profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
                                     listenerPath=sock_path, listenerMetadata="meta-42",
                                     flags=flags))
    assert prog.flags & sc.SECCOMP_FILTER_FLAG_NEW_LISTENER
    assert bool(prog.flags & sc.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) == bool(flags)
    assert prog.listener_path == sock_path and prog.listener_metadata == "meta-42"
    listener = Listener(sock_path, answer_errno=errno.EXDEV)
    listener.start()
    target = str(tmp_path / "notified")
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def body():
        parent_sock.close()
        fd = sc.load(prog)
        assert isinstance(fd, int) and fd >= 0
        socket.send_fds(child_sock, [b"F"], [fd])
        os.close(fd)
        child_sock.settimeout(20)
        assert child_sock.recv(1) == b"G"
        return {"mkdir": list(raw(NR_MKDIR, target.encode(), 0o755)), "ppid": list(raw(NR_GETPPID))}

    child = Child(body)
    child_sock.close()
    try:
        parent_sock.settimeout(20)
        _msg, fds, _f, _a = socket.recv_fds(parent_sock, 16, 1)
        assert len(fds) == 1
        state = {"ociVersion": "1.3.0", "id": "seccomp-test", "status": "creating",
                 "pid": child.pid, "bundle": str(tmp_path), "annotations": {"a": "b"}}
        try:
            sc.send_to_listener(prog.listener_path, fds[0], state, prog.listener_metadata)
        finally:
            os.close(fds[0])
        parent_sock.sendall(b"G")
    finally:
        parent_sock.close()
        status, result = child.wait()
        listener.join(25)
    assert listener.error is None, repr(listener.error)
    # the container process state (spec#139)
    p = listener.payload
    assert listener.nfds == 1
    assert p["ociVersion"] == "1.3.0" and p["fds"] == ["seccompFd"]
    assert p["pid"] == child.pid and p["metadata"] == "meta-42"
    assert p["state"]["id"] == "seccomp-test" and p["state"]["status"] == "creating"
    # the notification the agent saw, and the answer the child got
    nid, npid, _nflags, nr, _arch, _ip, *args = listener.notif
    assert nr == NR_MKDIR and npid == child.pid
    res = ok_result(status, result)
    assert res["mkdir"] == [-1, errno.EXDEV]
    assert res["ppid"][0] == os.getpid()
    assert not os.path.exists(target)


def test_send_to_listener_fails_clearly_without_listener(tmp_path):
    path = str(tmp_path / "nobody.sock")
    r, w = os.pipe()
    try:
        with pytest.raises(SyscallError) as ei:
            sc.send_to_listener(path, r, {"pid": 1, "status": "creating"}, "")
    finally:
        os.close(r)
        os.close(w)
    assert ei.value.stage == "seccomp" and ei.value.call == "connect"
    assert ei.value.errno == errno.ENOENT and path in str(ei.value)


# --- the default profiles of podman and containerd -----------------------------------------------
def _client_profiles() -> dict[str, dict]:
    """One representative of each distinct linux.seccomp in the client traces."""
    out: dict[str, dict] = {}
    seen = set()
    for f in sorted(glob.glob(os.path.join(TRACE_CONFIG_DIR, "*-create-config.json"))):
        with open(f) as fh:
            cfg = json.load(fh)
        s = (cfg.get("linux") or {}).get("seccomp")
        if not s:
            continue
        key = json.dumps(s, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        client = "podman" if any(k.startswith("io.podman") for k in cfg.get("annotations") or {}) \
            else "containerd"
        out[f"{client}-{os.path.basename(f).split('-')[0]}"] = s
    return out


CLIENT_PROFILES = _client_profiles() if os.path.isdir(TRACE_CONFIG_DIR) else {}


def test_both_clients_have_profiles():
    assert any(k.startswith("podman") for k in CLIENT_PROFILES)
    assert any(k.startswith("containerd") for k in CLIENT_PROFILES)


@pytest.mark.parametrize("name", sorted(CLIENT_PROFILES))
def test_client_profile_runs_busybox(name, tmp_path):
    prof = CLIENT_PROFILES[name]
    prog = sc.compile_filter(prof)
    assert prog.rule_count > 300
    for argv, check in ((["busybox", "true"], None),
                        (["busybox", "ls", "/"], lambda out: "proc" in out.split() and "usr" in out.split()),
                        (["busybox", "sh", "-c", "mkdir " + str(tmp_path / "x") + " && echo made"],
                         lambda out: out.strip() == "made")):
        r, w = os.pipe()

        def body(argv=argv):
            sc.load(prog)
            os.execv("/bin/busybox", argv)

        child = Child(body, stdout_fd=w)
        os.close(w)
        status, result = child.wait()
        with os.fdopen(r) as f:
            out = f.read()
        assert result is None, result  # exec happened (no report from Python)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (argv, status, out)
        if check:
            assert check(out), (argv, out)


@pytest.mark.parametrize("name", sorted(CLIENT_PROFILES))
def test_client_profile_denies_with_its_errno(name):
    prof = CLIENT_PROFILES[name]
    # personality is allowed only for a few exact values in both profiles
    allowed = {a["value"] for r in prof["syscalls"] if "personality" in r["names"]
               for a in r.get("args") or []}
    assert 0xFFFFFFFF in allowed and 0x0400000 not in allowed
    want = prof.get("defaultErrnoRet") or errno.EPERM
    prog = sc.compile_filter(prof)
    res = ok_result(*run_child(load_then(prog, (NR_PERSONALITY, 0xFFFFFFFF),
                                         (NR_PERSONALITY, 0x0400000))))
    assert res[0][1] == 0
    assert res[1] == [-1, want]


# --- end to end through the CLI ------------------------------------------------------------------
DENY_MKDIR = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}


@pytest.mark.parametrize("nnp", [True, False])
def test_cli_container_gets_eperm_from_mkdir(runtime, bundle, nnp):
    bundle.set_args("/bin/sh", "-c", "mkdir /tmp/denied; echo rc=$?; mkdir 2>/dev/null; "
                    "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")
    bundle.linux["seccomp"] = DENY_MKDIR
    bundle.process["noNewPrivileges"] = nnp
    bundle.save()
    p = runtime.run("--debug", "run", "--bundle", str(bundle.path), "sc-eperm", timeout=60)
    assert p.returncode == 0, p.stderr
    assert "rc=1" in p.stdout
    assert "Operation not permitted" in p.stderr
    assert "Seccomp:\t2" in p.stdout  # filter mode
    assert ("NoNewPrivs:\t1" in p.stdout) == nnp
    assert not (bundle.rootfs / "tmp" / "denied").exists()
    # the --debug log shows the seccomp stage
    assert "seccomp filter: 2 rules, default SCMP_ACT_ALLOW" in p.stderr


def test_cli_container_without_seccomp_can_mkdir(runtime, bundle):
    # control for the test above
    bundle.set_args("/bin/sh", "-c", "mkdir /tmp/made; echo rc=$?")
    p = runtime.run("run", "--bundle", str(bundle.path), "sc-control", timeout=60)
    assert p.returncode == 0, p.stderr
    assert "rc=0" in p.stdout and (bundle.rootfs / "tmp" / "made").is_dir()


@pytest.mark.parametrize("name", sorted(CLIENT_PROFILES))
def test_cli_container_under_client_profile(runtime, bundle, name):
    prof = CLIENT_PROFILES[name]
    # unshare(CLONE_NEWUSER) needs no capability: only the profile decides (podman allows it,
    # containerd's default profile does not)
    unshare_allowed = any("unshare" in r["names"] and r["action"] == "SCMP_ACT_ALLOW" and not r.get("args")
                          for r in prof["syscalls"])
    bundle.set_args("/bin/sh", "-c", "ls / && echo hi > /tmp/f && cat /tmp/f; unshare -U true; "
                    "echo unshare=$?; grep '^Seccomp:' /proc/self/status")
    bundle.linux["seccomp"] = prof
    bundle.save()
    p = runtime.run("run", "--bundle", str(bundle.path), "sc-client", timeout=60)
    assert p.returncode == 0, p.stderr
    assert "proc" in p.stdout.split() and "hi" in p.stdout.split()
    assert "Seccomp:\t2" in p.stdout
    if unshare_allowed:
        assert "unshare=0" in p.stdout, (p.stdout, p.stderr)
    else:
        assert "unshare=1" in p.stdout and "Operation not permitted" in p.stderr, (p.stdout, p.stderr)


def test_cli_unshare_without_seccomp_works(runtime, bundle):
    # control for the containerd case above: the denial comes from the profile, not capabilities
    bundle.set_args("/bin/sh", "-c", "unshare -U true; echo unshare=$?; grep '^Seccomp:' /proc/self/status")
    p = runtime.run("run", "--bundle", str(bundle.path), "sc-nofilter", timeout=60)
    assert p.returncode == 0, p.stderr
    assert "unshare=0" in p.stdout and "Seccomp:\t0" in p.stdout, (p.stdout, p.stderr)


@pytest.mark.parametrize("nnp", [True, False])
def test_cli_notify_answered_by_listener(runtime, bundle, tmp_path, nnp):
    sock_path = str(tmp_path / "agent.sock")
    listener = Listener(sock_path, answer_errno=errno.EXDEV)
    listener.start()
    bundle.set_args("/bin/mkdir", "/tmp/notified")  # the init itself makes the notified call
    bundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": sock_path,
                               "listenerMetadata": "e2e", "syscalls": [
                                   {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
    bundle.process["noNewPrivileges"] = nnp
    bundle.save()
    try:
        p = runtime.run("run", "--bundle", str(bundle.path), "sc-notify", timeout=60)
    finally:
        listener.join(30)
    assert listener.error is None, repr(listener.error)
    assert p.returncode == 1, (p.stdout, p.stderr)  # mkdir's exit code
    assert os.strerror(errno.EXDEV) in p.stderr, (p.stdout, p.stderr)
    assert not (bundle.rootfs / "tmp" / "notified").exists()
    payload = listener.payload
    assert payload["fds"] == ["seccompFd"] and payload["metadata"] == "e2e"
    assert payload["state"]["id"] == "sc-notify" and payload["state"]["status"] == "creating"
    assert payload["pid"] == payload["state"]["pid"] == listener.notif[1]  # the init's pid
    assert listener.notif[3] in (NR_MKDIR, NR_MKDIRAT)


# every action and operator inside a real container
@pytest.mark.parametrize("action,errno_ret,expect_rc,expect_err,made", [
    ("SCMP_ACT_ERRNO", 28, 1, os.strerror(errno.ENOSPC), False),
    ("SCMP_ACT_TRACE", None, 1, os.strerror(errno.ENOSYS), False),  # no tracer: ENOSYS
    ("SCMP_ACT_LOG", None, 0, "", True),
    ("SCMP_ACT_KILL", None, 128 + signal.SIGSYS, "", False),
    ("SCMP_ACT_KILL_PROCESS", None, 128 + signal.SIGSYS, "", False),
    ("SCMP_ACT_TRAP", None, 128 + signal.SIGSYS, "", False),
])
def test_cli_container_action(runtime, bundle, action, errno_ret, expect_rc, expect_err, made):
    rule = {"names": ["mkdir", "mkdirat"], "action": action}
    if errno_ret is not None:
        rule["errnoRet"] = errno_ret
    bundle.set_args("/bin/mkdir", "/tmp/target")
    bundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}
    # no core file from a SIGSYS death (core_pattern is relative here)
    bundle.process["rlimits"] = [r for r in bundle.process.get("rlimits") or []
                                 if r["type"] != "RLIMIT_CORE"]
    bundle.process["rlimits"].append({"type": "RLIMIT_CORE", "soft": 0, "hard": 0})
    bundle.save()
    p = runtime.run("run", "--bundle", str(bundle.path), "sc-action", timeout=60)
    assert p.returncode == expect_rc, (p.returncode, p.stdout, p.stderr)
    assert expect_err in p.stderr
    assert (bundle.rootfs / "tmp" / "target").is_dir() == made
    assert not (bundle.rootfs / "core").exists()


# personality() values the busybox applets pass: linux64 -> 0, linux32 -> 8, -R adds 0x40000
PERSONAS = {"linux64 true": 0x0, "linux32 true": 0x8, "linux64 -R true": 0x40000,
            "linux32 -R true": 0x40008}


@pytest.mark.parametrize("op,value,value_two", [
    ("SCMP_CMP_NE", 8, 0), ("SCMP_CMP_LT", 8, 0), ("SCMP_CMP_LE", 8, 0), ("SCMP_CMP_EQ", 8, 0),
    ("SCMP_CMP_GE", 8, 0), ("SCMP_CMP_GT", 8, 0), ("SCMP_CMP_MASKED_EQ", 0x40000, 0x40000)])
def test_cli_container_operator(runtime, bundle, op, value, value_two):
    cmp = {"SCMP_CMP_NE": lambda a: a != value, "SCMP_CMP_LT": lambda a: a < value,
           "SCMP_CMP_LE": lambda a: a <= value, "SCMP_CMP_EQ": lambda a: a == value,
           "SCMP_CMP_GE": lambda a: a >= value, "SCMP_CMP_GT": lambda a: a > value,
           "SCMP_CMP_MASKED_EQ": lambda a: (a & value) == value_two}[op]
    arg = {"index": 0, "op": op, "value": value}
    if value_two:
        arg["valueTwo"] = value_two
    script = "; ".join(f"{cmd} && echo '{cmd}'=ok || echo '{cmd}'=denied" for cmd in PERSONAS)
    bundle.set_args("/bin/sh", "-c", script)
    bundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EADDRNOTAVAIL,
         "args": [arg]}]}
    bundle.save()
    p = runtime.run("run", "--bundle", str(bundle.path), "sc-op", timeout=60)
    assert p.returncode == 0, p.stderr
    for cmd, persona in PERSONAS.items():
        want = "denied" if cmp(persona) else "ok"
        assert f"{cmd}={want}" in p.stdout, (op, cmd, p.stdout, p.stderr)
    if any(cmp(v) for v in PERSONAS.values()):
        assert os.strerror(errno.EADDRNOTAVAIL) in p.stderr
