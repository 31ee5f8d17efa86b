"""process: terminal, cwd, args/env, user, umask, oom, NNP, LSM, scheduler, ioprio, affinity,
rlimits, capabilities (spec#63-82)."""
from __future__ import annotations

import array
import json
import os
import select
import socket
import threading
import time
from pathlib import Path

from ..catalogue import check
from ..harness import (Fail, Skip, cap_mask, cap_names, caps_from_status, mount_at, need, parse_mountinfo,
                       status_field, tail, wait_for)


@check(63, fails_on="a runtime that errs on consoleSize without a terminal")
def console_size_ignored(ctx):
    d = ctx.probe(mutate=lambda b: b.process.update(consoleSize={"height": 24, "width": 80}, terminal=False))
    need(d["isatty"] == [0, 0, 0], f"no terminal was asked for, but the process has one: {d['isatty']}")


def _recv_console(sock: socket.socket, box: dict) -> None:
    try:
        sock.settimeout(20)
        conn, _ = sock.accept()
        with conn:
            fds = array.array("i")
            msg, anc, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(4 * fds.itemsize))
            for level, typ, data in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            box["fds"] = list(fds)
    except Exception as e:  # noqa: BLE001
        box["error"] = repr(e)


@check(64, fails_on="a runtime that passes the caller's stdio instead of a pty, or has no /dev/console")
def terminal_pty(ctx):
    b = ctx.bundle(["/probe"])
    b.process["terminal"] = True
    b.save()
    sock_path = str(ctx.tmpdir("console") / "sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)
    ctx.on_cleanup(srv.close)
    box: dict = {}
    t = threading.Thread(target=_recv_console, args=(srv, box), daemon=True)
    t.start()
    with ctx.container(b) as c:
        c.create("--console-socket", sock_path)
        t.join(20)
        need(box.get("fds"), f"no pty master was sent to the console socket ({box.get('error')})")
        master = box["fds"][0]
        ctx.on_cleanup(lambda: os.close(master))
        c.start()
        data = b""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and b"}\r\n" not in data and b"}\n" not in data:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
        text = data.decode(errors="replace").replace("\r\n", "\n")
        line = next((ln for ln in text.splitlines() if ln.startswith("{")), None)
        need(line, f"nothing readable from the pty master: {text[:200]!r}")
        d = json.loads(line)
        need(d["isatty"] == [1, 1, 1], f"stdio of the process are not all the pty: isatty={d['isatty']}")
        need((d["ttyname0"] or "").startswith("/dev/pts/"), f"ttyname(0) = {d['ttyname0']!r}")
        console = mount_at(parse_mountinfo(d["mountinfo"]), "/dev/console")
        need(console is not None, "/dev/console is not a bind mount of the pty")
        need(console["fstype"] == "devpts", f"/dev/console is a {console['fstype']} mount, not the devpts pty")


@check(65, fails_on="a runtime that ignores cwd or accepts a relative one")
def cwd_applied(ctx):
    d = ctx.probe(mutate=lambda b: b.process.update(cwd="/tmp"))
    need(d["cwd"] == "/tmp", f"cwd is {d['cwd']!r}, not /tmp")
    b = ctx.bundle(["/probe"])
    b.process["cwd"] = "tmp"
    b.save()
    ctx.expect_error(b, "a relative process.cwd")


@check(66, fails_on="a runtime that needs args[0] to be a full path or drops env")
def args_env(ctx):
    def m(b):
        b.process["args"] = ["probe", "extra"]
        b.process["env"] = ["PATH=/nowhere:/", "CF_VAR=with spaces=and=equals", "EMPTY="]
    d = ctx.probe(mutate=m)
    need("CF_VAR=with spaces=and=equals" in d["env"] and "EMPTY=" in d["env"], f"env: {d['env']}")
    need("PATH=/nowhere:/" in d["env"], "PATH not passed")


@check(67, fails_on="a runtime that ignores additionalGids")
def user_ids(ctx):
    d = ctx.probe(mutate=lambda b: b.process.update(user={"uid": 1000, "gid": 1001, "additionalGids": [5, 6, 1001]}))
    need((d["uid"], d["euid"]) == (1000, 1000), f"uid {d['uid']}/{d['euid']}")
    need((d["gid"], d["egid"]) == (1001, 1001), f"gid {d['gid']}/{d['egid']}")
    need(set(d["groups"]) == {5, 6, 1001}, f"supplementary groups {d['groups']}")


@check(68, fails_on="runc 1.1.5 (always sets umask 0022 when process.user.umask is unset)")
def umask_default_kept(ctx):
    d = ctx.probe(mutate=lambda b: b.process["user"].update(umask=0o077))
    need(d["umask"] == 0o077, f"umask {oct(d['umask'])} although 0077 was configured")
    old = os.umask(0o027)
    try:
        d = ctx.probe()
    finally:
        os.umask(old)
    need(d["umask"] == 0o027, f"umask unset in the config, the caller's 0027 became {oct(d['umask'])}")


@check(69, fails_on="a runtime that resets oom_score_adj when oomScoreAdj is unset")
def oom_score_adj(ctx):
    d = ctx.probe(mutate=lambda b: b.process.update(oomScoreAdj=123))
    need(d["oom_score_adj"].strip() == "123", f"oom_score_adj {d['oom_score_adj'].strip()} not 123")
    p = Path("/proc/self/oom_score_adj")
    old = p.read_text().strip()
    p.write_text("37")
    try:
        d = ctx.probe()
    finally:
        p.write_text(old)
    need(d["oom_score_adj"].strip() == "37", f"oomScoreAdj unset, the caller's 37 became {d['oom_score_adj'].strip()}")


@check(70, fails_on="a runtime that ignores noNewPrivileges")
def no_new_privs(ctx):
    d = ctx.probe(mutate=lambda b: b.process.update(noNewPrivileges=True))
    need(d["no_new_privs"] == 1, "noNewPrivileges: true, but no_new_privs is off")
    d = ctx.probe(mutate=lambda b: b.process.update(noNewPrivileges=False))
    need(d["no_new_privs"] == 0, "noNewPrivileges: false, but no_new_privs is on")


@check(71)
def lsm_labels(ctx):
    lsms = Path("/sys/kernel/security/lsm").read_text() if Path("/sys/kernel/security/lsm").exists() else ""
    if "apparmor" in lsms:
        d = ctx.probe(mutate=lambda b: b.process.update(apparmorProfile="unconfined"))
        need("unconfined" in (d["attr_current"] or ""), f"AppArmor label {d['attr_current']!r}")
        return "apparmor"
    raise Skip("the host kernel has neither AppArmor nor SELinux enabled")


@check(72, fails_on="runc 1.1.5 (no process.scheduler support)")
def scheduler(ctx):
    d = ctx.probe(mutate=lambda b: b.process.update(scheduler={"policy": "SCHED_BATCH", "nice": 7}))
    need(d["sched_policy"] == 3, f"policy {d['sched_policy']}, SCHED_BATCH is 3")
    need(d["nice"] == 7, f"nice {d['nice']}, not 7")
    need(d["sched_priority"] == 0, f"unset priority should be 0, is {d['sched_priority']}")


@check(73, fails_on="runc 1.1.5 (no process.ioPriority support)")
def io_priority(ctx):
    d = ctx.probe(mutate=lambda b: b.process.update(ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 6}))
    need(d["ioprio"] == (2 << 13) | 6, f"ioprio_get = {d['ioprio']}, expected class BE (2) priority 6")


