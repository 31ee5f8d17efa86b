"""Terminals, exec, ps, features and spec, for real (issue 3)."""
import json
import os
import select
import socket
import subprocess
import time

import pytest

pytestmark = pytest.mark.root


from helpers.console import console_listener as _console_listener  # noqa: E402
from helpers.console import read_until as _read_until  # noqa: E402
from helpers.console import recv_master as _recv_master  # noqa: E402


def test_tty_through_console_socket(runtime, bundle, tmp_path):
    bundle.process["terminal"] = True
    bundle.process["consoleSize"] = {"height": 30, "width": 100}
    bundle.set_args("sh")
    srv, path = _console_listener(tmp_path)
    try:
        runtime.ok("create", "--bundle", bundle.path, "--console-socket", path, "tty1")
        msg, fds = _recv_master(srv)
        assert len(fds) == 1 and msg                   # one fd, a name payload, like runc
        master = fds[0]
        assert os.readlink(f"/proc/self/fd/{master}").endswith("ptmx")
        runtime.ok("start", "tty1")
        os.write(master, b"tty; stty size; echo hel''lo-$((6*7))\n")
        out = _read_until(master, b"hello-42")
        assert b"hello-42" in out
        assert b"/dev/pts/0" in out or b"/dev/console" in out
        assert b"30 100" in out
        os.write(master, b"exit 5\n")
        runtime.wait_status("tty1", "stopped")
        os.close(master)
    finally:
        srv.close()
    runtime.ok("delete", "tty1")


def test_terminal_without_console_socket_on_create_is_an_error(runtime, bundle):
    bundle.process["terminal"] = True
    bundle.save()
    p = runtime.run("create", "--bundle", bundle.path, "tty2")
    assert p.returncode == 1 and "console socket" in p.stderr
    assert runtime.ids() == []


def test_console_socket_that_is_not_a_socket(runtime, bundle, tmp_path):
    bundle.process["terminal"] = True
    bundle.save()
    f = tmp_path / "notasocket"
    f.write_text("")
    p = runtime.run("create", "--bundle", bundle.path, "--console-socket", str(f), "tty3")
    assert p.returncode == 1 and "not a socket" in p.stderr
    assert runtime.ids() == []


def test_exec_detach_pid_file_is_reaped_by_the_subreaper(runtime, bundle, tmp_path):
    """conmon/shim style: `exec --detach --pid-file P --process F`, then the caller
    (a subreaper, as pytest is here) waits for the pid and gets its exit code."""
    bundle.set_args("sleep", "60")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "ex1")
    proc = dict(bundle.process, args=["sh", "-c", "echo from-exec > /tmp/mark; exit 7"], cwd="/")
    pf = tmp_path / "proc.json"
    pf.write_text(json.dumps(proc))
    pidf = tmp_path / "exec.pid"
    runtime.ok("exec", "--pid-file", str(pidf), "--process", str(pf), "--detach", "ex1")
    pid = int(pidf.read_text())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7
    check = runtime.run("exec", "ex1", "cat", "/tmp/mark")
    assert check.returncode == 0 and check.stdout == "from-exec\n"
    runtime.ok("delete", "--force", "ex1")


def test_exec_joins_every_namespace_and_the_cgroup(runtime, bundle):
    bundle.config["hostname"] = "exechost"
    bundle.set_args("sleep", "60")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "ex2")
    init = runtime.state("ex2")["pid"]
    p = runtime.run("exec", "ex2", "sh", "-c", "hostname; for n in pid net mnt ipc uts cgroup; do "
                    "readlink /proc/self/ns/$n; done; cat /proc/self/cgroup")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "exechost"
    for link, name in zip(lines[1:7], ("pid", "net", "mnt", "ipc", "uts", "cgroup")):
        assert link == os.readlink(f"/proc/{init}/ns/{name}"), name
    assert "0::/" in lines[7:]          # inside its cgroup namespace, at the container's cgroup
    runtime.ok("delete", "--force", "ex2")


def test_exec_flags_user_env_cwd_and_exit_code(runtime, bundle):
    bundle.set_args("sleep", "60")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "ex3")
    p = runtime.run("exec", "--user", "1000:1000", "--env", "A=b", "--cwd", "/tmp", "ex3",
                    "sh", "-c", "id -u; id -g; echo $A; pwd; exit 4")
    assert p.returncode == 4
    assert p.stdout.split() == ["1000", "1000", "b", "/tmp"]
    runtime.ok("delete", "--force", "ex3")


def test_failing_exec_exits_255_with_runc_wording(runtime, bundle):
    bundle.set_args("sleep", "60")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "ex4")
    p = runtime.run("exec", "ex4", "/nonexistent")
    assert p.returncode == 255
    assert "no such file or directory" in p.stderr
    runtime.ok("delete", "--force", "ex4")


