"""containerd 1.6 lane: ctr + the runc v2 shim drive the runtime under test (issue 8).

`ctr run --runc-binary <runtime>`; the shim reuses that binary for exec, kill, pause, delete.
One test per scenario. Run against runc with PYOCI_CLIENT_RUNTIME=/usr/sbin/runc.
"""
from __future__ import annotations

import os
import secrets
import time

import pytest

from clients.lanes import REPO, doc_code_blocks

pytestmark = [pytest.mark.clients, pytest.mark.root]

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__.removeprefix("s_").replace("_", "-")] = fn
    return fn


def uniq(tag: str) -> str:
    return f"cl-{tag}-{secrets.token_hex(3)}"


# -- ctr run ---------------------------------------------------------------------------------
@scenario
def s_run_exit_0(c, tmp):
    c.lane.expect(c.run(uniq("t0"), "true"), rc=0)


@scenario
def s_run_exit_3(c, tmp):
    c.lane.expect(c.run(uniq("t3"), "sh", "-c", "exit 3"), rc=3)


@scenario
def s_run_not_found(c, tmp):
    # ctr reports the runtime's last JSON error line from <bundle>/log.json
    r = c.run(uniq("nf"), "/nonexistent")
    c.lane.expect(r, rc=None, err=r"OCI runtime create failed: .*(no such file or directory|not found)")


@scenario
def s_run_stdout(c, tmp):
    # (ctr 1.6 never closes the container's stdin on EOF without -t, so no stdin scenario here)
    r = c.run(uniq("out"), "sh", "-c", "echo hello from the container; echo to-stderr >&2")
    c.lane.expect(r, rc=0, out="hello from the container\n")
    c.lane.expect(r, rc=0, err="to-stderr")


@scenario
def s_run_no_leaked_fds(c, tmp):
    # the shim leaks its ttrpc socket into the runtime as fd 3; the container must not get it
    # ls is the container's process itself; its only other fd is the directory it lists
    r = c.run(uniq("fds"), "ls", "-l", "/proc/self/fd")
    fds = sorted(_fd_list(r.stdout))
    c.lane.check(fds == [0, 1, 2, 3], f"the container process should have fds 0-2 (+ls's own 3), has {fds}", r)


@scenario
def s_run_tty(c, tmp):
    r = c.run(uniq("tty"), "sh", "-c", "tty; test -t 0 && test -t 1 && echo both-ttys", flags=("-t",), tty=True)
    c.lane.expect(r, rc=0, out_re=r"^/dev/pts/\d+$")
    c.lane.expect(r, rc=0, out="both-ttys")


@scenario
def s_run_env_cwd(c, tmp):
    r = c.run(uniq("env"), "sh", "-c", 'echo "$FOO $(pwd)"', flags=("--env", "FOO=bar", "--cwd", "/tmp"))
    c.lane.expect(r, rc=0, out="bar /tmp")


@scenario
def s_run_bind_mount(c, tmp):
    host = tmp / "bind"
    host.mkdir()
    (host / "in.txt").write_text("from the host\n")
    ro = tmp / "bind-ro"
    ro.mkdir()
    r = c.run(uniq("bind"), "sh", "-c",
              "cat /data/in.txt && echo from-container > /data/out.txt && "
              "! touch /data-ro/nope 2>/dev/null && echo ro-ok",
              flags=("--mount", f"type=bind,src={host},dst=/data,options=rbind:rw",
                     "--mount", f"type=bind,src={ro},dst=/data-ro,options=rbind:ro"))
    c.lane.expect(r, rc=0, out="from the host")
    c.lane.expect(r, rc=0, out="ro-ok")
    c.lane.check((host / "out.txt").read_text() == "from-container\n", "the bind mount is writable", r)