@check(74, fails_on="runc 1.1.5 (ignores execCPUAffinity for exec)")
def exec_cpu_affinity(ctx):
    if len(os.sched_getaffinity(0)) < 2:
        raise Skip("needs at least 2 CPUs")
    cpus = sorted(os.sched_getaffinity(0))
    b = ctx.bundle(["/probe", "sleep", "30"])
    b.process["execCPUAffinity"] = {"initial": str(cpus[-1]), "final": str(cpus[-1])}
    b.save()
    with ctx.container(b) as c:
        c.create()
        pid = c.state()["pid"]
        init_aff = sorted(os.sched_getaffinity(pid))
        need(init_aff == cpus, f"the init process got affinity {init_aff}: execCPUAffinity is not for init")
        c.start()
        p = c.op("exec", c.id, "/probe", check=False, timeout=30)
        need(p.returncode == 0, f"exec failed: {tail(p.stderr)}")
        d = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("{")))
        need(d["affinity"] == [cpus[-1]], f"an exec'd process has affinity {d['affinity']}, not [{cpus[-1]}]")


@check(75, fails_on="a runtime that ignores unknown rlimit types")
def rlimit_unknown_type(ctx):
    b = ctx.bundle(["/bin/true"])
    b.process["rlimits"].append({"type": "RLIMIT_NOT_A_LIMIT", "soft": 1, "hard": 1})
    b.save()
    ctx.expect_error(b, "rlimit type RLIMIT_NOT_A_LIMIT")


