"""podman 4.3 lane: podman (+ conmon) drives the runtime under test (issue 8).

One test per scenario. Run against runc (the reference) with
PYOCI_CLIENT_RUNTIME=/usr/sbin/runc; see tests/clients/lanes.py.
"""
from __future__ import annotations

import os
import secrets
import time

import pytest

from clients.lanes import IMAGE, REPO, NetnsListener, default_state_root, doc_code_blocks

pytestmark = [pytest.mark.clients, pytest.mark.root]

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__.removeprefix("s_").replace("_", "-")] = fn
    return fn


def uniq(tag: str) -> str:
    return f"pl-{tag}-{secrets.token_hex(3)}"


# -- run --rm: exit codes, stdio -------------------------------------------------------------
@scenario
def s_run_exit_0(pm, tmp):
    pm.lane.expect(pm("run", "--rm", IMAGE, "true"), rc=0)


@scenario
def s_run_exit_3(pm, tmp):
    pm.lane.expect(pm("run", "--rm", IMAGE, "sh", "-c", "exit 3"), rc=3)


@scenario
def s_run_not_executable_126(pm, tmp):
    # /etc/passwd exists but is not executable: podman maps "permission denied" to 126
    pm.lane.expect(pm("run", "--rm", IMAGE, "/etc/passwd"), rc=126, err="permission denied")


@scenario
def s_run_not_found_127(pm, tmp):
    pm.lane.expect(pm("run", "--rm", IMAGE, "/nonexistent"), rc=127,
                   err="no such file or directory|executable file not found")


@scenario
def s_run_not_found_in_path_127(pm, tmp):
    pm.lane.expect(pm("run", "--rm", IMAGE, "no-such-cmd"), rc=127,
                   err="executable file not found|no such file or directory")


@scenario
def s_run_stdout(pm, tmp):
    r = pm.lane.expect(pm("run", "--rm", IMAGE, "echo", "hello from the container"), rc=0)
    pm.lane.check(r.stdout == "hello from the container\n", "stdout is exactly the container's output", r)


@scenario
def s_run_stdin(pm, tmp):
    r = pm("run", "--rm", "-i", IMAGE, "sh", "-c", "tr a-z A-Z; echo done", input="piped input\n")
    pm.lane.expect(r, rc=0, out="PIPED INPUT\ndone")


@scenario
def s_run_tty(pm, tmp):
    # -t: the runtime hands conmon the pty master through the console socket
    r = pm("run", "--rm", "-t", IMAGE, "sh", "-c", "tty; test -t 0 && test -t 1 && echo both-ttys; "
           "stty size", tty=True)
    pm.lane.expect(r, rc=0, out_re=r"^/dev/pts/\d+$")
    pm.lane.expect(r, rc=0, out="both-ttys")


@scenario
def s_run_tty_stdin(pm, tmp):
    r = pm("run", "--rm", "-it", IMAGE, "sh", "-c", "read line; echo got:$line", tty=True,
           input="typed\n")
    pm.lane.expect(r, rc=0, out="got:typed")


@scenario
def s_run_env_user_workdir_hostname(pm, tmp):
    r = pm("run", "--rm", "--env", "FOO=bar", "--user", "65534:65534", "--workdir", "/tmp",
           "--hostname", "lane-host", IMAGE, "sh", "-c", 'echo "$FOO $(id -u):$(id -g) $(pwd) $(hostname)"')
    pm.lane.expect(r, rc=0, out="bar 65534:65534 /tmp lane-host")


@scenario
def s_runtime_by_name(pm, tmp):
    # docs/clients.md registers pyoci in containers.conf ([engine.runtimes] + runtime_supports_json);
    # the lane's containers.conf does the same, so `--runtime pyoci` (a name) must resolve to it
    import tomllib
    doc = REPO / "docs" / "clients.md"
    blocks = doc_code_blocks(doc, "podman", "toml")
    pm.lane.check(len(blocks) == 1, f"{doc}: expected one toml block under 'podman', found {len(blocks)}")
    conf = tomllib.loads(blocks[0])
    pm.lane.check("pyoci" in conf["engine"]["runtime_supports_json"] and conf["engine"]["runtimes"]["pyoci"],
                  f"the documented containers.conf does not register pyoci: {conf}")
    name = ["podman", "--runtime", "pyoci"]
    r = pm.lane.run(name + ["info", "--format", "{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Path}}"],
                    env=pm.env)
    pm.lane.expect(r, rc=0, out=f"pyoci {pm.runtime}")
    pm.lane.expect(pm.lane.run(name + ["run", "--rm", IMAGE, "echo", "by-name"], env=pm.env), rc=0, out="by-name")


