"""seccomp compile side and listener protocol: no root needed (nothing is loaded here)."""
from __future__ import annotations

import errno
import glob
import json
import os
import pickle
import socket
import subprocess
import sys
import threading

import pytest

from pyoci.errors import ConfigError, SyscallError
from pyoci import seccomp as sc

TRACE_CONFIG_DIR = "/work/shared/client-traces/trace-configs"


def profile(default="SCMP_ACT_ALLOW", syscalls=(), **kw) -> dict:
    p = {"defaultAction": default, "syscalls": list(syscalls)}
    p.update(kw)
    return p


def problems(seccomp: dict) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        sc.compile_filter(seccomp)
    return ei.value.problems


# --- import cost ---------------------------------------------------------------------------------
def test_plain_import_does_not_load_the_binding():
    code = ("import sys, pyoci.seccomp; "
            "print(sorted(m for m in ('pyseccomp', 'seccomp', 'json', 'socket') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.replace("'", '"'))
    assert "pyseccomp" not in loaded and "seccomp" not in loaded


def test_compile_imports_the_binding_lazily():
    code = ("import sys, pyoci.seccomp as s; "
            "s.compile_filter({'defaultAction': 'SCMP_ACT_ALLOW', 'syscalls': "
            "[{'names': ['mkdir'], 'action': 'SCMP_ACT_ERRNO'}]}); "
            "print('pyseccomp' in sys.modules or 'seccomp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


# --- compile results -----------------------------------------------------------------------------
def test_basic_program_shape():
    prog = sc.compile_filter(profile(syscalls=[
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]))
    assert prog.rule_count == 3
    assert prog.default_action == "SCMP_ACT_ALLOW"
    assert prog.flags == 0 and prog.listener_path is None and prog.warnings == ()
    assert prog.arch_count == 1
    assert len(prog.bpf) % 8 == 0 and 0 < prog.instructions <= sc.BPF_MAXINSNS
    assert prog.uses_notify is False
    # deterministic and picklable (the plan is frozen data)
    again = sc.compile_filter(profile(syscalls=[
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}]))
    assert again.bpf == prog.bpf
    assert pickle.loads(pickle.dumps(prog)) == prog


def test_errno_changes_the_program():
    a = sc.compile_filter(profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]))
    b = sc.compile_filter(profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                                             "errnoRet": errno.EPERM}]))
    c = sc.compile_filter(profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                                             "errnoRet": 42}]))
    assert a.bpf == b.bpf  # absent errnoRet means EPERM
    assert a.bpf != c.bpf


def test_summary_line():
    prog = sc.compile_filter(profile(default="SCMP_ACT_ERRNO", defaultErrnoRet=38,
                                     architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                                     flags=["SECCOMP_FILTER_FLAG_LOG"],
                                     syscalls=[{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]))
    s = prog.summary()
    assert "\n" not in s
    assert "2 rules" in s and "default SCMP_ACT_ERRNO(38)" in s
    assert "2 arches" in s and "SECCOMP_FILTER_FLAG_LOG" in s


def test_default_errno_action_names_eperm_when_absent():
    prog = sc.compile_filter(profile(default="SCMP_ACT_ERRNO",
                                     syscalls=[{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]))
    assert prog.default_action == f"SCMP_ACT_ERRNO({errno.EPERM})"


def test_unknown_syscall_warns_and_is_skipped():
    prog = sc.compile_filter(profile(syscalls=[
        {"names": ["mkdir", "not_a_syscall_xyz", "also_not_one"], "action": "SCMP_ACT_ERRNO"}]))
    assert prog.rule_count == 1
    assert len(prog.warnings) == 2
    assert "linux.seccomp.syscalls[0].names" in prog.warnings[0]
    assert "'not_a_syscall_xyz'" in prog.warnings[0]
    assert "2 warnings" in prog.summary()


def test_rule_equal_to_default_is_skipped():
    prog = sc.compile_filter(profile(default="SCMP_ACT_ERRNO", syscalls=[
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},                      # same as default
        {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},        # EPERM: same too
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},      # differs
        {"names": ["read"], "action": "SCMP_ACT_ALLOW"}]))
    assert prog.rule_count == 2
    assert prog.warnings == ()


def test_same_index_args_split_into_rules():
    prog = sc.compile_filter(profile(syscalls=[
        {"names": ["personality", "getpriority"], "action": "SCMP_ACT_ERRNO", "args": [
            {"index": 0, "op": "SCMP_CMP_EQ", "value": 1},
            {"index": 0, "op": "SCMP_CMP_EQ", "value": 2},
            {"index": 0, "op": "SCMP_CMP_EQ", "value": 3}]}]))
    assert prog.rule_count == 6


