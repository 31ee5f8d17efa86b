"""Lifecycle and operations (spec#21-23, 28, 30, 32-51)."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from ..catalogue import check
from ..harness import CGROUP_ROOT, Fail, Skip, need, ns_inode, parse_mountinfo, pid_alive, tail, wait_for


def _host_mounts() -> set[str]:
    return {m["mountpoint"] for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text())}


@check(21, fails_on="all runtimes when root.path does not exist (create fails as required)")
def create_builds_or_fails(ctx):
    b = ctx.bundle(["/bin/true"])
    b.config["root"]["path"] = str(b.path / "no-such-rootfs")
    b.save()
    ctx.expect_error(b, "a root.path that does not exist")


@check(22, 39, fails_on="a runtime that execs the user program during create")
def create_makes_resources_not_program(ctx):
    b = ctx.bundle(["/bin/sh", "-c", "touch /tmp/program-ran"])
    b.mount(destination="/mnt/made-at-create", type="tmpfs", source="tmpfs", options=["size=1m"])
    with ctx.container(b) as c:
        c.create()
        st = c.state()
        need(st.get("status") == "created" and st.get("pid"), f"after create: {st}")
        pid = st["pid"]
        for kind in ("mnt", "uts", "ipc", "pid", "net"):
            need(ns_inode(pid, kind) != ns_inode("self", kind), f"no new {kind} namespace after create")
        mounts = [m["mountpoint"] for m in parse_mountinfo(Path(f"/proc/{pid}/mountinfo").read_text())]
        need("/mnt/made-at-create" in mounts, "the configured tmpfs is not mounted after create")
        need(not (b.rootfs / "tmp/program-ran").exists(), "the user program ran during create")


@check(23, fails_on="a runtime that rereads config.json at start")
def config_edit_after_create(ctx):
    b = ctx.bundle(["/bin/sh", "-c", "echo original > /tmp/which"])
    with ctx.container(b) as c:
        c.create()
        b.process["args"] = ["/bin/sh", "-c", "echo edited > /tmp/which"]
        b.config["hostname"] = "edited"
        b.save()
        c.start()
        need(wait_for(lambda: (b.rootfs / "tmp/which").exists(), 10), "the program never ran")
        got = (b.rootfs / "tmp/which").read_text().strip()
        need(got == "original", f"start ran the edited config.json ({got})")


@check(28, 43, fails_on="a runtime whose start does not exec process.args")
def start_runs_program(ctx):
    b = ctx.bundle(["/bin/sh", "-c", "echo $0-$1 > /tmp/started", "arg0", "arg1"])
    with ctx.container(b) as c:
        c.create()
        c.start()
        need(wait_for(lambda: (b.rootfs / "tmp/started").exists(), 10), "start did not run the user program")
        need((b.rootfs / "tmp/started").read_text().strip() == "arg0-arg1", "the program got the wrong args")


def _cgroup_of(pid: int) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        return None
    return None


@check(30, 50, fails_on="a runtime whose delete leaves the state, the process, the cgroup or mounts behind")
def delete_undoes_create(ctx):
    before = _host_mounts()
    b = ctx.bundle(["/bin/sleep", "60"])
    b.linux["cgroupsPath"] = ctx.cgroup_path("del")
    b.save()
    with ctx.container(b) as c:
        c.create()
        pid = c.state()["pid"]
        cg = _cgroup_of(pid)
        c.start()
        c.kill("KILL")
        c.wait_status("stopped")
        c.delete()
        need(c.state_or_none() is None, "state still answers after delete")
        need(wait_for(lambda: not pid_alive(pid), 5), f"container process {pid} still alive after delete")
        if cg and cg != "/" and cg != _cgroup_of(os.getpid()):
            need(not Path(CGROUP_ROOT + cg).exists(), f"cgroup {cg} still exists after delete")
        left = _host_mounts() - before
        need(not left, f"mounts left in the runtime's namespace: {sorted(left)}")


@check(32, fails_on="a runtime whose state with no id exits 0")
def state_needs_id(ctx):
    p = ctx.rt.cmd("state")
    need(p.returncode != 0, "state without an id succeeded")


@check(33, fails_on="a runtime whose state of an unknown id exits 0")
def state_unknown(ctx):
    p = ctx.rt.cmd("state", "cf-does-not-exist")
    need(p.returncode != 0, "state of an unknown container succeeded")


@check(34, fails_on="a runtime printing anything but the State JSON")
def state_prints_state(ctx):
    b = ctx.bundle(["/bin/sleep", "10"])
    with ctx.container(b) as c:
        c.create()
        st = c.state()
        missing = [k for k in ("ociVersion", "id", "status", "pid", "bundle") if k not in st]
        need(not missing, f"state lacks {missing}")


@check(35, fails_on="a runtime that creates a container without an id or from a missing bundle")
def create_needs_bundle_and_id(ctx):
    b = ctx.bundle(["/bin/true"])
    with open(os.devnull, "wb") as dn, open(b.path / "create.err", "wb") as err:
        p = ctx.rt.cmd("create", "--bundle", str(b.path), stdout=dn, stderr=err)
    need(p.returncode != 0, "create without an id succeeded")
    with ctx.container(None) as c:
        p = c.create(str("--bundle"), str(ctx.workdir / "no-such-bundle"), check=False, bundle_arg=False)
        need(p.returncode != 0, "create with a bundle path that does not exist succeeded")
        need(c.state_or_none() is None, "a failed create left a container")


@check(36, fails_on="a runtime accepting ids with a slash or '..'")
def create_id_unique_valid(ctx):
    b = ctx.bundle(["/bin/sleep", "10"])
    with ctx.container(b) as c:
        c.create()
        b2 = ctx.bundle(["/bin/true"])
        with ctx.container(b2, cid=c.id) as dup:
            dup.cleanup = lambda: None
            p = dup.create(check=False)
            need(p.returncode != 0, "create with a duplicate id succeeded")
        need(c.state().get("bundle") == str(b.path), "the duplicate create changed the first container")
    for bad in ("../escape", "a/b", ".."):
        b3 = ctx.bundle(["/bin/true"])
        with ctx.container(b3, cid=bad) as c:
            c.cleanup = lambda: None  # never ask a runtime to force-delete "..": it might remove the parent
            p = c.create(check=False)
            escaped = (ctx.state_parent / "escape").exists()
            if p.returncode == 0 and bad != "..":
                ctx.rt.cmd("delete", "--force", bad, timeout=30)
            need(p.returncode != 0, f"create accepted the invalid id {bad!r}")
            need(not escaped, "an invalid id wrote outside the state root")


@check(37, fails_on="a runtime whose create makes nothing")
def create_new_container(ctx):
    b = ctx.bundle(["/bin/sleep", "10"])
    with ctx.container(b) as c:
        need(c.state_or_none() is None, "the id existed before create")
        c.create()
        st = c.state()
        need(st["status"] == "created" and pid_alive(st["pid"]), f"no live created container: {st}")


@check(38, fails_on="a runtime that sets hostname or mounts only at start")
def create_applies_config(ctx):
    b = ctx.bundle(["/bin/true"])
    b.config["hostname"] = "applied-at-create"
    b.mount(destination="/mnt/x", type="tmpfs", source="tmpfs", options=["size=1m", "mode=711"])
    with ctx.container(b) as c:
        c.create()
        pid = c.state()["pid"]
        p = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True, timeout=10)
        need(p.stdout.strip() == "applied-at-create", f"hostname after create is {p.stdout.strip()!r}")
        ms = parse_mountinfo(Path(f"/proc/{pid}/mountinfo").read_text())
        need(any(m["mountpoint"] == "/mnt/x" and "mode=711" in m["super"] for m in ms),
             "the tmpfs at /mnt/x is not there after create")


@check(40, fails_on="all runtimes are seen to reject this; a runtime that ignores a sysctl it cannot set")
def create_fails_when_unappliable(ctx):
    b = ctx.bundle(["/bin/true"])
    b.linux["sysctl"] = {"net.ipv4.no_such_sysctl_conformance": "1"}
    b.save()
    ctx.expect_error(b, "a sysctl that does not exist")


@check(41, fails_on="a runtime whose start with no id exits 0")
def start_needs_id(ctx):
    need(ctx.rt.cmd("start").returncode != 0, "start without an id succeeded")


@check(42, fails_on="a runtime that restarts a running or stopped container")
def start_only_created(ctx):
    b = ctx.bundle(["/bin/sh", "-c", "echo x >> /tmp/starts; sleep 30"])
    with ctx.container(b) as c:
        c.create()
        c.start()
        st = c.wait_status("running")
        p = c.start(check=False)
        need(p.returncode != 0, "start of a running container succeeded")
        st2 = c.state()
        need(st2["status"] == "running" and st2["pid"] == st["pid"], "second start changed the container")
        c.kill("KILL")
        c.wait_status("stopped")
        p = c.start(check=False)
        need(p.returncode != 0, "start of a stopped container succeeded")
        need(c.state()["status"] == "stopped", "start changed a stopped container")
        lines = (b.rootfs / "tmp/starts").read_text().split()
        need(len(lines) == 1, f"the program ran {len(lines)} times")


@check(44, 62, fails_on="a runtime that starts a container whose config has no process")
def start_needs_process(ctx):
    b = ctx.bundle(["/bin/sh", "-c", "touch /tmp/ran"])
    del b.config["process"]
    b.save()
    with ctx.container(b) as c:
        p = c.create(check=False)
        if p.returncode == 0:
            s = c.start(check=False)
            need(s.returncode != 0, "start succeeded although the config has no process")
        need(not (b.rootfs / "tmp/ran").exists(), "something ran without a process")


@check(45, fails_on="a runtime whose kill with no id exits 0")
def kill_needs_id(ctx):
    need(ctx.rt.cmd("kill").returncode != 0, "kill without an id succeeded")


@check(46, fails_on="a runtime whose kill of a stopped container exits 0")
def kill_only_live(ctx):
    b = ctx.bundle(["/bin/true"])
    with ctx.container(b) as c:
        c.create()
        c.start()
        c.wait_status("stopped")
        p = c.kill("KILL", check=False)
        need(p.returncode != 0, "kill of a stopped container succeeded")
        need(c.state()["status"] == "stopped", "kill changed a stopped container")


@check(47, fails_on="a runtime that always sends SIGKILL/SIGTERM")
def kill_sends_signal(ctx):
    b = ctx.bundle(["/bin/sh", "-c", "trap 'echo usr2 > /tmp/got; exit 0' USR2; touch /tmp/ready;"
                                     " while true; do sleep 0.1; done"])
    with ctx.container(b) as c:
        c.create()
        c.start()
        need(wait_for(lambda: (b.rootfs / "tmp/ready").exists(), 10), "container never ready")
        c.kill("USR2")
        need(wait_for(lambda: (b.rootfs / "tmp/got").exists(), 10), "the container did not receive SIGUSR2")
        c.wait_status("stopped")
        # numeric signals and SIG-prefixed names too
    b2 = ctx.bundle(["/bin/sleep", "30"])
    with ctx.container(b2) as c:
        c.create()
        c.start()
        c.wait_status("running")
        c.kill("SIGKILL")
        c.wait_status("stopped")
        c.delete()


@check(48, fails_on="a runtime whose delete with no id exits 0")
def delete_needs_id(ctx):
    need(ctx.rt.cmd("delete").returncode != 0, "delete without an id succeeded")


@check(49, fails_on="a runtime whose delete (without --force) removes a running container")
def delete_only_stopped(ctx):
    b = ctx.bundle(["/bin/sleep", "30"])
    with ctx.container(b) as c:
        c.create()
        c.start()
        st = c.wait_status("running")
        p = c.delete(check=False)
        need(p.returncode != 0, "delete of a running container succeeded")
        st2 = c.state_or_none()
        need(st2 and st2["status"] == "running" and pid_alive(st["pid"]), "delete changed a running container")


@check(51, fails_on="a runtime that removes a joined namespace's holder or bind-mount sources")
def delete_keeps_foreign(ctx):
    holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "60"])
    ctx.on_cleanup(lambda: (holder.kill(), holder.wait(5)))
    need(wait_for(lambda: ns_inode(holder.pid, "net") != ns_inode("self", "net"), 5), "helper netns not ready")
    netns = ns_inode(holder.pid, "net")
    data = ctx.tmpdir("shared-data")
    (data / "keep").write_text("precious")
    b = ctx.bundle(["/bin/true"])
    b.linux["namespaces"] = [n for n in b.linux["namespaces"] if n["type"] != "network"]
    b.linux["namespaces"].append({"type": "network", "path": f"/proc/{holder.pid}/ns/net"})
    b.mount(destination="/mnt/data", type="none", source=str(data), options=["rbind", "rw"])
    with ctx.container(b) as c:
        c.create()
        c.start()
        c.wait_status("stopped")
        c.delete()
    need(holder.poll() is None and ns_inode(holder.pid, "net") == netns, "the joined network namespace is gone")
    need((data / "keep").read_text() == "precious", "the bind-mount source was changed")
    with ctx.container(b, cid=c.id) as c2:
        c2.create()
        c2.delete(force=True)