# -- -d then exec ----------------------------------------------------------------------------
def _sleeper(pm, tag, *extra):
    name = uniq(tag)
    cid = pm.run_detached(*extra, IMAGE, "sleep", "1000", name=name)
    st = pm.wait_status(name, "running")
    pm.lane.check(st == "running", f"container {name} should be running, inspect says {st!r}")
    # podman passes no --root: the runtime under test keeps its state in /run/<its name>/<id>
    # the runtime put init into the cgroup podman asked for (cgroupfs: /libpod_parent/libpod-<id>)
    pid = pm.inspect(name, "{{.State.Pid}}")
    cg = "".join(ln for ln in _read(f"/proc/{pid}/cgroup").splitlines() if ln.startswith("0::"))
    pm.lane.check(cg == f"0::/libpod_parent/libpod-{cid}", f"init {pid} is in cgroup {cg!r}, "
                  f"expected 0::/libpod_parent/libpod-{cid}")
    root = default_state_root(pm.lane.runtime)
    if root:
        pm.lane.check(os.path.isdir(f"{root}/{cid}"), f"the runtime under test has no state dir {root}/{cid}: "
                      "is podman running another runtime?")
    return name


@scenario
def s_detach_exec(pm, tmp):
    name = _sleeper(pm, "exec")
    pm.lane.expect(pm("exec", name, "echo", "exec-ok"), rc=0, out="exec-ok")
    pm.lane.expect(pm("exec", name, "sh", "-c", "exit 5"), rc=5)
    # the exec'd process runs next to the init process: same pid namespace
    pm.lane.expect(pm("exec", name, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"), rc=0, out="sleep 1000")


@scenario
def s_exec_not_found(pm, tmp):
    name = _sleeper(pm, "exec-nf")
    pm.lane.expect(pm("exec", name, "/nonexistent"), rc=127)


@scenario
def s_exec_tty(pm, tmp):
    name = _sleeper(pm, "exec-tty")
    r = pm("exec", "-t", name, "sh", "-c", "tty; test -t 1 && echo exec-tty-ok", tty=True)
    pm.lane.expect(r, rc=0, out_re=r"^/dev/pts/\d+$")
    pm.lane.expect(r, rc=0, out="exec-tty-ok")


@scenario
def s_exec_stdin(pm, tmp):
    name = _sleeper(pm, "exec-in")
    pm.lane.expect(pm("exec", "-i", name, "sh", "-c", "cat; echo end", input="from stdin\n"),
                   rc=0, out="from stdin\nend")


@scenario
def s_exec_user(pm, tmp):
    name = _sleeper(pm, "exec-user")
    pm.lane.expect(pm("exec", "--user", "nobody", name, "id", "-u"), rc=0, out="65534")
    pm.lane.expect(pm("exec", "--user", "1234:4321", name, "sh", "-c", "echo $(id -u):$(id -g)"),
                   rc=0, out="1234:4321")


@scenario
def s_exec_workdir(pm, tmp):
    name = _sleeper(pm, "exec-wd")
    pm.lane.expect(pm("exec", "--workdir", "/tmp", name, "pwd"), rc=0, out="/tmp\n")


@scenario
def s_exec_env(pm, tmp):
    name = _sleeper(pm, "exec-env")
    pm.lane.expect(pm("exec", "--env", "LANE_VAR=lane value", name, "sh", "-c", 'echo "[$LANE_VAR]"'),
                   rc=0, out="[lane value]")


@scenario
def s_top(pm, tmp):
    name = _sleeper(pm, "top")
    r = pm.lane.expect(pm("top", name), rc=0, out="sleep 1000")
    pm.lane.check("PID" in r.stdout, "podman top prints a header", r)


@scenario
def s_pause_unpause(pm, tmp):
    name = _sleeper(pm, "pause")
    pm.ok("pause", name)
    st = pm.wait_status(name, "paused", 10)
    pm.lane.check(st == "paused", f"after pause inspect says {st!r}")
    cid = pm.inspect(name, "{{.Id}}")
    events = f"/sys/fs/cgroup/libpod_parent/libpod-{cid}/cgroup.events"
    pm.lane.check("frozen 1" in _read(events), f"after pause {events} says {_read(events)!r}")
    pm.ok("unpause", name)
    st = pm.wait_status(name, "running", 10)
    pm.lane.check(st == "running", f"after unpause inspect says {st!r}")
    pm.lane.check("frozen 0" in _read(events), f"after unpause {events} says {_read(events)!r}")
    pm.lane.expect(pm("exec", name, "echo", "alive"), rc=0, out="alive")


@scenario
def s_kill(pm, tmp):
    name = uniq("kill")
    pm.run_detached(IMAGE, "sh", "-c", 'trap "echo got-usr1" USR1; echo ready; '
                    'while :; do sleep 0.1; done', name=name)
    _wait_log(pm, name, "ready")
    pm.ok("kill", "-s", "USR1", name)
    _wait_log(pm, name, "got-usr1")
    pm.lane.check(pm.wait_status(name, "running", 2) == "running", "USR1 must not stop the container")
    pm.ok("kill", name)          # SIGKILL
    st = pm.wait_status(name, "exited", 15)
    pm.lane.check(st == "exited", f"after kill inspect says {st!r}")
    code = pm.inspect(name, "{{.State.ExitCode}}")
    pm.lane.check(code == "137", f"exit code after SIGKILL is {code}, expected 137")


def _wait_log(pm, name, text, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        r = pm("logs", name)
        if text in r.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    pm.lane.expect(r, rc=0, out=text, what=f"podman logs should show {text!r}")


@scenario
def s_stop(pm, tmp):
    name = uniq("stop")
    pm.run_detached(IMAGE, "sh", "-c", 'trap "echo got-term; exit 7" TERM; echo ready; '
                    'while :; do sleep 0.1; done', name=name)
    _wait_log(pm, name, "ready")
    pm.ok("stop", "-t", "20", name)
    st = pm.wait_status(name, "exited", 5)
    pm.lane.check(st == "exited", f"after stop inspect says {st!r}")
    code = pm.inspect(name, "{{.State.ExitCode}}")
    pm.lane.check(code == "7", f"the TERM trap should exit 7, exit code is {code}")
    _wait_log(pm, name, "got-term")
    # a stopped container starts again
    pm.ok("start", name)
    pm.lane.check(pm.wait_status(name, "running") == "running", "restarted container runs")


@scenario
def s_rm_force(pm, tmp):
    name = _sleeper(pm, "rm")
    pid = int(pm.inspect(name, "{{.State.Pid}}"))
    pm.ok("rm", "-f", "-t", "0", name)
    pm.created.remove(name)
    r = pm("ps", "-a", "--format", "{{.Names}}")
    pm.lane.check(name not in r.stdout.split(), f"{name} still listed after rm -f", r)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.05)
    pm.lane.check(not os.path.exists(f"/proc/{pid}") or _state(pid) == "Z",
                  f"container init {pid} survived rm -f")


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return f"({e})"


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return s[s.rindex(")") + 2]
    except OSError:
        return "gone"


# -- mounts, security ------------------------------------------------------------------------
@scenario
def s_volumes(pm, tmp):
    host = tmp / "vol"
    host.mkdir()
    (host / "in.txt").write_text("from the host\n")
    r = pm("run", "--rm", "-v", f"{host}:/data", "-v", f"{host}:/data-ro:ro", IMAGE, "sh", "-c",
           "cat /data/in.txt && echo from-container > /data/out.txt && "
           "! touch /data-ro/nope 2>/dev/null && echo ro-ok")
    pm.lane.expect(r, rc=0, out="from the host")
    pm.lane.expect(r, rc=0, out="ro-ok")
    pm.lane.check((host / "out.txt").read_text() == "from-container\n", "the bind volume is writable", r)
    # a named volume keeps data between containers
    vol = uniq("vol")
    try:
        pm.lane.expect(pm("run", "--rm", "-v", f"{vol}:/v", IMAGE, "sh", "-c", "echo kept > /v/f"), rc=0)
        pm.lane.expect(pm("run", "--rm", "-v", f"{vol}:/v", IMAGE, "cat", "/v/f"), rc=0, out="kept")
    finally:
        pm("volume", "rm", "-f", vol)


@scenario
def s_tmpfs(pm, tmp):
    r = pm("run", "--rm", "--tmpfs", "/scratch:rw,size=1m,mode=1777", IMAGE, "sh", "-c",
           "grep ' /scratch ' /proc/mounts && echo hi > /scratch/f && cat /scratch/f")
    pm.lane.expect(r, rc=0, out_re=r"^tmpfs /scratch tmpfs ")
    pm.lane.expect(r, rc=0, out="hi")


@scenario
def s_read_only(pm, tmp):
    r = pm("run", "--rm", "--read-only", IMAGE, "sh", "-c",
           "if touch /rootfile 2>/dev/null; then echo root-writable; else echo root-ro; fi; "
           "touch /tmp/ok && echo tmp-writable; grep ' / ' /proc/mounts")
    pm.lane.expect(r, rc=0, out="root-ro")
    pm.lane.expect(r, rc=0, out="tmp-writable")


@scenario
def s_privileged(pm, tmp):
    r = pm("run", "--rm", "--privileged", IMAGE, "sh", "-c",
           "grep CapEff /proc/self/status; mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo mounted; "
           "test -e /dev/vda -o -e /dev/sda -o -e /dev/loop0 && echo host-devices; "
           "grep Seccomp: /proc/self/status")
    pm.lane.expect(r, rc=0, out="mounted")
    pm.lane.expect(r, rc=0, out="host-devices")
    pm.lane.expect(r, rc=0, out_re=r"^Seccomp:\s+0$")
    capeff = int([ln for ln in r.stdout.splitlines() if ln.startswith("CapEff")][0].split()[1], 16)
    pm.lane.check(capeff & (1 << 21), f"CAP_SYS_ADMIN missing from CapEff {capeff:x}", r)


@scenario
def s_default_security(pm, tmp):
    # without --privileged: seccomp filter on, no CAP_SYS_ADMIN, mount is refused
    r = pm("run", "--rm", IMAGE, "sh", "-c",
           "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status; "
           "mkdir -p /mnt/t; mount -t tmpfs none /mnt/t 2>/dev/null && echo MOUNTED || echo mount-refused")
    pm.lane.expect(r, rc=0, out="mount-refused")
    pm.lane.expect(r, rc=0, out_re=r"^Seccomp:\s+2$")
    capeff = int([ln for ln in r.stdout.splitlines() if ln.startswith("CapEff")][0].split()[1], 16)
    pm.lane.check(not capeff & (1 << 21), f"CAP_SYS_ADMIN present in CapEff {capeff:x}", r)


@scenario
def s_cap_drop(pm, tmp):
    r = pm("run", "--rm", "--cap-drop", "CHOWN", IMAGE, "sh", "-c",
           "grep CapEff /proc/self/status; touch /tmp/f; chown 65534 /tmp/f 2>&1 && echo CHOWNED || echo chown-refused")
    pm.lane.expect(r, rc=0, out="chown-refused")
    capeff = int([ln for ln in r.stdout.splitlines() if ln.startswith("CapEff")][0].split()[1], 16)
    pm.lane.check(not capeff & 1, f"CAP_CHOWN still in CapEff {capeff:x}", r)
    pm.lane.check(capeff & (1 << 5), f"CAP_KILL should stay in CapEff {capeff:x}", r)


@scenario
def s_uidmap(pm, tmp):
    r = pm("run", "--rm", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536", IMAGE, "sh", "-c",
           "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /tmp/x && stat -c %u /tmp/x")
    pm.lane.expect(r, rc=0, out_re=r"^\s*0\s+100000\s+65536$")
    lines = r.stdout.split()
    pm.lane.check(lines[-2:] == ["0", "0"], "root inside the user namespace owns what it creates", r)


@scenario
def s_preserve_fds(pm, tmp):
    f = tmp / "fd3.txt"
    f.write_text("passed through fd 3\n")
    r = pm("run", "--rm", "--preserve-fds", "1", IMAGE, "sh", "-c", "cat <&3", fd3=str(f))
    pm.lane.expect(r, rc=0, out="passed through fd 3")
    # fd 3 arrives as fd 3, and nothing else of the runtime's or conmon's leaks in (ls is the
    # container's process itself; its only other fd is the directory it lists)
    r = pm("run", "--rm", "--preserve-fds", "1", IMAGE, "ls", "-l", "/proc/self/fd", fd3=str(f))
    fds = _fd_list(r.stdout)
    pm.lane.check(sorted(fds) == [0, 1, 2, 3, 4] and fds[3].endswith("fd3.txt"),
                  f"the container process should have fds 0-3 (+ls's own 4), has {fds}", r)


@scenario
def s_run_no_leaked_fds(pm, tmp):
    r = pm("run", "--rm", IMAGE, "ls", "-l", "/proc/self/fd")
    fds = sorted(_fd_list(r.stdout))
    pm.lane.check(fds == [0, 1, 2, 3], f"the container process should have fds 0-2 (+ls's own 3), has {fds}", r)


# -- networking ------------------------------------------------------------------------------
@scenario
def s_join_netns(pm, tmp):
    a = _sleeper(pm, "net-a")
    ns_a = pm.lane.expect(pm("exec", a, "readlink", "/proc/self/ns/net"), rc=0).stdout.strip()
    b = uniq("net-b")
    pm.created.append(b)
    r = pm("run", "--rm", "--name", b, "--network", f"container:{a}", IMAGE, "readlink", "/proc/self/ns/net")
    pm.lane.expect(r, rc=0, out=ns_a)
    own = pm.lane.expect(pm("run", "--rm", "--network", "none", IMAGE, "readlink", "/proc/self/ns/net"),
                         rc=0).stdout.strip()
    pm.lane.check(own != ns_a, "a container with its own netns should not share a's", None)


@scenario
def s_network_none(pm, tmp):
    r = pm("run", "--rm", "--network", "none", IMAGE, "sh", "-c", "ls /sys/class/net; ip -o link")
    pm.lane.expect(r, rc=0)
    names = [ln for ln in r.stdout.splitlines() if ln and ":" not in ln]
    pm.lane.check(names == ["lo"], f"--network none should have only lo, has {names}", r)
    pm.lane.expect(r, rc=0, out_re=r"^1: lo: <LOOPBACK,UP")


@scenario
def s_network_bridge(pm, tmp):
    # default bridge network (netavark) inside the lane's own network namespace; the container
    # talks to a listener on the bridge's host side
    name = uniq("bridge")
    pm.run_detached(IMAGE, "sleep", "1000", name=name)
    addr = pm.lane.expect(pm("exec", name, "ip", "-4", "-o", "addr", "show", "eth0"), rc=0).stdout
    pm.lane.check("inet " in addr, "eth0 has an IPv4 address on the default network", None)
    route = pm.lane.expect(pm("exec", name, "ip", "route"), rc=0).stdout
    gw = [ln.split()[2] for ln in route.splitlines() if ln.startswith("default via")]
    pm.lane.check(bool(gw), f"no default route: {route!r}")
    listener = NetnsListener(pm.lane.netns)
    pm.lane.check(listener.port > 0, f"cannot listen in the lane's netns: {listener.error}")
    r = pm("exec", name, "sh", "-c", f"echo hello-over-the-bridge | nc -w 5 {gw[0]} {listener.port}")
    got = listener.result()
    pm.lane.check(b"hello-over-the-bridge" in got,
                  f"the host side of the bridge ({gw[0]}:{listener.port}) got {got!r} {listener.error or ''}", r)


def _fd_list(ls_output: str) -> dict[int, str]:
    """`ls -l /proc/self/fd` -> {fd: target} (ls's own directory fd has no readable target)."""
    out = {}
    for ln in ls_output.splitlines():
        if ln.startswith("l"):
            head, _, target = ln.partition(" -> ")
            out[int(head.split()[-1])] = target
    return out


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_podman(name, podman, tmp_path):
    SCENARIOS[name](podman, tmp_path)