@pytest.mark.parametrize("op", list(sc.OPERATORS))
def test_every_operator_compiles(op):
    prog = sc.compile_filter(profile(syscalls=[
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "args": [
            {"index": 1, "op": op, "value": 0xF0, "valueTwo": 0x10}]}]))
    assert prog.rule_count == 1


@pytest.mark.parametrize("action", list(sc.ACTIONS))
def test_every_action_compiles(action, tmp_path):
    kw = {"listenerPath": str(tmp_path / "l.sock")} if action == "SCMP_ACT_NOTIFY" else {}
    default = "SCMP_ACT_ERRNO" if action == "SCMP_ACT_ALLOW" else "SCMP_ACT_ALLOW"
    prog = sc.compile_filter(profile(default=default, syscalls=[
        {"names": ["getppid"], "action": action}], **kw))
    assert prog.rule_count == 1


@pytest.mark.parametrize("action", [a for a in sc.ACTIONS if a != "SCMP_ACT_NOTIFY"])
def test_every_action_as_default(action):
    other = "SCMP_ACT_ERRNO" if action == "SCMP_ACT_ALLOW" else "SCMP_ACT_ALLOW"
    prog = sc.compile_filter(profile(default=action, syscalls=[{"names": ["getppid"], "action": other}]))
    assert prog.default_action.startswith(action)


def test_flags():
    prog = sc.compile_filter(profile(flags=["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]))
    assert prog.flags == sc.SECCOMP_FILTER_FLAG_LOG | sc.SECCOMP_FILTER_FLAG_SPEC_ALLOW


def test_notify_sets_new_listener_and_keeps_listener(tmp_path):
    path = str(tmp_path / "agent.sock")
    prog = sc.compile_filter(profile(
        syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}], listenerPath=path,
        listenerMetadata="hello", flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
                                         "SECCOMP_FILTER_FLAG_TSYNC"]))
    assert prog.uses_notify
    assert prog.flags == (sc.SECCOMP_FILTER_FLAG_NEW_LISTENER | sc.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
                          | sc.SECCOMP_FILTER_FLAG_TSYNC | sc.SECCOMP_FILTER_FLAG_TSYNC_ESRCH)
    assert prog.listener_path == path and prog.listener_metadata == "hello"
    assert path in prog.summary()


def test_listener_ignored_without_notify(tmp_path):
    prog = sc.compile_filter(profile(
        syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}],
        listenerPath=str(tmp_path / "agent.sock"), listenerMetadata="x",
        flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]))
    assert prog.listener_path is None
    assert prog.flags == 0
    assert any("listenerPath" in w for w in prog.warnings)
    assert any("WAIT_KILLABLE_RECV" in w for w in prog.warnings)


def test_metadata_without_listener_path_warns():
    prog = sc.compile_filter(profile(listenerMetadata="m"))
    assert prog.warnings == ("linux.seccomp.listenerMetadata: set without listenerPath, ignored",)


def test_architectures():
    rules = [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
    prog = sc.compile_filter(profile(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                                     syscalls=rules))
    assert prog.arch_count == 3  # native x86_64 is not counted twice
    one = sc.compile_filter(profile(syscalls=rules))
    # the program compares seccomp_data.arch with each arch's AUDIT_ARCH token
    ks = lambda p: {int.from_bytes(p.bpf[i + 4:i + 8], "little") for i in range(0, len(p.bpf), 8)}
    assert sc.ARCHES["SCMP_ARCH_X86"] in ks(prog)
    assert sc.ARCHES["SCMP_ARCH_X86"] not in ks(one)
    assert len(prog.bpf) > len(one.bpf)


def test_arch_unknown_to_libseccomp_warns_or_counts():
    # SH / M68K are spec arches that older libseccomp lacks: either added or skipped with a warning
    prog = sc.compile_filter(profile(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_SH", "SCMP_ARCH_M68K"]))
    arch_warnings = [w for w in prog.warnings if "architectures" in w]
    assert prog.arch_count + len(arch_warnings) == 3
    for w in arch_warnings:
        assert "not supported by this libseccomp" in w


# --- config errors -------------------------------------------------------------------------------
def test_errno_ret_on_allow_is_an_error():
    p = problems(profile(default="SCMP_ACT_ERRNO",
                         syscalls=[{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}]))
    assert p == ["linux.seccomp.syscalls[0].errnoRet: SCMP_ACT_ALLOW takes no errno "
                 "(only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)"]


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                                    "SCMP_ACT_TRAP", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG"])
def test_default_errno_ret_on_action_without_errno(action):
    p = problems(profile(default=action, defaultErrnoRet=5))
    assert len(p) == 1 and p[0].startswith("linux.seccomp.defaultErrnoRet:") and action in p[0]


def test_errno_ret_allowed_on_trace():
    prog = sc.compile_filter(profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_TRACE",
                                                "errnoRet": 3}]))
    assert prog.rule_count == 1


