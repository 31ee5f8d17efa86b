"""Hooks (spec#24-27, 29, 31, 52-61).

A host shell script records, per hook call: its stdin (the state), its mount namespace, the
command line of the state's pid, and appends its name to a sequence file.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..catalogue import check
from ..harness import need, pid_alive, tail, wait_for

SCRIPT = r"""#!/bin/sh
# args: NAME [EXIT [SLEEP]]
d="$(dirname "$0")"
cat > "$d/$1.state"
readlink /proc/self/ns/mnt > "$d/$1.mnt"
pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$d/$1.state")
[ -n "$pid" ] && tr '\0' ' ' < /proc/$pid/cmdline > "$d/$1.cmdline" 2>/dev/null
[ -n "$pid" ] && readlink /proc/$pid/ns/mnt > "$d/$1.pidmnt" 2>/dev/null
echo "$@" > "$d/$1.args"
echo "$HOOKENV" > "$d/$1.env"
echo "$1" >> "$d/seq"
[ -n "$3" ] && exec sleep "$3"
exit "${2:-0}"
"""


class Hooks:
    def __init__(self, ctx):
        self.dir = ctx.tmpdir("hooks")
        self.script = self.dir / "hook.sh"
        self.script.write_text(SCRIPT)
        os.chmod(self.script, 0o755)

    def add(self, b, kind, name, exit_code=0, sleep=None, timeout=None, env=None):
        args = ["hook.sh", name, str(exit_code)] + ([str(sleep)] if sleep else [])
        b.hook(kind, str(self.script), args=args, env=env, timeout=timeout)

    def seq(self) -> list[str]:
        p = self.dir / "seq"
        return p.read_text().split() if p.exists() else []

    def read(self, name, what) -> str | None:
        p = self.dir / f"{name}.{what}"
        return p.read_text().strip() if p.exists() else None

    def state(self, name) -> dict | None:
        s = self.read(name, "state")
        try:
            return json.loads(s) if s else None
        except ValueError:
            return None


def _my_mnt() -> str:
    return os.readlink("/proc/self/ns/mnt")


def _failing_create_hook(ctx, kind):
    h = Hooks(ctx)
    b = ctx.bundle(["/bin/sh", "-c", "touch /tmp/ran"])
    h.add(b, kind, "bad", exit_code=1)
    with ctx.container(b) as c:
        p = c.create(check=False)
        need("bad" in h.seq(), f"the {kind} hook did not run")
        need(p.returncode != 0, f"create succeeded although a {kind} hook failed")
        st = c.state_or_none()
        need(st is None or st.get("status") == "stopped",
             f"a failed {kind} hook left the container {st and st.get('status')}")
        hs = h.state("bad") or {}
        pid = hs.get("pid")
        if pid and kind != "createContainer":  # createContainer sees the pid of the container namespace
            need(wait_for(lambda: not pid_alive(pid), 5), f"the container process {pid} survived the failed hook")
        need(not (b.rootfs / "tmp/ran").exists(), "the user program ran")


@check(24, fails_on="a runtime that ignores a failing prestart hook")
def prestart_failure(ctx):
    _failing_create_hook(ctx, "prestart")


@check(25, fails_on="a runtime that ignores a failing createRuntime hook")
def create_runtime_failure(ctx):
    _failing_create_hook(ctx, "createRuntime")


@check(26, fails_on="a runtime that ignores a failing createContainer hook")
def create_container_failure(ctx):
    _failing_create_hook(ctx, "createContainer")


@check(27, fails_on="runc 1.1.5 (start succeeds although startContainer failed)")
def start_container_failure(ctx):
    b = ctx.bundle(["/bin/sh", "-c", "touch /tmp/ran; sleep 30"])
    (b.rootfs / "fail-hook.sh").write_text("#!/bin/sh\ntouch /tmp/hook-ran\nexit 1\n")
    os.chmod(b.rootfs / "fail-hook.sh", 0o755)
    b.hook("startContainer", "/fail-hook.sh")
    with ctx.container(b) as c:
        c.create()
        pid = c.state()["pid"]
        p = c.start(check=False)
        need(wait_for(lambda: (b.rootfs / "tmp/hook-ran").exists(), 5), "the startContainer hook did not run")
        need(p.returncode != 0, "start succeeded although the startContainer hook failed")
        time.sleep(0.2)
        need(not (b.rootfs / "tmp/ran").exists(), "the user program ran after its startContainer hook failed")
        need(wait_for(lambda: not pid_alive(pid), 5), "the container process survived the failed hook")


@check(29, fails_on="runc 1.1.5 (runs poststart during create, so create fails instead of start)")
def poststart_failure(ctx):
    h = Hooks(ctx)
    b = ctx.bundle(["/bin/sleep", "30"])
    h.add(b, "poststart", "bad", exit_code=1)
    with ctx.container(b) as c:
        c.create()
        pid = c.state()["pid"]
        p = c.start(check=False)
        need("bad" in h.seq(), "the poststart hook did not run")
        need(p.returncode != 0, "start succeeded although a poststart hook failed")
        need(wait_for(lambda: not pid_alive(pid), 10), "the container was not stopped after the poststart failure")


@check(31, fails_on="runc 1.1.5 (stops at the first failing poststop hook)")
def poststop_failure_warns(ctx):
    h = Hooks(ctx)
    b = ctx.bundle(["/bin/true"])
    h.add(b, "poststop", "first", exit_code=1)
    h.add(b, "poststop", "second")
    with ctx.container(b) as c:
        c.create()
        c.start()
        c.wait_status("stopped")
        p = c.delete(check=False)
        need(p.returncode == 0, f"delete failed because a poststop hook failed: {tail(p.stderr)}")
        need(h.seq() == ["first", "second"], f"poststop hooks ran: {h.seq()}")
        need(c.state_or_none() is None, "the container still exists")


@check(52, fails_on="a runtime that runs a relative hook path or drops hook args/env")
def hook_path_args_env(ctx):
    h = Hooks(ctx)
    b = ctx.bundle(["/bin/true"])
    h.add(b, "createRuntime", "argenv", env=["HOOKENV=from-config"])
    with ctx.container(b) as c:
        c.create()
        need(h.read("argenv", "args") == "argenv 0", f"hook args: {h.read('argenv', 'args')!r}")
        need(h.read("argenv", "env") == "from-config", f"hook env: {h.read('argenv', 'env')!r}")
    b2 = ctx.bundle(["/bin/true"])
    b2.hook("createRuntime", "hook.sh", args=["hook.sh", "rel"])
    ctx.expect_error(b2, "a relative hook path")


@check(53, fails_on="a runtime without hook timeouts (create would block for the hook's 30 s)")
def hook_timeout(ctx):
    h = Hooks(ctx)
    b = ctx.bundle(["/bin/true"])
    h.add(b, "createRuntime", "slow", sleep=30, timeout=1)
    with ctx.container(b) as c:
        t0 = time.monotonic()
        p = c.create(check=False, timeout=25)
        took = time.monotonic() - t0
        need(p.returncode != 0, "create succeeded although its hook ran past its timeout")
        need(took < 20, f"the hook was not aborted after its 1 s timeout ({took:.0f} s)")
    b2 = ctx.bundle(["/bin/true"])
    h.add(b2, "createRuntime", "zero", timeout=0)
    ctx.expect_error(b2, "a hook timeout of 0")


@check(54, fails_on="a runtime that runs hooks of one kind in parallel or reverse order")
def hook_order(ctx):
    h = Hooks(ctx)
    b = ctx.bundle(["/bin/true"])
    for name in ("one", "two", "three"):
        h.add(b, "createRuntime", name)
    for name in ("four", "five"):
        h.add(b, "poststart", name)
    with ctx.container(b) as c:
        c.create()
        c.start()
        c.wait_status("stopped")
        c.delete()
    need(h.seq() == ["one", "two", "three", "four", "five"], f"hooks ran in order {h.seq()}")


@check(55, fails_on="a runtime that gives hooks an empty stdin")
def hook_stdin_state(ctx):
    h = Hooks(ctx)
    b = ctx.bundle(["/bin/true"])
    h.add(b, "createRuntime", "s")
    with ctx.container(b) as c:
        c.create()
        st = h.state("s")
        need(st is not None, f"the hook's stdin was not a JSON state: {h.read('s', 'state')!r}")
        for k in ("ociVersion", "id", "status", "bundle", "pid"):
            need(k in st, f"the state on the hook's stdin lacks {k}: {st}")
        need(st["id"] == c.id and st["bundle"] == str(b.path), f"the hook got the wrong state: {st}")


@check(56, fails_on="a runtime that runs prestart in the container's mount namespace or after createRuntime")
def prestart_when_where(ctx):
    h = Hooks(ctx)
    b = ctx.bundle(["/bin/true"])
    h.add(b, "createRuntime", "cr")
    h.add(b, "prestart", "pre")
    with ctx.container(b) as c:
        c.create()
        need(h.seq() == ["pre", "cr"], f"hooks after create: {h.seq()} (prestart must run during create, first)")
        need(h.read("pre", "mnt") == _my_mnt(), "prestart did not run in the runtime's mount namespace")


@check(57, fails_on="a runtime that runs createRuntime inside the container")
def create_runtime_when_where(ctx):
    h = Hooks(ctx)
    b = ctx.bundle(["/bin/true"])
    h.add(b, "createRuntime", "cr")
    with ctx.container(b) as c:
        c.create()
        need(h.seq() == ["cr"], "createRuntime did not run during create")
        need(h.read("cr", "mnt") == _my_mnt(), "createRuntime did not run in the runtime's mount namespace")
        need(h.read("cr", "pidmnt") not in (None, _my_mnt()),
             "when createRuntime ran, the container had no mount namespace of its own yet")


@check(58, fails_on="a runtime that runs createContainer in the runtime namespace")
def create_container_when_where(ctx):
    h = Hooks(ctx)
    b = ctx.bundle(["/bin/true"])
    h.add(b, "createRuntime", "cr")
    h.add(b, "createContainer", "cc")
    with ctx.container(b) as c:
        c.create()
        need(h.seq() == ["cr", "cc"], f"hooks after create: {h.seq()}")
        cmnt = os.readlink(f"/proc/{c.state()['pid']}/ns/mnt")
        need(h.read("cc", "mnt") == cmnt, "createContainer did not run in the container's mount namespace "
             "(or ran after pivot_root, where its host path would not resolve)")


@check(59, fails_on="a runtime that resolves the startContainer path on the host (the script exists only in the rootfs)")
def start_container_when_where(ctx):
    b = ctx.bundle(["/bin/sh", "-c", "touch /tmp/program; sleep 1"])
    (b.rootfs / "in-container-hook.sh").write_text(
        "#!/bin/sh\ncat > /tmp/sc.state\n[ -e /tmp/program ] && echo after > /tmp/sc.when || echo before > /tmp/sc.when\n"
        "readlink /proc/self/ns/mnt > /tmp/sc.mnt\n")
    os.chmod(b.rootfs / "in-container-hook.sh", 0o755)
    b.hook("startContainer", "/in-container-hook.sh")
    with ctx.container(b) as c:
        c.create()
        need(not (b.rootfs / "tmp/sc.when").exists(), "startContainer ran during create")
        cmnt = os.readlink(f"/proc/{c.state()['pid']}/ns/mnt")
        c.start()
        need(wait_for(lambda: (b.rootfs / "tmp/sc.when").exists(), 10), "startContainer did not run (from the rootfs)")
        need((b.rootfs / "tmp/sc.when").read_text().strip() == "before", "startContainer ran after the program")
        need((b.rootfs / "tmp/sc.mnt").read_text().strip() == cmnt, "startContainer not in the container mount ns")


@check(60, fails_on="runc 1.1.5 (poststart runs during create)")
def poststart_when_where(ctx):
    h = Hooks(ctx)
    b = ctx.bundle(["/bin/sleep", "30"])
    h.add(b, "poststart", "ps")
    with ctx.container(b) as c:
        c.create()
        need(h.seq() == [], "poststart ran during create")
        c.start()
        need(h.seq() == ["ps"], "poststart had not run when start returned")
        need(h.read("ps", "mnt") == _my_mnt(), "poststart did not run in the runtime namespace")
        cmd = h.read("ps", "cmdline") or ""
        need(cmd.startswith("/bin/sleep"), f"when poststart ran, the container process was {cmd!r}, "
             "not the user program")


@check(61, fails_on="a runtime that runs poststop at kill, or after delete returned")
def poststop_when_where(ctx):
    h = Hooks(ctx)
    b = ctx.bundle(["/bin/sleep", "30"])
    h.add(b, "poststop", "stop")
    with ctx.container(b) as c:
        c.create()
        c.start()
        c.kill("KILL")
        c.wait_status("stopped")
        need(h.seq() == [], "poststop ran before delete")
        c.delete()
        need(h.seq() == ["stop"], "poststop had not run when delete returned")
        need(h.read("stop", "mnt") == _my_mnt(), "poststop did not run in the runtime namespace")
        st = h.state("stop")
        need(st and st.get("id") == c.id, f"poststop got no state: {h.read('stop', 'state')!r}")