def test_exec_in_stopped_container_fails(runtime, bundle):
    bundle.set_args("true")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "ex5")
    runtime.wait_status("ex5", "stopped")
    p = runtime.run("exec", "ex5", "true")
    assert p.returncode != 0 and "stopped" in p.stderr
    runtime.ok("delete", "ex5")


def test_exec_process_cannot_open_runtime_exe(runtime, bundle):
    """CVE-2019-5736 class: while pyoci exec joins the container, a process inside tries
    in a loop to open /proc/<pid>/exe of every other process; it must never get python."""
    bundle.set_args("sh", "-c", "while :; do for p in /proc/[0-9]*; do "
                    "[ \"$p\" = /proc/$$ ] && continue; "
                    "t=$(readlink $p/exe 2>/dev/null); case \"$t\" in *python*) "
                    "if cat $p/exe >/dev/null 2>&1; then echo OPENED $t >> /tmp/found; fi;; esac; done; done")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "ex6")
    for _ in range(15):
        runtime.run("exec", "ex6", "true")
    p = runtime.run("exec", "ex6", "cat", "/tmp/found")
    assert "OPENED" not in p.stdout
    runtime.ok("delete", "--force", "ex6")


def test_ps_json_and_table(runtime, bundle):
    bundle.set_args("sh", "-c", "sleep 60 & sleep 61; true")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "ps1")
    deadline = time.time() + 5
    while True:
        p = runtime.ok("ps", "--format", "json", "ps1")
        pids = json.loads(p.stdout)
        if len(pids) >= 3 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert p.stderr == ""
    assert runtime.state("ps1")["pid"] in pids and len(pids) == 3
    table = runtime.ok("ps", "ps1").stdout.splitlines()
    assert "PID" in table[0] and len(table) == 4
    runtime.ok("delete", "--force", "ps1")


def test_features_and_spec_validate_against_upstream_schemas(runtime, tmp_path):
    from pyoci import spec
    doc = json.loads(runtime.ok("features").stdout)
    spec.validate_features(doc)
    _upstream_validate("features-schema.json", doc)
    runtime.ok("spec", "--bundle", str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    _upstream_validate("config-schema.json", cfg)
    (tmp_path / "config.json").unlink()
    runtime.ok("spec", "--rootless", "--bundle", str(tmp_path))
    _upstream_validate("config-schema.json", json.loads((tmp_path / "config.json").read_text()))


def _upstream_validate(name, doc):
    from helpers.upstream import validate
    validate(name, doc)


def test_pause_resume_and_state(runtime, bundle):
    bundle.set_args("sleep", "60")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "pa1")
    runtime.ok("pause", "pa1")
    assert runtime.state("pa1")["status"] == "paused"
    pid = runtime.state("pa1")["pid"]
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().rsplit(") ", 1)[1][0] in "DS"   # frozen tasks sleep in the freezer
    again = runtime.run("pause", "pa1")
    assert again.returncode == 1
    runtime.ok("resume", "pa1")
    assert runtime.state("pa1")["status"] == "running"
    runtime.ok("delete", "--force", "pa1")


def test_kill_all_signals_every_process(runtime, bundle):
    bundle.set_args("sh", "-c", "sleep 60 & sleep 61; true")
    runtime.ok("run", "--detach", "--bundle", bundle.path, "ka1")
    time.sleep(0.2)
    runtime.ok("kill", "--all", "ka1", "KILL")
    assert runtime.wait_status("ka1", "stopped")["status"] == "stopped"
    assert json.loads(runtime.ok("ps", "--format", "json", "ka1").stdout) == []
    runtime.ok("delete", "ka1")


def test_foreground_run_with_a_terminal_proxies_it(runtime, bundle):
    """`pyoci run` of a terminal container without --console-socket, from a terminal:
    pyoci proxies its own terminal to the container's pty (raw mode, restored after)."""
    bundle.process["terminal"] = True
    bundle.set_args("sh", "-c", "tty; read x; echo got-$x; exit 6")
    master, slave = os.openpty()
    try:
        p = subprocess.Popen(runtime.argv("run", "--bundle", bundle.path, "fg1"),
                             stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        out = _read_until(master, b"/dev/pts/0")
        assert b"/dev/pts/0" in out
        os.write(master, b"hello\r")
        out += _read_until(master, b"got-")
        out += _read_until(master, b"\n", timeout=5)
        assert p.wait(timeout=30) == 6, out
        assert b"got-hello" in out
    finally:
        os.close(master)
    assert runtime.ids() == []