def test_many_problems_reported_together():
    p = problems({"defaultAction": "SCMP_ACT_NOPE", "flags": ["SECCOMP_FILTER_FLAG_NOPE"],
                  "architectures": ["SCMP_ARCH_Z80"], "syscalls": [
                      {"names": [], "action": "SCMP_ACT_ERRNO"},
                      {"names": ["read"], "action": "SCMP_ACT_FOO"},
                      {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": -1},
                      {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [
                          {"index": 6, "op": "SCMP_CMP_EQ", "value": 1},
                          {"index": 0, "op": "SCMP_CMP_ABOUT", "value": 1},
                          {"index": 0, "op": "SCMP_CMP_EQ", "value": -1},
                          {"index": 0, "op": "SCMP_CMP_EQ"},
                          {"index": 0, "op": "SCMP_CMP_MASKED_EQ", "value": 1, "valueTwo": 1 << 64}]},
                      {"names": ["read"]}]})
    text = "\n".join(p)
    for expect in ("linux.seccomp.defaultAction: unknown action 'SCMP_ACT_NOPE'",
                   "linux.seccomp.flags[0]: unknown flag",
                   "linux.seccomp.architectures[0]: unknown architecture 'SCMP_ARCH_Z80'",
                   "linux.seccomp.syscalls[0].names: must be a non-empty array",
                   "linux.seccomp.syscalls[1].action: unknown action 'SCMP_ACT_FOO'",
                   "linux.seccomp.syscalls[2].errnoRet: must be an integer 0..65535",
                   "linux.seccomp.syscalls[3].args[0].index: must be an argument index 0..5",
                   "linux.seccomp.syscalls[3].args[1].op: unknown operator 'SCMP_CMP_ABOUT'",
                   "linux.seccomp.syscalls[3].args[2].value: required, an unsigned 64-bit integer",
                   "linux.seccomp.syscalls[3].args[3].value: required",
                   "linux.seccomp.syscalls[3].args[4].valueTwo: must be an unsigned 64-bit integer",
                   "linux.seccomp.syscalls[4].action: required"):
        assert expect in text, (expect, text)
    assert len(p) == 12


def test_missing_default_action():
    assert problems({"syscalls": []}) == ["linux.seccomp.defaultAction: required"]


def test_notify_rules(tmp_path):
    assert any("cannot be the default action" in x
               for x in problems(profile(default="SCMP_ACT_NOTIFY", listenerPath=str(tmp_path / "s"))))
    p = problems(profile(syscalls=[{"names": ["write", "mkdir"], "action": "SCMP_ACT_NOTIFY"}],
                         listenerPath=str(tmp_path / "s")))
    assert p == ["linux.seccomp.syscalls[0]: SCMP_ACT_NOTIFY cannot be used for write (the runtime "
                 "needs it to hand the notify fd to the listener)"]
    p = problems(profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]))
    assert p[0].startswith("linux.seccomp.listenerPath: required when SCMP_ACT_NOTIFY is used")
    p = problems(profile(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}],
                         listenerPath="relative.sock"))
    assert p[0].startswith("linux.seccomp.listenerPath: must be an absolute path")


def test_not_an_object():
    with pytest.raises(ConfigError, match="linux.seccomp: must be an object"):
        sc.compile_filter(["SCMP_ACT_ALLOW"])


# --- client profiles ------------------------------------------------------------------------------
def _client_profiles():
    out = {}
    for f in sorted(glob.glob(os.path.join(TRACE_CONFIG_DIR, "*-create-config.json"))):
        with open(f) as fh:
            s = (json.load(fh).get("linux") or {}).get("seccomp")
        if s:
            out.setdefault(json.dumps(s, sort_keys=True), (os.path.basename(f), s))
    return list(out.values())


@pytest.mark.skipif(not os.path.isdir(TRACE_CONFIG_DIR), reason="no client traces")
def test_client_profiles_compile_cleanly():
    profiles = _client_profiles()
    assert len(profiles) >= 2
    for fname, s in profiles:
        prog = sc.compile_filter(s)
        names = sum(len(r["names"]) for r in s["syscalls"] if r["action"] != s["defaultAction"])
        assert prog.warnings == (), (fname, prog.warnings)
        assert prog.arch_count == 3, fname
        assert prog.rule_count >= names > 300, (fname, prog.rule_count, names)
        assert prog.instructions <= sc.BPF_MAXINSNS


# --- listener protocol ---------------------------------------------------------------------------
def _listen(path):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(20)
    return srv


def _receive(srv, result):
    conn, _ = srv.accept()
    with conn:
        conn.settimeout(20)
        msg, fds, _f, _a = socket.recv_fds(conn, 1 << 16, 4)
        data = msg
        while True:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    result["payload"] = json.loads(data)
    result["fds"] = fds