@scenario
def s_run_read_only(c, tmp):
    r = c.run(uniq("ro"), "sh", "-c",
              "if touch /rootfile 2>/dev/null; then echo root-writable; else echo root-ro; fi; "
              "grep ' / ' /proc/mounts", flags=("--read-only",))
    c.lane.expect(r, rc=0, out="root-ro")


@scenario
def s_run_privileged(c, tmp):
    r = c.run(uniq("priv"), "sh", "-c",
              "grep CapEff /proc/self/status; mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo mounted; "
              "test -e /dev/vda -o -e /dev/sda -o -e /dev/loop0 && echo host-devices",
              flags=("--privileged",))
    c.lane.expect(r, rc=0, out="mounted")
    c.lane.expect(r, rc=0, out="host-devices")
    capeff = int([ln for ln in r.stdout.splitlines() if ln.startswith("CapEff")][0].split()[1], 16)
    c.lane.check(capeff & (1 << 21), f"CAP_SYS_ADMIN missing from CapEff {capeff:x}", r)


@scenario
def s_run_unprivileged(c, tmp):
    r = c.run(uniq("unpriv"), "sh", "-c",
              "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status; mkdir -p /mnt/t; "
              "mount -t tmpfs none /mnt/t 2>/dev/null && echo MOUNTED || echo mount-refused")
    c.lane.expect(r, rc=0, out="mount-refused")
    c.lane.expect(r, rc=0, out_re=r"^Seccomp:\s+0$")          # plain ctr run: no seccomp
    c.lane.expect(r, rc=0, out_re=r"^NoNewPrivs:\s+1$")


@scenario
def s_run_seccomp(c, tmp):
    # the default profile: filter mode, and e.g. the keyring syscalls are refused
    r = c.run(uniq("sec"), "sh", "-c", "grep -E '^Seccomp(_filters)?:' /proc/self/status; echo ran",
              flags=("--seccomp",))
    c.lane.expect(r, rc=0, out_re=r"^Seccomp:\s+2$")
    c.lane.expect(r, rc=0, out="ran")


# -- detached task: exec, ps, pause/resume, metrics, kill, delete ------------------------------
def _sleeper(c, tag, *flags, cmd=("sleep", "1000")):
    name = uniq(tag)
    c.lane.expect(c.run(name, *cmd, flags=flags, detach=True), rc=0, what="ctr run -d")
    st = c.wait_task_status(name, "RUNNING")
    c.lane.check(st == "RUNNING", f"task {name} should be RUNNING, task ls says {st!r}")
    pid = _task_pid(c, name)
    cg = "".join(ln for ln in _read(f"/proc/{pid}/cgroup").splitlines() if ln.startswith("0::"))
    c.lane.check(cg == f"0::/{c.namespace}/{name}", f"init {pid} is in cgroup {cg!r}, expected 0::/{c.namespace}/{name}")
    # --runc-root R: the runtime under test keeps its state under R/<namespace>/<id>
    state = c.runtime_root / c.namespace / name
    c.lane.check(state.is_dir(), f"the runtime under test has no state dir {state}")
    return name


def _task_pid(c, name):
    r = c.ok("task", "ls")
    for line in r.stdout.splitlines()[1:]:
        f = line.split()
        if f and f[0] == name:
            return int(f[1])
    raise c.lane.failure(f"task {name} not in task ls", r)


