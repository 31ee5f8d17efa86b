"""The core lifecycle through the CLI, for real: create / state / start / kill / delete / run."""
import json
import os
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.root


def _upstream_state_schema_validate(doc):
    from helpers.upstream import validate
    from pyoci import spec
    spec.validate_state(doc)                  # the project's own schema
    validate("state-schema.json", doc)        # and the upstream one (oracle)


def test_run_prints_and_exits_with_code(runtime, bundle):
    bundle.set_args("sh", "-c", "echo hello; exit 3")
    p = runtime.run("run", "--bundle", bundle.path, "c1")
    assert p.returncode == 3, p.stderr
    assert p.stdout == "hello\n"
    assert runtime.ids() == []          # run deletes the container afterwards


def test_create_start_state_kill_delete(runtime, bundle, tmp_path):
    bundle.set_args("sleep", "30")
    pidfile = tmp_path / "pid"
    p = runtime.run("create", "--bundle", bundle.path, "--pid-file", pidfile, "c2")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "" and p.stderr == ""
    pid_text = pidfile.read_text()
    assert pid_text.isdigit() and not pid_text.endswith("\n")
    s = runtime.state("c2")
    assert s["status"] == "created"
    assert s["pid"] == int(pid_text)
    assert s["bundle"] == str(bundle.path)
    assert s["id"] == "c2" and s["ociVersion"] == "1.3.0"
    _upstream_state_schema_validate(s)
    # the init waits at the exec gate: still a pyoci (python) process, not sleep
    assert b"sleep" not in open(f"/proc/{s['pid']}/cmdline", "rb").read()
    d = runtime.run("delete", "c2")
    assert d.returncode == 1 and "not stopped: created" in d.stderr
    runtime.ok("start", "c2")
    s = runtime.state("c2")
    assert s["status"] == "running"
    time.sleep(0.1)
    assert open(f"/proc/{s['pid']}/cmdline", "rb").read().startswith(b"sleep")
    again = runtime.run("start", "c2")
    assert again.returncode == 1 and "cannot start an already running container" in again.stderr
    runtime.ok("kill", "c2", "KILL")
    s = runtime.wait_status("c2", "stopped")
    assert s["status"] == "stopped"
    _upstream_state_schema_validate(s)
    k = runtime.run("kill", "c2", "9")
    assert k.returncode == 1 and "container not running" in k.stderr
    runtime.ok("kill", "--all", "c2", "9")          # exits 0 on a stopped container
    runtime.ok("delete", "c2")
    assert runtime.ids() == []
    assert not _alive(int(pid_text))


def test_delete_force_kills_a_running_container(runtime, bundle):
    bundle.set_args("sleep", "60")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "c3")
    pid = runtime.state("c3")["pid"]
    runtime.ok("delete", "--force", "c3")
    assert runtime.ids() == []
    assert not _alive(pid)