@pytest.mark.parametrize("big", [False, True])
def test_send_to_listener_sends_state_and_fd(tmp_path, big):
    path = str(tmp_path / "agent.sock")
    srv = _listen(path)
    result: dict = {}
    t = threading.Thread(target=_receive, args=(srv, result), daemon=True)
    t.start()
    probe = tmp_path / "probe"
    probe.write_text("x")
    fd = os.open(probe, os.O_RDONLY)
    state = {"ociVersion": "1.3.0", "id": "c1", "status": "creating", "pid": 4242,
             "bundle": "/b", "annotations": {"k": "v" * (4 << 20 if big else 1)}}
    try:
        sc.send_to_listener(path, fd, state, "meta")
        t.join(20)
        # our fd is still ours after sending
        os.fstat(fd)
    finally:
        os.close(fd)
        srv.close()
    p = result["payload"]
    assert set(p) == {"ociVersion", "fds", "pid", "metadata", "state"}
    assert p["ociVersion"] == "1.3.0" and p["fds"] == ["seccompFd"]
    assert p["pid"] == 4242 and p["metadata"] == "meta" and p["state"] == state
    assert len(result["fds"]) == 1  # exactly one fd, in the first message only
    got = result["fds"][0]
    try:
        st, want = os.fstat(got), os.stat(probe)
        assert (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino)
    finally:
        os.close(got)


def test_send_to_listener_errors(tmp_path):
    r, w = os.pipe()
    try:
        with pytest.raises(SyscallError) as ei:
            sc.send_to_listener(str(tmp_path / "missing.sock"), r, {"pid": 1}, "")
        assert ei.value.errno == errno.ENOENT and ei.value.stage == "seccomp"
        assert "seccomp: connect" in str(ei.value) and "missing.sock" in str(ei.value)
        # a path that is not a socket
        (tmp_path / "file").write_text("")
        with pytest.raises(SyscallError) as ei:
            sc.send_to_listener(str(tmp_path / "file"), r, {"pid": 1}, "")
        assert ei.value.errno == errno.ECONNREFUSED
    finally:
        os.close(r)
        os.close(w)


def test_container_process_state_shape():
    st = sc.container_process_state({"pid": 7, "status": "creating"}, "")
    assert st == {"ociVersion": "1.3.0", "fds": ["seccompFd"], "pid": 7, "metadata": "",
                  "state": {"pid": 7, "status": "creating"}}


# --- the libseccomp project's own binding (python3-seccomp) gives the same program -------------
SYSTEM_PY = "/usr/bin/python3"
# where python3-seccomp's seccomp*.so lives when it is not installed system-wide
# (e.g. `apt-get download python3-seccomp && dpkg -x ...`)
OFFICIAL_PATH = os.environ.get("PYOCI_TEST_SECCOMP_BINDING_PATH", "")


def _official_binding_available() -> bool:
    if not os.path.exists(SYSTEM_PY):
        return False
    env = dict(os.environ, PYTHONPATH=OFFICIAL_PATH)
    r = subprocess.run([SYSTEM_PY, "-c", "import seccomp"], env=env, capture_output=True, timeout=60)
    return r.returncode == 0


@pytest.mark.skipif(not _official_binding_available(),
                    reason="python3-seccomp not importable by /usr/bin/python3")
def test_official_binding_gives_identical_bpf(tmp_path):
    runtime_dir = os.path.dirname(os.path.dirname(os.path.abspath(sc.__file__)))
    cases = [profile(default="SCMP_ACT_KILL_PROCESS",
                     architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                     syscalls=[{"names": ["mkdir", "nosuch_call"], "action": "SCMP_ACT_ERRNO",
                                "errnoRet": 9},
                               {"names": ["getpriority"], "action": "SCMP_ACT_TRAP", "args": [
                                   {"index": 0, "op": "SCMP_CMP_MASKED_EQ", "value": 0xF0,
                                    "valueTwo": 0x50},
                                   {"index": 1, "op": "SCMP_CMP_GT", "value": (1 << 64) - 2}]},
                               {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}])]
    cases += [s for _f, s in _client_profiles()]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    code = ("import json, sys, pyoci.seccomp as s; assert s._binding().__name__ == 'seccomp'; "
            f"cases = json.load(open({str(tmp_path / 'cases.json')!r})); "
            "print(json.dumps([[s.compile_filter(c).bpf.hex(), s.compile_filter(c).rule_count] "
            "for c in cases]))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (OFFICIAL_PATH, runtime_dir) if p))
    r = subprocess.run([SYSTEM_PY, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    theirs = json.loads(r.stdout)
    ours = [[sc.compile_filter(c).bpf.hex(), sc.compile_filter(c).rule_count] for c in cases]
    assert theirs == ours