@scenario
def s_task_exec(c, tmp):
    name = _sleeper(c, "exec")
    c.lane.expect(c.exec(name, "echo", "exec-ok", flags=("--exec-id", "e1")), rc=0, out="exec-ok")
    c.lane.expect(c.exec(name, "sh", "-c", "exit 5", flags=("--exec-id", "e2")), rc=5)
    c.lane.expect(c.exec(name, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '", flags=("--exec-id", "e3")),
                  rc=0, out="sleep 1000")


@scenario
def s_task_exec_not_found(c, tmp):
    name = _sleeper(c, "exec-nf")
    r = c.exec(name, "/nonexistent", flags=("--exec-id", "nf"))
    c.lane.expect(r, rc=None, err=r"no such file or directory|not found")
    # the task survives a failed exec
    c.lane.expect(c.exec(name, "true", flags=("--exec-id", "after")), rc=0)


@scenario
def s_task_exec_tty(c, tmp):
    name = _sleeper(c, "exec-tty")
    r = c.exec(name, "sh", "-c", "tty; test -t 1 && echo exec-tty-ok", flags=("-t", "--exec-id", "t1"), tty=True)
    c.lane.expect(r, rc=0, out_re=r"^/dev/pts/\d+$")
    c.lane.expect(r, rc=0, out="exec-tty-ok")


@scenario
def s_task_exec_user_cwd(c, tmp):
    name = _sleeper(c, "exec-user")
    r = c.exec(name, "sh", "-c", 'echo "$(id -u) $(pwd)"', flags=("--exec-id", "u1", "--user", "65534", "--cwd", "/tmp"))
    c.lane.expect(r, rc=0, out="65534 /tmp")


@scenario
def s_task_ps(c, tmp):
    name = _sleeper(c, "ps")
    pid = _task_pid(c, name)
    c.lane.expect(c.exec(name, "sleep", "999", flags=("-d", "--exec-id", "bg")), rc=0)
    procs = {int(p) for p in _read(f"/sys/fs/cgroup/{c.namespace}/{name}/cgroup.procs").split()}
    r = c.ok("task", "ps", name)
    pids = {int(ln.split()[0]) for ln in r.stdout.splitlines()[1:] if ln.split() and ln.split()[0].isdigit()}
    c.lane.check(pid in pids and len(pids) == 2 and pids == procs,
                 f"task ps should list init {pid} and the exec'd sleep (cgroup.procs: {sorted(procs)}), "
                 f"lists {sorted(pids)}", r)


@scenario
def s_task_pause_resume(c, tmp):
    name = _sleeper(c, "pause")
    c.ok("task", "pause", name)
    st = c.wait_task_status(name, "PAUSED", 10)
    c.lane.check(st == "PAUSED", f"after pause task ls says {st!r}")
    events = f"/sys/fs/cgroup/{c.namespace}/{name}/cgroup.events"
    c.lane.check("frozen 1" in _read(events), f"after pause {events} says {_read(events)!r}")
    c.ok("task", "resume", name)
    st = c.wait_task_status(name, "RUNNING", 10)
    c.lane.check(st == "RUNNING", f"after resume task ls says {st!r}")
    c.lane.check("frozen 0" in _read(events), f"after resume {events} says {_read(events)!r}")
    c.lane.expect(c.exec(name, "echo", "alive", flags=("--exec-id", "alive")), rc=0, out="alive")


@scenario
def s_task_metrics(c, tmp):
    name = _sleeper(c, "metrics")
    r = c.ok("task", "metrics", name)
    c.lane.check(name in r.stdout and "TIMESTAMP" in r.stdout, "task metrics prints the task's stats", r)


@scenario
def s_task_kill_signal(c, tmp):
    name = _sleeper(c, "kill", cmd=("sh", "-c", 'trap "exit 7" TERM; while :; do sleep 0.1; done'))
    time.sleep(0.3)   # let the shell install its trap
    c.ok("task", "kill", "-s", "SIGTERM", name)
    st = c.wait_task_status(name, "STOPPED", 10)
    c.lane.check(st == "STOPPED", f"after kill -s TERM task ls says {st!r}")
    c.ok("task", "delete", name)


@scenario
def s_task_kill_all(c, tmp):
    name = _sleeper(c, "killall")
    c.lane.expect(c.exec(name, "sleep", "999", flags=("-d", "--exec-id", "bg")), rc=0)
    pid = _task_pid(c, name)
    c.ok("task", "kill", "--all", "-s", "SIGKILL", name)
    st = c.wait_task_status(name, "STOPPED", 10)
    c.lane.check(st == "STOPPED", f"after kill --all task ls says {st!r}")
    # every process of the container is gone, the exec'd one too
    procs = f"/sys/fs/cgroup/{c.namespace}/{name}/cgroup.procs"
    deadline = time.monotonic() + 5
    while _read(procs).strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    c.lane.check(_read(procs).strip() == "", f"processes left after kill --all: {_read(procs).split()}")
    r = c.ok("task", "delete", name)
    c.lane.check(not _alive(pid), f"init {pid} survived kill --all", r)


@scenario
def s_task_delete(c, tmp):
    name = _sleeper(c, "delete")
    r = c("task", "delete", name)
    c.lane.expect(r, rc=None, what="task delete of a running task must fail")
    c.ok("task", "kill", "-s", "SIGKILL", name)
    st = c.wait_task_status(name, "STOPPED", 10)
    c.lane.check(st == "STOPPED", f"after SIGKILL task ls says {st!r}")
    r = c.ok("task", "delete", name)
    c.lane.check(c.task_status(name) == "", "the task is gone after task delete", r)
    c.ok("container", "delete", name)
    c.created.remove(name)


@scenario
def s_task_delete_force(c, tmp):
    name = _sleeper(c, "delete-f")
    pid = _task_pid(c, name)
    r = c.ok("task", "delete", "--force", name)
    c.lane.check(c.task_status(name) == "" and not _alive(pid), "task delete --force removes a running task", r)


@scenario
def s_join_netns(c, tmp):
    a = _sleeper(c, "net-a")
    pid = _task_pid(c, a)
    want = os.readlink(f"/proc/{pid}/ns/net")
    r = c.run(uniq("net-b"), "readlink", "/proc/self/ns/net", flags=("--with-ns", f"network:/proc/{pid}/ns/net"))
    c.lane.expect(r, rc=0, out=want)


@scenario
def s_cri_config_from_docs(c, tmp):
    # docs/clients.md's CRI snippet must load in containerd 1.6 (cri plugin "ok"), and its
    # RuntimeClass handler must name a runtime of that snippet
    import re
    doc = REPO / "docs" / "clients.md"
    toml = doc_code_blocks(doc, "CRI (Kubernetes nodes)", "toml")
    c.lane.check(len(toml) == 1, f"{doc}: expected one toml block under 'CRI (Kubernetes nodes)', found {len(toml)}")
    r, log = c.check_config(toml[0])
    c.lane.extra_logs.append(log)
    try:
        c.lane.expect(r, rc=0, out_re=r"^io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok\s*$",
                      what="the documented CRI config should load")
    finally:
        c.lane.extra_logs.remove(log)
    handlers = set(re.findall(r'containerd\.runtimes\.([a-z0-9-]+)\]', toml[0]))
    yaml = doc_code_blocks(doc, "Kubernetes RuntimeClass", "yaml")
    classes = re.findall(r"^handler:\s*(\S+)", "".join(yaml), re.M)
    c.lane.check(classes and all(h in handlers for h in classes),
                 f"RuntimeClass handlers {classes} must be CRI runtimes of the snippet {sorted(handlers)}")
    c.lane.check("pyoci" in handlers, f"the snippet defines no pyoci runtime: {sorted(handlers)}")


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return f"({e})"


def _alive(pid):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
            if st[st.rindex(")") + 2] == "Z":
                return False
        except OSError:
            return False
        time.sleep(0.05)
    return True


def _fd_list(ls_output: str) -> dict[int, str]:
    """`ls -l /proc/self/fd` -> {fd: target} (ls's own directory fd has no readable target)."""
    out = {}
    for ln in ls_output.splitlines():
        if ln.startswith("l"):
            head, _, target = ln.partition(" -> ")
            out[int(head.split()[-1])] = target
    return out


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_containerd(name, ctr, tmp_path):
    SCENARIOS[name](ctr, tmp_path)