def _alive(pid):
    """True if pid is a live (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] not in "ZX"
    except OSError:
        return False


def test_duplicate_id_fails(runtime, bundle):
    bundle.set_args("sleep", "30")
    runtime.ok("create", "--bundle", bundle.path, "dup")
    p = runtime.run("create", "--bundle", bundle.path, "dup")
    assert p.returncode == 1 and "exists" in p.stderr
    runtime.ok("delete", "--force", "dup")


@pytest.mark.parametrize("arg,wording", [
    ("nonexistent-cmd", 'exec: "nonexistent-cmd": executable file not found in $PATH'),
    ("/nonexistent", 'no such file or directory'),
    ("/etc/passwd", 'permission denied'),
])
def test_missing_executable_fails_at_create(runtime, bundle, arg, wording):
    bundle.set_args(arg)
    p = runtime.run("create", "--bundle", bundle.path, "bad")
    assert p.returncode == 1
    assert wording in p.stderr
    assert runtime.ids() == []         # nothing left behind


def test_invalid_config_names_the_path(runtime, bundle):
    bundle.config["linux"]["namespaces"].append({"type": "bogus"})
    bundle.save()
    p = runtime.run("create", "--bundle", bundle.path, "badcfg")
    assert p.returncode == 1
    assert "linux.namespaces[6].type" in p.stderr
    assert runtime.ids() == []


def test_namespaces_hostname_and_pid1(runtime, bundle):
    bundle.config["hostname"] = "box1"
    bundle.config["domainname"] = "example.org"
    bundle.set_args("sh", "-c", "echo $$; hostname; cat /proc/sys/kernel/domainname; "
                    "readlink /proc/self/ns/net /proc/self/ns/uts /proc/self/ns/ipc; ip link 2>/dev/null | grep -c 'lo:' ; cat /sys/class/net/lo/operstate")
    p = runtime.ok("run", "--bundle", bundle.path, "ns1")
    out = p.stdout.split()
    assert out[0] == "1"                   # pid namespace: the process is pid 1
    assert out[1] == "box1" and out[2] == "example.org"
    for ns_link, name in zip(out[3:6], ("net", "uts", "ipc")):
        assert ns_link != os.readlink(f"/proc/self/ns/{name}")
    assert out[-1] in ("unknown", "up")    # lo is up (operstate of lo reads "unknown" when up)
    flags = int(open("/sys/class/net/lo/flags").read(), 16)
    assert flags & 1


def test_loopback_is_up_in_a_new_netns(runtime, bundle):
    bundle.set_args("cat", "/sys/class/net/lo/flags")
    p = runtime.ok("run", "--bundle", bundle.path, "lo1")
    assert int(p.stdout.strip(), 16) & 1


def test_join_namespace_by_path(runtime, bundle, tmp_path):
    holder = subprocess.Popen(["unshare", "--uts", "sh", "-c", "hostname joined-uts; exec sleep 30"])
    try:
        deadline = time.time() + 5
        while os.readlink(f"/proc/{holder.pid}/ns/uts") == os.readlink("/proc/self/ns/uts"):
            assert time.time() < deadline
            time.sleep(0.01)
        # wait until the hostname has been set
        time.sleep(0.1)
        for n in bundle.linux["namespaces"]:
            if n["type"] == "uts":
                n["path"] = f"/proc/{holder.pid}/ns/uts"
        bundle.config.pop("hostname", None)
        bundle.set_args("hostname")
        p = runtime.ok("run", "--bundle", bundle.path, "j1")
        assert p.stdout.strip() == "joined-uts"
    finally:
        holder.kill()
        holder.wait()


def test_join_namespace_of_wrong_type_fails(runtime, bundle):
    for n in bundle.linux["namespaces"]:
        if n["type"] == "ipc":
            n["path"] = "/proc/self/ns/net"
    bundle.save()
    p = runtime.run("create", "--bundle", bundle.path, "wrongns")
    assert p.returncode == 1
    assert "ipc" in p.stderr
    assert runtime.ids() == []


def test_user_namespace_maps(runtime, busybox_rootfs):
    import shutil
    import tempfile
    from helpers.bundle import Bundle
    # the mapped root (host uid 100000) must be able to reach the bundle: not under pytest's 0700 tmp
    top = tempfile.mkdtemp(prefix="pyoci-userns-")
    try:
        os.chmod(top, 0o755)
        bundle = Bundle.make(os.path.join(top, "bundle"), busybox_rootfs)
        bundle.linux["namespaces"].append({"type": "user"})
        bundle.linux["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        bundle.linux["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        bundle.config["mounts"] = [m for m in bundle.config["mounts"]
                                   if m["destination"] not in ("/sys", "/sys/fs/cgroup")]
        os.chmod(bundle.path, 0o755)
        subprocess.run(["chown", "-R", "100000:100000", str(bundle.rootfs)], check=True)
        bundle.set_args("sh", "-c", "cat /proc/self/uid_map; id -u")
        p = runtime.run("run", "--bundle", bundle.path, "u1")
        assert p.returncode == 0, p.stderr
        lines = p.stdout.split("\n")
        assert lines[0].split() == ["0", "100000", "65536"]
        assert lines[1] == "0"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_time_namespace_offsets(runtime, bundle):
    bundle.linux["namespaces"].append({"type": "time"})
    bundle.linux["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0}}
    bundle.set_args("cat", "/proc/uptime")
    p = runtime.ok("run", "--bundle", bundle.path, "t1")
    container_uptime = float(p.stdout.split()[0])
    host_uptime = float(open("/proc/uptime").read().split()[0])
    assert container_uptime > host_uptime + 86400 * 364


def test_stdio_is_inherited_and_host_fds_closed(runtime, bundle, tmp_path):
    bundle.set_args("sh", "-c", "read line; echo got:$line; ls /proc/self/fd | sort -n | tr '\\n' ' '")
    leak = open(tmp_path / "leak", "w")
    os.set_inheritable(leak.fileno(), True)
    try:
        p = runtime.run("run", "--bundle", bundle.path, "io1", input="ping\n", pass_fds=(leak.fileno(),))
    finally:
        leak.close()
    assert p.returncode == 0, p.stderr
    first, fds = p.stdout.split("\n", 1)
    assert first == "got:ping"
    # 0, 1, 2 and the fd ls itself opens: nothing from the host
    assert [int(x) for x in fds.split()] == [0, 1, 2, 3]


def test_preserve_fds(runtime, bundle, tmp_path):
    f = tmp_path / "extra"
    f.write_text("preserved-content")
    bundle.set_args("sh", "-c", "cat <&3; echo; ls /proc/self/fd | sort -n | tr '\\n' ' '")
    argv = runtime.argv("run", "--preserve-fds", "1", "--bundle", bundle.path, "pf1")
    # fd 3 is opened by a shell around pyoci, as conmon does for podman's --preserve-fds
    p = subprocess.run(["sh", "-c", 'exec 3<"$0"; exec "$@"', str(f), *map(str, argv)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    first, fds = p.stdout.split("\n", 1)
    assert first == "preserved-content"
    assert [int(x) for x in fds.split()] == [0, 1, 2, 3, 4]   # 3 preserved, 4 is ls's own


def test_preserve_fds_beyond_open_fds_is_an_error(runtime, bundle):
    p = runtime.run("create", "--preserve-fds", "50", "--bundle", bundle.path, "pf2")
    assert p.returncode == 1 and "preserve-fds" in p.stderr
    assert runtime.ids() == []


def test_process_identity_and_limits(runtime, bundle):
    proc = bundle.process
    proc["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 0o027}
    proc["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024}]
    proc["cwd"] = "/tmp"
    proc["env"] = ["PATH=/bin", "FOO=bar"]
    proc["oomScoreAdj"] = 123
    bundle.set_args("sh", "-c", "id -u; id -g; id -G; umask; ulimit -n; pwd; echo $FOO; "
                    "cat /proc/self/oom_score_adj; grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status")
    p = runtime.ok("run", "--bundle", bundle.path, "id1")
    out = p.stdout.splitlines()
    assert out[0] == "1000" and out[1] == "1000"
    assert set(out[2].split()) == {"1000", "10", "20"}
    assert out[3] == "0027"
    assert out[4] == "512"
    assert out[5] == "/tmp"
    assert out[6] == "bar"
    assert out[7] == "123"
    status = dict(line.split(":\t") for line in out[8:])
    assert int(status["CapInh"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    # runc's default set: AUDIT_WRITE(29), KILL(5), NET_BIND_SERVICE(10)
    assert int(status["CapBnd"], 16) == (1 << 29) | (1 << 5) | (1 << 10)


def test_rootfs_readonly_and_masked_paths(runtime, bundle):
    bundle.config["root"]["readonly"] = True
    bundle.set_args("sh", "-c", "touch /x 2>&1; cat /proc/timer_list 2>/dev/null | wc -c; "
                    "echo 1 > /proc/sys/kernel/ns_last_pid 2>&1; grep ' / ' /proc/self/mountinfo")
    p = runtime.ok("run", "--bundle", bundle.path, "ro1")
    assert "Read-only file system" in p.stdout
    lines = p.stdout.splitlines()
    assert lines[1] == "0"
    assert " ro," in p.stdout.splitlines()[-1] or " ro " in p.stdout.splitlines()[-1]


def test_list_table_and_json(runtime, bundle):
    bundle.set_args("sleep", "30")
    runtime.ok("create", "--bundle", bundle.path, "l1")
    js = json.loads(runtime.ok("list", "--format", "json").stdout)
    assert [s["id"] for s in js] == ["l1"] and js[0]["status"] == "created"
    table = runtime.ok("list").stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"]
    assert table[1].split()[0] == "l1" and "created" in table[1]
    runtime.ok("delete", "--force", "l1")


def test_debug_log_has_one_line_per_stage(runtime, bundle, tmp_path):
    logf = tmp_path / "debug.log"
    p = runtime.run("run", "--bundle", bundle.path, "dbg1",
                    global_flags=("--debug", "--log", str(logf), "--log-format", "json"))
    assert p.returncode == 0, p.stderr
    recs = [json.loads(l) for l in logf.read_text().splitlines()]
    stages = [r["msg"].split(":")[0] for r in recs if r["msg"].startswith("stage ")]
    for want in ("stage validate", "stage plan", "stage fork", "stage namespaces", "stage cgroup",
                 "stage rootfs.prepare", "stage rootfs.pivot", "stage process", "stage start"):
        assert want in stages, (want, stages)
    assert all("ms" in r for r in recs if r["msg"].startswith("stage "))


def test_hooks_run_in_order_with_state(runtime, bundle, tmp_path):
    out = tmp_path / "hooks.log"
    script = tmp_path / "hook.sh"
    script.write_text(f"#!/bin/sh\nread -r state\necho \"$1 $(echo \"$state\" | tr -d ' ' | grep -o '\"status\":\"[a-z]*\"')\" >> {out}\n")
    script.chmod(0o755)
    hooks = {}
    for kind in ("prestart", "createRuntime", "createContainer", "poststart", "poststop"):
        hooks[kind] = [{"path": str(script), "args": ["hook.sh", kind]}]
    bundle.config["hooks"] = hooks
    bundle.set_args("true")
    runtime.ok("create", "--bundle", bundle.path, "h1")
    runtime.ok("start", "h1")
    runtime.wait_status("h1", "stopped")
    runtime.ok("delete", "h1")
    kinds = [l.split()[0] for l in out.read_text().splitlines()]
    assert kinds == ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]


def test_failing_hook_fails_create_and_cleans_up(runtime, bundle):
    bundle.config["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}
    bundle.save()
    p = runtime.run("create", "--bundle", bundle.path, "h2")
    assert p.returncode == 1 and "createRuntime" in p.stderr
    assert runtime.ids() == []


def test_hook_timeout(runtime, bundle):
    bundle.config["hooks"] = {"prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]}
    bundle.save()
    t = time.time()
    p = runtime.run("create", "--bundle", bundle.path, "h3")
    assert p.returncode == 1 and "timed out" in p.stderr
    assert time.time() - t < 20
    assert runtime.ids() == []


def test_each_hook_runs_in_its_namespace_with_the_state_on_stdin(runtime, bundle, tmp_path):
    """spec#52-61: prestart/createRuntime/poststart/poststop in the runtime namespace,
    createContainer/startContainer in the container's (mount namespace checked), each with
    the state JSON (id, pid, bundle) on stdin and exactly the args/env given."""
    out = tmp_path / "where.log"
    script = "#!/bin/sh\nstate=$(cat)\necho \"$1 $(readlink /proc/self/ns/mnt) $HOOKENV $state\" >> {}\n"
    host_hook = tmp_path / "hook.sh"
    host_hook.write_text(script.format(out))
    host_hook.chmod(0o755)
    # startContainer resolves in the container: put a copy in the rootfs writing to a bind mount
    (bundle.rootfs / "hook.sh").write_text(script.format("/hooklog/where.log"))
    (bundle.rootfs / "hook.sh").chmod(0o755)
    (bundle.rootfs / "hooklog").mkdir()
    bundle.config["mounts"].append({"destination": "/hooklog", "type": "bind", "source": str(tmp_path),
                                    "options": ["rbind", "rw"]})
    hooks = {}
    for kind in ("prestart", "createRuntime", "createContainer", "poststart", "poststop"):
        hooks[kind] = [{"path": str(host_hook), "args": ["hook.sh", kind], "env": ["HOOKENV=set"]}]
    hooks["startContainer"] = [{"path": "/hook.sh", "args": ["hook.sh", "startContainer"],
                                "env": ["HOOKENV=set"]}]
    bundle.config["hooks"] = hooks
    bundle.set_args("sleep", "1")
    runtime.ok("create", "--bundle", bundle.path, "h4")
    init = runtime.state("h4")["pid"]
    container_mnt = os.readlink(f"/proc/{init}/ns/mnt")
    runtime.ok("start", "h4")
    runtime.wait_status("h4", "stopped")
    runtime.ok("delete", "h4")
    rows = {}
    for line in out.read_text().splitlines():
        kind, mnt, env, state = line.split(" ", 3)
        rows[kind] = (mnt, env, json.loads(state))
    host_mnt = os.readlink("/proc/self/ns/mnt")
    assert set(rows) == {"prestart", "createRuntime", "createContainer", "startContainer",
                         "poststart", "poststop"}
    for kind in ("prestart", "createRuntime", "poststart", "poststop"):
        assert rows[kind][0] == host_mnt, kind
    for kind in ("createContainer", "startContainer"):
        assert rows[kind][0] == container_mnt, kind
    for kind, (_, env, state) in rows.items():
        assert env == "set"
        assert state["id"] == "h4" and state["bundle"] == str(bundle.path)
        if kind != "poststop":
            assert state["pid"] == init, kind


def test_namespace_path_that_is_a_fifo_does_not_hang(runtime, bundle, tmp_path):
    fifo = tmp_path / "ns-fifo"
    os.mkfifo(fifo)
    for n in bundle.linux["namespaces"]:
        if n["type"] == "ipc":
            n["path"] = str(fifo)
    bundle.save()
    p = runtime.run("create", "--bundle", bundle.path, "fifons", timeout=30)
    assert p.returncode == 1 and "linux.namespaces" in p.stderr
    assert runtime.ids() == []


def test_run_whose_start_fails_leaves_nothing(runtime, bundle):
    """A failing startContainer hook fails `start` (spec#27); `run` then removes the
    container, as runc does, instead of leaving a stopped one behind."""
    (bundle.rootfs / "fail.sh").write_text("#!/bin/sh\nexit 3\n")
    (bundle.rootfs / "fail.sh").chmod(0o755)
    bundle.config["hooks"] = {"startContainer": [{"path": "/fail.sh"}]}
    bundle.set_args("sh", "-c", "echo should-not-run")
    for mode in ((), ("--detach",)):
        p = runtime.run("run", *mode, "--bundle", bundle.path, "rf1")
        assert p.returncode == 1, p.stderr
        assert "startContainer" in p.stderr
        assert "should-not-run" not in p.stdout
        assert runtime.ids() == []
