"""sysctl, seccomp, masked/readonly paths, mount label, personality, netDevices, intelRdt,
memoryPolicy (spec#133-149, 158)."""
from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import threading
from pathlib import Path

from ..catalogue import check
from ..harness import Fail, Skip, mount_at, need, parse_mountinfo, status_field, tail

EPERM, EACCES, EOPNOTSUPP = 1, 13, 95


def _sh(ctx, script: str, mutate=None) -> tuple[int, str, str]:
    b = ctx.bundle(["/bin/sh", "-c", script])
    if mutate:
        mutate(b)
    b.save()
    rc, out, err, _ = ctx.run(b)
    return rc, out, err


@check(133, fails_on="a runtime that ignores linux.sysctl")
def sysctl(ctx):
    rc, out, err = _sh(ctx, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced",
                       lambda b: b.linux.update(sysctl={"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}))
    need(rc == 0, f"container failed: {tail(err)}")
    need(out.split() == ["1", "1"], f"sysctl values inside: {out.split()}")


def _seccomp(**kw) -> dict:
    sc = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]}
    sc.update(kw)
    return sc


def _sys(ctx, seccomp: dict) -> dict:
    d = ctx.probe(mutate=lambda b: b.linux.update(seccomp=seccomp), args=["/probe", "sys"])
    return d


def _seccomp_error(ctx, seccomp: dict, what: str):
    b = ctx.bundle(["/bin/true"])
    b.linux["seccomp"] = seccomp
    b.save()
    ctx.expect_error(b, what)


@check(134, fails_on="runc 1.1.5 (accepts a filter without defaultAction)")
def seccomp_basic(ctx):
    d = _sys(ctx, _seccomp(syscalls=[{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                      "errnoRet": EOPNOTSUPP}]))
    need(d["mkdir"] == EOPNOTSUPP, f"mkdir gave errno {d['mkdir']}, the filter says {EOPNOTSUPP}")
    need(d["kill0"] == 0 and d["getcwd"] == 0, f"other syscalls were affected: {d}")
    sc = _seccomp()
    del sc["defaultAction"]
    _seccomp_error(ctx, sc, "seccomp without defaultAction")
    _seccomp_error(ctx, _seccomp(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_NOT_AN_ACTION"}]),
                   "an unknown seccomp action")


@check(135, fails_on="runc 1.1.5 (accepts errnoRet on SCMP_ACT_ALLOW)")
def seccomp_errno_rules(ctx):
    d = _sys(ctx, _seccomp(syscalls=[{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]))
    need(d["mkdir"] == EPERM, f"SCMP_ACT_ERRNO without errnoRet gave errno {d['mkdir']}, not EPERM")
    _seccomp_error(ctx, _seccomp(syscalls=[{"names": ["mkdir"], "action": "SCMP_ACT_ALLOW", "errnoRet": 5}]),
                   "errnoRet on SCMP_ACT_ALLOW")
    _seccomp_error(ctx, _seccomp(defaultErrnoRet=5), "defaultErrnoRet with defaultAction SCMP_ACT_ALLOW")


@check(136, fails_on="runc 1.1.5 (accepts a rule with an empty names list)")
def seccomp_args(ctx):
    d = _sys(ctx, _seccomp(syscalls=[{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": EACCES,
                                      "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]},
                                     {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": EACCES,
                                      "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]))
    need(d["kill0"] == EACCES, f"kill(pid, 0) gave errno {d['kill0']}; the arg filter says EACCES")
    need(d["personality_query"] == 0, "personality(0xffffffff) was blocked by a filter on arg0 == 8")
    _seccomp_error(ctx, _seccomp(syscalls=[{"names": [], "action": "SCMP_ACT_ERRNO"}]), "a syscall rule with no names")


@check(137, fails_on="crun 1.8.1 (accepts listenerMetadata without listenerPath)")
def seccomp_metadata_without_path(ctx):
    _seccomp_error(ctx, _seccomp(listenerMetadata="orphan",
                                 syscalls=[{"names": ["acct"], "action": "SCMP_ACT_NOTIFY"}]),
                   "listenerMetadata without listenerPath")


def _listen(ctx):
    path = str(ctx.tmpdir("seccomp") / "listener.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    srv.settimeout(20)
    ctx.on_cleanup(srv.close)
    box: dict = {"conns": []}

    def serve():
        try:
            while len(box["conns"]) < 3:
                conn, _ = srv.accept()
                with conn:
                    conn.settimeout(10)
                    data, fds, eof = b"", [], False
                    while True:
                        fa = array.array("i")
                        msg, anc, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(16 * fa.itemsize))
                        for level, typ, raw in anc:
                            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                                fa.frombytes(raw[:len(raw) - len(raw) % fa.itemsize])
                                fds.append(list(fa))
                        if not msg:
                            eof = True
                            break
                        data += msg
                    for group in fds:
                        for fd in group:
                            os.close(fd)
                    box["conns"].append({"data": data, "fds": fds, "eof": eof})
                srv.settimeout(1.5)
        except Exception as e:  # noqa: BLE001 - timeouts end the loop
            box.setdefault("end", repr(e))
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return path, box, t


def _notify_run(ctx):
    path, box, t = _listen(ctx)
    b = ctx.bundle(["/bin/sh", "-c", "echo notify-ran"])
    b.linux["seccomp"] = _seccomp(listenerPath=path, listenerMetadata="cf-meta",
                                  syscalls=[{"names": ["acct"], "action": "SCMP_ACT_NOTIFY"}])
    b.save()
    rc, out, err, c = ctx.run(b)
    t.join(25)
    need(rc == 0 and "notify-ran" in out, f"container with a seccomp listener failed: {tail(err)}")
    need(box["conns"], f"nothing connected to listenerPath ({box.get('end')})")
    return box, c


@check(138, fails_on="a runtime that keeps the listener connection open or sends twice")
def seccomp_listener_protocol(ctx):
    box, _ = _notify_run(ctx)
    need(len(box["conns"]) == 1, f"{len(box['conns'])} connections to the listener; one container, one connection")
    need(box["conns"][0]["eof"], "the runtime did not close the connection after sending the state")


@check(139, fails_on="a runtime that sends the fd without the JSON state")
def seccomp_listener_payload(ctx):
    box, c = _notify_run(ctx)
    conn = box["conns"][0]
    try:
        st = json.loads(conn["data"])
    except ValueError:
        raise Fail(f"the listener payload is not JSON: {conn['data'][:200]!r}")
    missing = [k for k in ("ociVersion", "fds", "pid", "metadata", "state") if k not in st]
    need(not missing, f"the container process state lacks {missing}")
    need(st["metadata"] == "cf-meta", f"metadata {st['metadata']!r}")
    need(isinstance(st["fds"], list) and "seccompFd" in st["fds"], f"fds names {st['fds']!r}")
    need(conn["fds"] and len(conn["fds"][0]) == len(st["fds"]), f"SCM_RIGHTS carried {conn['fds']}, fds names {st['fds']}")
    need(len(conn["fds"]) == 1, "descriptors were sent in more than one message")
    need(st["state"].get("id") == c.id, f"state.id {st['state'].get('id')!r}")


@check(140, fails_on="a runtime that ignores maskedPaths")
def masked_paths(ctx):
    def m(b):
        (b.rootfs / "etc/secret").write_text("top secret\n")
        (b.rootfs / "etc/secretdir").mkdir()
        (b.rootfs / "etc/secretdir/file").write_text("x")
        b.linux["maskedPaths"] = ["/etc/secret", "/etc/secretdir", "/proc/timer_list"]
    rc, out, err = _sh(ctx, "echo F:$(cat /etc/secret 2>/dev/null | wc -c); echo D:$(ls -A /etc/secretdir | wc -l);"
                            " echo P:$(cat /proc/timer_list 2>/dev/null | wc -c)", m)
    need(rc == 0, f"container failed: {tail(err)}")
    need(out.split() == ["F:0", "D:0", "P:0"], f"masked paths still readable: {out.split()} (bytes/entries)")


@check(141, fails_on="a runtime that ignores readonlyPaths")
def readonly_paths(ctx):
    def m(b):
        (b.rootfs / "etc/rodir").mkdir()
        (b.rootfs / "etc/rwdir").mkdir()
        b.linux["readonlyPaths"] = ["/etc/rodir"]
    rc, out, err = _sh(ctx, "touch /etc/rodir/x 2>/dev/null && echo RO-WRITTEN; touch /etc/rwdir/x && echo RW-OK", m)
    need("RW-OK" in out, f"control write failed: {tail(err)}")
    need("RO-WRITTEN" not in out, "a readonlyPaths directory was writable")


@check(142)
def mount_label(ctx):
    lsm = Path("/sys/kernel/security/lsm")
    if not (lsm.exists() and "selinux" in lsm.read_text()):
        raise Skip("SELinux is not enabled on this host")
    d = ctx.probe(mutate=lambda b: b.linux.update(mountLabel="system_u:object_r:container_file_t:s0:c1,c2"))
    m = mount_at(parse_mountinfo(d["mountinfo"]), "/dev")
    need(m and any("c1,c2" in o for o in m["super"]), "mountLabel not applied to /dev")


@check(143, fails_on="runc 1.1.5 (ignores personality)")
def personality(ctx):
    d = ctx.probe(mutate=lambda b: b.linux.update(personality={"domain": "LINUX32"}))
    need(d["machine"] in ("i686", "i386"), f"LINUX32 personality, but uname machine is {d['machine']!r}")
    d = ctx.probe(mutate=lambda b: b.linux.update(personality={"domain": "LINUX"}))
    need(d["machine"] == "x86_64", f"LINUX personality, machine {d['machine']!r}")


# ------------------------------------------------------------------ netDevices (runner has its own netns)

def _dummy(ctx, name="cfveth0") -> str:
    """A veth pair in the runner's private netns; `name` is the end the container gets."""
    from ..harness import wait_for

    def add():
        # a previous check's pair may still be on its way out (netns teardown is asynchronous)
        for n in (name, name + "p"):
            subprocess.run(["ip", "link", "del", n], capture_output=True, timeout=10)
        return subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
                              capture_output=True, timeout=10).returncode == 0
    if not wait_for(add, timeout=10, interval=0.2):
        raise Fail(f"could not make the veth pair {name}/{name}p in the runner's network namespace")
    subprocess.run(["ip", "addr", "add", "10.77.0.1/24", "dev", name], check=True, timeout=10)
    ctx.on_cleanup(lambda: subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10))
    return name


def _host_has(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists() or subprocess.run(
        ["ip", "link", "show", name], capture_output=True, timeout=10).returncode == 0


def _netdev_run(ctx, target="eth7"):
    dev = _dummy(ctx)
    rc, out, err = _sh(ctx, f"cat /proc/net/dev; ip -o addr show dev {target}; ip -o link show dev {target}",
                       lambda b: b.linux.update(netDevices={dev: {"name": target}}))
    need(rc == 0, f"container with netDevices failed: {tail(err)}")
    return out


@check(144, fails_on="runc 1.1.5 (no netDevices)")
def netdev_moved(ctx):
    out = _netdev_run(ctx)
    need("eth7:" in out, "interface eth7 (host cfveth0) is not in the container")


@check(145, fails_on="a runtime that renames over an existing interface")
def netdev_name_clash(ctx):
    dev = _dummy(ctx)
    b = ctx.bundle(["/bin/true"])
    b.linux["netDevices"] = {dev: {"name": "lo"}}
    b.save()
    ctx.expect_error(b, "a netDevices target name (lo) that already exists in the container netns")
    need(_host_has(dev), "after the failed create the interface is gone from the host")


@check(146, fails_on="runc 1.1.5 (no netDevices)")
def netdev_addresses(ctx):
    out = _netdev_run(ctx)
    need("10.77.0.1/24" in out, f"the permanent address 10.77.0.1/24 was not kept: {tail(out)}")


@check(147, fails_on="runc 1.1.5 (no netDevices)")
def netdev_up(ctx):
    out = _netdev_run(ctx)
    line = next((ln for ln in out.splitlines() if "eth7" in ln and "<" in ln and "link/" in ln), "")
    flags = line.split("<", 1)[1].split(">", 1)[0].split(",") if "<" in line else []
    need("UP" in flags, f"eth7 is not up in the container: {line or out[-200:]}")


@check(148, fails_on="a runtime that moves the interface back to the host on delete")
def netdev_not_moved_back(ctx):
    out = _netdev_run(ctx)
    need("eth7:" in out, "netDevices not supported: the interface was never moved")
    need(not _host_has("eth7") and not _host_has("cfveth0"),
         "after delete the interface is back in the runtime's network namespace")


@check(149, fails_on="a runtime that ignores intelRdt")
def intel_rdt_needs_resctrl(ctx):
    mounted = any(m["fstype"] == "resctrl" for m in parse_mountinfo(Path("/proc/self/mountinfo").read_text()))
    if mounted:
        raise Skip("resctrl is mounted here; this check covers the host without it")
    b = ctx.bundle(["/bin/true"])
    b.linux["intelRdt"] = {"closID": "cf", "l3CacheSchema": "L3:0=f"}
    b.save()
    ctx.expect_error(b, "intelRdt without a mounted resctrl filesystem")


@check(158, fails_on="runc 1.1.5 (no memoryPolicy)")
def memory_policy(ctx):
    d = ctx.probe(mutate=lambda b: b.linux.update(memoryPolicy={"mode": "MPOL_BIND", "nodes": "0"}))
    need(d["mempolicy"] == 2 and d["mempolicy_nodes"] == 1,
         f"get_mempolicy gives mode {d['mempolicy']} nodes {d['mempolicy_nodes']}, expected MPOL_BIND (2) on node 0")
    b = ctx.bundle(["/bin/true"])
    b.linux["memoryPolicy"] = {"mode": "MPOL_NOT_A_MODE"}
    b.save()
    ctx.expect_error(b, "memoryPolicy mode MPOL_NOT_A_MODE")