RLIMITS = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 768},
           {"type": "RLIMIT_NPROC", "soft": 3000, "hard": 4000},
           {"type": "RLIMIT_CORE", "soft": 1024, "hard": 4096},
           {"type": "RLIMIT_MSGQUEUE", "soft": 8192, "hard": 16384}]


def _rlimit_probe(ctx):
    return ctx.probe(mutate=lambda b: b.process.update(rlimits=[dict(r) for r in RLIMITS]))["rlimits"]


@check(77, fails_on="a runtime that ignores rlimits")
def rlimits_soft(ctx):
    got = _rlimit_probe(ctx)
    bad = {r["type"]: got[r["type"]][0] for r in RLIMITS if got[r["type"]][0] != r["soft"]}
    need(not bad, f"soft limits differ: {bad}")


@check(78, fails_on="a runtime that ignores rlimits")
def rlimits_hard(ctx):
    got = _rlimit_probe(ctx)
    bad = {r["type"]: got[r["type"]][1] for r in RLIMITS if got[r["type"]][1] != r["hard"]}
    need(not bad, f"hard limits differ: {bad}")


@check(79, fails_on="a runtime that lets the last of two RLIMIT_NOFILE entries win")
def rlimit_duplicate(ctx):
    b = ctx.bundle(["/bin/true"])
    b.process["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 100},
                            {"type": "RLIMIT_NOFILE", "soft": 200, "hard": 200}]
    b.save()
    ctx.expect_error(b, "RLIMIT_NOFILE listed twice")


@check(80, fails_on="a runtime that drops an unknown capability silently")
def capability_warning(ctx):
    b = ctx.bundle(["/bin/true"])
    for k in ("bounding", "permitted", "effective"):
        b.process["capabilities"][k].append("CAP_NOT_A_REAL_CAPABILITY")
    b.save()
    rc, out, err, _ = ctx.run(b)
    need(rc == 0, f"the container failed instead of warning: {tail(err)}")
    need("CAP_NOT_A_REAL_CAPABILITY" in err, "no warning names CAP_NOT_A_REAL_CAPABILITY (stderr and --log)")


@check(81, fails_on="runc 1.1.5 (capset fails: CAP_SYS_RESOURCE is not in this "
       "host's bounding set)")
def capability_not_grantable(ctx):
    from ..harness import host_caps
    if host_caps()["bounding"] & cap_mask(["CAP_SYS_RESOURCE"]):
        raise Skip("the runner holds CAP_SYS_RESOURCE, so every capability can be granted")
    b = ctx.bundle(["/bin/sh", "-c", "echo still-ran"])
    for k in ("bounding", "permitted", "effective"):
        b.process["capabilities"][k].append("CAP_SYS_RESOURCE")
    b.save()
    rc, out, err, _ = ctx.run(b)
    need(rc == 0 and "still-ran" in out, f"the container failed for an ungrantable capability: exit {rc}: {tail(err)}")


@check(82, fails_on="a runtime that leaves the caller's capabilities or ignores ambient")
def capability_sets(ctx):
    bset = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID"]
    small = ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]
    want = {"bounding": bset, "effective": small, "permitted": small, "inheritable": small, "ambient": small}

    def m(b):
        b.process["user"] = {"uid": 1000, "gid": 1000}
        b.process["capabilities"] = {k: list(v) for k, v in want.items()}
        b.process["noNewPrivileges"] = False
    got = caps_from_status(ctx.probe(mutate=m)["status"])
    bad = {k: cap_names(got[k]) for k in want if got[k] != cap_mask(want[k])}
    need(not bad, f"non-root process: capability sets differ from the config: {bad}")
    root = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

    def m2(b):
        b.process["capabilities"] = {"bounding": root, "effective": root, "permitted": root}
    got = caps_from_status(ctx.probe(mutate=m2)["status"])
    want2 = {"bounding": root, "effective": root, "permitted": root, "inheritable": [], "ambient": []}
    bad = {k: cap_names(got[k]) for k in want2 if got[k] != cap_mask(want2[k])}
    need(not bad, f"root process: capability sets differ from the config: {bad}")
