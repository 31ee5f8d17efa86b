"""Root filesystem stage for real: a forked child unshares a mount (and pid) namespace, runs
rootfs.prepare/pivot/finish on a copy of the busybox rootfs, inspects the result from inside
and reports back as JSON through a pipe. The host (this test's mount namespace) stays clean."""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import traceback

import pytest

from pyoci import mounts, rootfs
from pyoci.errors import StageError
from pyoci.linux import libc
from pyoci.specgen import default_config

pytestmark = pytest.mark.root


# --- harness ------------------------------------------------------------------------------------
def run_child(rp, inspect, pre=None, pidns=True, userns=False, pre_host=None, parent_mounts=None,
              stages=("prepare", "pivot", "finish")):
    """Run the rootfs stages in a forked child (new mount ns, new pid ns with a second fork),
    then inspect() from inside; returns inspect()'s JSON result or raises ChildError with
    the child's error. `pre()` runs in the final mount ns before prepare (to build sources);
    with userns the child first runs `pre_host()`, then enters a user namespace (uid/gid
    0-65535 mapped to themselves by this process) and mount and ipc namespaces it owns;
    then `parent_mounts(child_pid)` may make the {index: fd} mounts passed to prepare()."""
    r, w = os.pipe()
    psock, csock = socket.socketpair()
    sync_r, sync_w = os.pipe()     # child -> parent: "map me"
    go_r, go_w = os.pipe()         # parent -> child: "mapped"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        status = 0
        try:
            for fd in (r, sync_r, go_w):
                os.close(fd)
            psock.close()
            libc.unshare(libc.CLONE_NEWNS)
            libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
            if pre_host:
                pre_host()
            if userns:
                libc.unshare(libc.CLONE_NEWUSER)
                os.write(sync_w, b"u")
                if os.read(go_r, 1) != b"k":
                    raise RuntimeError("the parent did not write the id maps")
                libc.unshare(libc.CLONE_NEWNS | libc.CLONE_NEWIPC)    # ipc: for mqueue
                msg, fds, _, _ = socket.recv_fds(csock, 4096, 16)
                mount_fds = {int(k): fd for k, fd in zip(json.loads(msg or b"[]"), fds)}
            else:
                mount_fds = None
            csock.close()
            os.close(sync_w)
            os.close(go_r)
            if pidns:
                libc.unshare(libc.CLONE_NEWPID)
                pid2 = os.fork()
                if pid2:
                    os.close(w)
                    _, st = os.waitpid(pid2, 0)
                    os._exit(os.waitstatus_to_exitcode(st))
            if pre:
                pre()
            if "prepare" in stages:
                rootfs.prepare(rp, mount_fds=mount_fds)
            if "pivot" in stages:
                rootfs.pivot(rp)
            if "finish" in stages:
                rootfs.finish(rp)
            out = {"ok": True, "result": inspect()}
        except BaseException as e:
            out = {"ok": False, "type": type(e).__name__, "error": str(e),
                   "stage": getattr(e, "stage", None), "errno": getattr(e, "errno", None),
                   "trace": "".join(traceback.format_exception(e))}
        try:
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(status)
    for fd in (w, sync_w, go_r):
        os.close(fd)
    csock.close()
    try:
        if os.read(sync_r, 1) == b"u":
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write("0 0 65536\n")
            os.write(go_w, b"k")
            fds = parent_mounts(pid) if parent_mounts else {}
            try:
                socket.send_fds(psock, [json.dumps(list(fds)).encode()], list(fds.values()))
            finally:
                for fd in fds.values():
                    os.close(fd)
    finally:
        os.close(sync_r)
        os.close(go_w)
        psock.close()
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, st = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(st) == 0
    out = json.loads(b"".join(chunks) or b'{"ok": false, "error": "no report"}')
    if not out["ok"]:
        raise ChildError(out)
    return out["result"]


class ChildError(RuntimeError):
    def __init__(self, out):
        self.out = out
        super().__init__(f"{out.get('type')}: {out.get('error')}\n{out.get('trace', '')}")


def mountinfo():
    """[{mp, opts, fstype, source, super, optional}] of the calling process, in order."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            x = line.split()
            sep = x.index("-")
            out.append({"mp": x[4].replace("\\040", " "), "root": x[3], "opts": x[5].split(","),
                        "optional": x[6:sep], "fstype": x[sep + 1], "source": x[sep + 2],
                        "super": x[sep + 3].split(",")})
    return out


def by_mp(mi, mp):
    found = [m for m in mi if m["mp"] == mp]
    assert found, f"{mp} is not a mount point: {[m['mp'] for m in mi]}"
    return found[-1]


def attempt(fn):
    try:
        return {"ok": fn()}
    except OSError as e:
        return {"errno": e.errno}


def dev_info(path):
    st = os.lstat(path)
    return {"mode": st.st_mode, "rdev": [os.major(st.st_rdev), os.minor(st.st_rdev)],
            "uid": st.st_uid, "gid": st.st_gid}


@pytest.fixture
def bundle_dir(tmp_path, busybox_rootfs):
    b = tmp_path / "bundle"
    b.mkdir()
    shutil.copytree(busybox_rootfs, b / "rootfs", symlinks=True)
    return b


def plan(bundle_dir, cfg_mounts=None, **kw):
    cfg = default_config(["sh"], terminal=False)
    cfg["root"]["readonly"] = kw.pop("readonly", False)
    if cfg_mounts is not None:
        # a /proc first, so that the child can read its mountinfo after pivot_root
        cfg["mounts"] = ([{"destination": "/proc", "type": "proc", "source": "proc"}]
                         if not any(m["destination"] == "/proc" for m in cfg_mounts) else []) + cfg_mounts
    for key in ("maskedPaths", "readonlyPaths", "devices", "rootfsPropagation"):
        if key in kw:
            cfg["linux"][key] = kw.pop(key)
    return mounts.build_rootfs_plan(cfg, str(bundle_dir), cgroup2=True, **kw)


def host_mounts():
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


@pytest.fixture(autouse=True)
def host_mounts_unchanged():
    before = host_mounts()
    yield
    assert host_mounts() == before


# --- tests --------------------------------------------------------------------------------------
def inspect_default():
    mi = mountinfo()
    res = {"mi": mi, "cwd": os.getcwd(), "devs": {}, "links": {}}
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        res["devs"][name] = dev_info(f"/dev/{name}")
    for name in ("ptmx", "fd", "stdin", "stdout", "stderr"):
        res["links"][name] = os.readlink(f"/dev/{name}")
    res["core"] = os.path.lexists("/dev/core")
    res["keys"] = open("/proc/keys", "rb").read().decode()
    res["firmware"] = os.listdir("/sys/firmware")
    res["write_firmware"] = attempt(lambda: open("/sys/firmware/x", "w").close())
    res["sysrq"] = attempt(lambda: open("/proc/sysrq-trigger", "w").write("h"))
    res["proc_sys"] = attempt(lambda: open("/proc/sys/kernel/hostname", "w").write("x"))
    res["root_write"] = attempt(lambda: open("/newfile", "w").close())
    res["tmp_write"] = attempt(lambda: open("/dev/shm/x", "w").close())
    res["etc"] = sorted(os.listdir("/etc"))
    res["pid"] = os.getpid()
    res["null_write"] = attempt(lambda: open("/dev/null", "w").write("ok"))
    return res


@pytest.mark.parametrize("no_pivot", [False, True], ids=["pivot_root", "no_pivot"])
def test_default_config(bundle_dir, no_pivot):
    rp = plan(bundle_dir, readonly=True, no_pivot=no_pivot)
    res = run_child(rp, inspect_default)
    mi = res["mi"]
    assert res["cwd"] == "/" and res["pid"] == 1
    root = by_mp(mi, "/")
    assert root["root"] == str(bundle_dir / "rootfs") and "ro" in root["opts"]
    # mounts in config order (spec#87), nothing from the host left visible
    order = [m["mp"] for m in mi if m["mp"] in [x["destination"] for x in default_config()["mounts"]]]
    assert order == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    assert not any(m["mp"].startswith(str(bundle_dir)) for m in mi)
    assert by_mp(mi, "/proc")["fstype"] == "proc"
    dev = by_mp(mi, "/dev")
    assert dev["fstype"] == "tmpfs" and "nosuid" in dev["opts"]
    assert "size=65536k" in dev["super"] and "mode=755" in dev["super"]
    assert "relatime" not in dev["opts"] and "noatime" not in dev["opts"]          # strictatime
    pts = by_mp(mi, "/dev/pts")
    assert pts["fstype"] == "devpts" and {"nosuid", "noexec"} <= set(pts["opts"])
    assert {"gid=5", "mode=620", "ptmxmode=666"} <= set(pts["super"])
    shm = by_mp(mi, "/dev/shm")
    assert {"nosuid", "nodev", "noexec"} <= set(shm["opts"]) and "rw" in shm["opts"]
    assert by_mp(mi, "/dev/mqueue")["fstype"] == "mqueue"
    sys_ = by_mp(mi, "/sys")
    assert sys_["fstype"] == "sysfs" and {"ro", "nosuid", "nodev", "noexec"} <= set(sys_["opts"])
    cg = by_mp(mi, "/sys/fs/cgroup")
    assert cg["fstype"] == "cgroup2" and {"ro", "nosuid", "nodev", "noexec", "relatime"} <= set(cg["opts"])
    # default devices (spec#114)
    want = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}
    for name, (ma, mi_) in want.items():
        d = res["devs"][name]
        assert stat.S_ISCHR(d["mode"]) and d["rdev"] == [ma, mi_], name
        assert stat.S_IMODE(d["mode"]) == 0o666 and (d["uid"], d["gid"]) == (0, 0)
    assert res["null_write"] == {"ok": 2}
    # /dev/ptmx and the std symlinks (spec#114, spec#115)
    assert res["links"] == {"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
                            "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
    assert res["core"] == os.path.exists("/proc/kcore")
    # maskedPaths: a file reads empty, a directory is an empty read-only tmpfs (spec#140)
    assert res["keys"] == ""
    assert by_mp(mi, "/proc/keys")["root"] == "/null"
    assert res["firmware"] == [] and res["write_firmware"]["errno"] == errno.EROFS
    # readonlyPaths (spec#141)
    assert res["proc_sys"] == {"errno": errno.EROFS}
    if os.path.exists("/proc/sysrq-trigger"):
        assert res["sysrq"] == {"errno": errno.EROFS}
    for p in ("/proc/sys", "/proc/sysrq-trigger", "/proc/bus", "/proc/irq"):
        if os.path.exists(p):
            assert "ro" in by_mp(mi, p)["opts"], p
    # root.readonly (spec#86), the submounts stay writable
    assert res["root_write"] == {"errno": errno.EROFS}
    assert res["tmp_write"] == {"ok": None}
    assert "passwd" in res["etc"]
    # the host's copy of the rootfs was not touched: /dev there is still empty
    assert os.listdir(bundle_dir / "rootfs" / "dev") == []


def test_mount_options_flags(bundle_dir):
    opts = {
        "/m/ro": ["ro", "nosuid", "nodev", "noexec", "noatime"],
        "/m/rw": ["ro", "rw", "nosuid", "suid", "relatime", "nodiratime"],
        "/m/strict": ["strictatime"],
        "/m/sync": ["sync", "dirsync", "lazytime", "silent", "loud"],
        "/m/async": ["sync", "async", "nolazytime", "lazytime", "nolazytime"],
        "/m/nosym": ["nosymfollow"],
        "/m/sym": ["nosymfollow", "symfollow", "atime", "diratime", "dev", "exec", "defaults"],
        "/m/data": ["size=2m", "mode=0711", "uid=12", "nr_inodes=100"],
        "/m/mand": ["mand", "nomand", "iversion", "noiversion"],
        "/m/mand2": ["mand"],
    }
    cfg_mounts = [{"destination": "/m", "type": "tmpfs", "source": "tmpfs"}]
    cfg_mounts += [{"destination": d, "type": "tmpfs", "source": "tmpfs", "options": o} for d, o in opts.items()]
    cfg_mounts.append({"destination": "/m/remount", "type": "tmpfs", "source": "tmpfs"})
    cfg_mounts.append({"destination": "/m/remount", "type": "tmpfs", "source": "tmpfs",
                       "options": ["remount", "ro", "nosuid"]})
    rp = plan(bundle_dir, cfg_mounts, maskedPaths=[], readonlyPaths=[])

    def inspect():
        st = os.stat("/m/data")
        vfs = os.statvfs("/m/data")
        return {"mi": mountinfo(), "data": [stat.S_IMODE(st.st_mode), st.st_uid, vfs.f_blocks * vfs.f_frsize,
                                            vfs.f_files]}

    res = run_child(rp, inspect)
    mi = res["mi"]
    assert [m["mp"] for m in mi if m["mp"].startswith("/m")] == (
        ["/m"] + list(opts) + ["/m/remount"])
    o = {mp: set(by_mp(mi, mp)["opts"]) | set(by_mp(mi, mp)["super"]) for mp in list(opts) + ["/m/remount"]}
    assert {"ro", "nosuid", "nodev", "noexec", "noatime"} <= o["/m/ro"]
    assert "rw" in o["/m/rw"] and "nodiratime" in o["/m/rw"] and "relatime" in o["/m/rw"]
    assert not {"nosuid", "ro"} & set(by_mp(mi, "/m/rw")["opts"])
    assert not {"relatime", "noatime"} & o["/m/strict"]
    assert {"sync", "dirsync", "lazytime"} <= o["/m/sync"]
    assert not {"sync", "lazytime"} & o["/m/async"]
    assert "nosymfollow" in o["/m/nosym"]
    assert not {"nosymfollow", "noatime", "nodiratime", "nodev", "noexec"} & o["/m/sym"]
    assert {"size=2048k", "mode=711", "uid=12", "nr_inodes=100"} <= o["/m/data"]
    assert res["data"] == [0o711, 12, 2 << 20, 100]
    assert {"ro", "nosuid"} <= set(by_mp(mi, "/m/remount")["opts"])


def _make_sources(src):
    """Inside the child's mount ns: a source dir with a tmpfs submount holding a file."""
    def pre():
        libc.mount("tmpfs", str(src / "sub"), "tmpfs", 0, "size=1m")
        with open(src / "sub" / "inner", "w") as f:
            f.write("inner")
    return pre


def test_bind_rbind_readonly_and_recursive_attrs(bundle_dir, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "top").write_text("top")
    (tmp_path / "file").write_text("a file")
    cfg_mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/b/bind", "source": str(src), "options": ["bind"]},
        {"destination": "/b/rbind", "source": str(src), "options": ["rbind"]},
        {"destination": "/b/robind", "source": str(src), "options": ["rbind", "ro"]},
        {"destination": "/b/rro", "source": str(src), "options": ["rbind", "rro", "rnosuid", "rnoatime"]},
        {"destination": "/b/file", "source": str(tmp_path / "file"), "options": ["bind", "ro", "nodev"]},
        {"destination": "/b/rel", "source": "../src", "options": ["rbind", "rprivate"]},
    ]
    rp = plan(bundle_dir, cfg_mounts, maskedPaths=[], readonlyPaths=[])

    def inspect():
        out = {"mi": mountinfo()}
        for d in ("bind", "robind", "rbind", "rro", "rel"):
            out[d] = {"top": open(f"/b/{d}/top").read(), "sub": os.listdir(f"/b/{d}/sub"),
                      "w_top": attempt(lambda: open(f"/b/{d}/new-{d}", "w").close()),
                      "w_sub": attempt(lambda: open(f"/b/{d}/sub/new-{d}", "w").close())}
        out["file"] = [open("/b/file").read(), attempt(lambda: open("/b/file", "a").close())]
        return out

    res = run_child(rp, inspect, pre=_make_sources(src))
    mi = res["mi"]
    assert res["bind"]["sub"] == [] and res["bind"]["w_top"] == {"ok": None}   # not recursive
    assert "inner" in res["rbind"]["sub"] and by_mp(mi, "/b/rbind/sub")["fstype"] == "tmpfs"
    assert res["rbind"]["w_sub"] == {"ok": None}
    # ro on an rbind: a bind remount of the top mount only (runc)
    assert res["robind"]["w_top"] == {"errno": errno.EROFS} and res["robind"]["w_sub"] == {"ok": None}
    # rro & co: mount_setattr(AT_RECURSIVE) reaches the submount too
    assert res["rro"]["w_top"] == {"errno": errno.EROFS} and res["rro"]["w_sub"] == {"errno": errno.EROFS}
    for mp in ("/b/rro", "/b/rro/sub"):
        assert {"ro", "nosuid", "noatime"} <= set(by_mp(mi, mp)["opts"]), mp
    assert res["file"][0] == "a file" and res["file"][1] == {"errno": errno.EROFS}
    assert {"ro", "nodev"} <= set(by_mp(mi, "/b/file")["opts"])
    assert "inner" in res["rel"]["sub"] and by_mp(mi, "/b/rel")["optional"] == []
    # on the host the submount never existed: only the plain bind wrote to the disk below it
    assert sorted(os.listdir(src / "sub")) == ["new-bind"]
    assert sorted(os.listdir(src)) == ["new-bind", "new-rbind", "new-rel", "sub", "top"]


def test_propagation_options(bundle_dir, tmp_path):
    cfg_mounts = [{"destination": f"/p/{name}", "type": "tmpfs", "source": "tmpfs", "options": [name]}
                  for name in ("shared", "private", "unbindable", "slave")]
    cfg_mounts.append({"destination": "/p/shared-then-private", "type": "tmpfs", "source": "tmpfs",
                       "options": ["shared", "private"]})
    rp = plan(bundle_dir, cfg_mounts, maskedPaths=[], readonlyPaths=[], rootfsPropagation="shared")
    mi = run_child(rp, mountinfo)
    assert any(o.startswith("shared:") for o in by_mp(mi, "/p/shared")["optional"])
    assert by_mp(mi, "/p/private")["optional"] == []
    assert by_mp(mi, "/p/unbindable")["optional"] == ["unbindable"]
    assert by_mp(mi, "/p/shared-then-private")["optional"] == []
    # rootfsPropagation "shared" is applied to "/" after pivot_root
    assert any(o.startswith("shared:") for o in by_mp(mi, "/")["optional"])


def test_default_root_propagation_is_slave_of_host(bundle_dir, tmp_path):
    """With the default (rslave) a mount made on the host side later reaches the container's
    view, never the other way round."""
    rp = plan(bundle_dir, [], maskedPaths=[], readonlyPaths=[])
    rootfs_dir = bundle_dir / "rootfs"
    (rootfs_dir / "mnt").mkdir(exist_ok=True)

    def pre():
        # a shared mount with a peer in another mount namespace (as on a systemd host): the
        # container's copy becomes its slave
        libc.mount(str(rootfs_dir), str(rootfs_dir), None, libc.MS_BIND)
        libc.mount(None, str(rootfs_dir), None, libc.MS_SHARED)
        libc.unshare(libc.CLONE_NEWNS)

    def inspect():
        return by_mp(mountinfo(), "/")["optional"]

    optional = run_child(rp, inspect, pre=pre)
    assert any(o.startswith("master:") for o in optional), optional


def test_tmpcopyup(bundle_dir):
    (bundle_dir / "rootfs" / "etc" / "sub").mkdir()
    (bundle_dir / "rootfs" / "etc" / "sub" / "deep").write_text("deep")
    os.symlink("passwd", bundle_dir / "rootfs" / "etc" / "pw-link")
    os.chmod(bundle_dir / "rootfs" / "etc", 0o751)
    cfg_mounts = [{"destination": "/etc", "type": "tmpfs", "source": "tmpfs",
                   "options": ["tmpcopyup", "nosuid", "size=1m"]},
                  {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                   "options": ["tmpcopyup", "ro", "mode=1777"]}]
    (bundle_dir / "rootfs" / "tmp" / "kept").write_text("kept")
    rp = plan(bundle_dir, cfg_mounts, maskedPaths=[], readonlyPaths=[])

    def inspect():
        with open("/etc/new", "w") as f:
            f.write("x")
        return {"mi": mountinfo(), "etc": sorted(os.listdir("/etc")), "passwd": open("/etc/passwd").read(),
                "deep": open("/etc/sub/deep").read(), "link": os.readlink("/etc/pw-link"),
                "mode": stat.S_IMODE(os.stat("/etc").st_mode), "tmp": open("/tmp/kept").read(),
                "tmpmode": stat.S_IMODE(os.stat("/tmp").st_mode),
                "tmpw": attempt(lambda: open("/tmp/x", "w").close())}

    res = run_child(rp, inspect)
    assert by_mp(res["mi"], "/etc")["fstype"] == "tmpfs"
    assert {"passwd", "group", "hostname", "sub", "pw-link", "new"} <= set(res["etc"])
    assert res["passwd"].startswith("root:x:0:0") and res["deep"] == "deep" and res["link"] == "passwd"
    assert res["mode"] == 0o751
    assert res["tmp"] == "kept" and res["tmpmode"] == 0o1777 and res["tmpw"] == {"errno": errno.EROFS}
    assert "ro" in by_mp(res["mi"], "/tmp")["opts"]
    assert not (bundle_dir / "rootfs" / "etc" / "new").exists()


def test_linux_devices(bundle_dir):
    devices = [
        {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640, "uid": 1000, "gid": 1001},
        {"path": "/dev/loopz", "type": "b", "major": 7, "minor": 200, "fileMode": 0o600},
        {"path": "/dev/fifo", "type": "p", "fileMode": 0o620},
        {"path": "/dev/deep/er/kmsg", "type": "u", "major": 1, "minor": 11},
        {"path": "/opt/zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666},   # outside /dev
    ]
    rp = plan(bundle_dir, None, devices=devices)
    res = run_child(rp, lambda: {d["path"]: dev_info(d["path"]) for d in devices})
    d = res["/dev/mynull"]
    assert stat.S_ISCHR(d["mode"]) and d["rdev"] == [1, 3]
    assert (stat.S_IMODE(d["mode"]), d["uid"], d["gid"]) == (0o640, 1000, 1001)
    d = res["/dev/loopz"]
    assert stat.S_ISBLK(d["mode"]) and d["rdev"] == [7, 200] and stat.S_IMODE(d["mode"]) == 0o600
    d = res["/dev/fifo"]
    assert stat.S_ISFIFO(d["mode"]) and stat.S_IMODE(d["mode"]) == 0o620
    d = res["/dev/deep/er/kmsg"]
    assert stat.S_ISCHR(d["mode"]) and d["rdev"] == [1, 11] and stat.S_IMODE(d["mode"]) == 0o666
    assert res["/opt/zero"]["rdev"] == [1, 5]
    # /opt is in the rootfs itself (not a tmpfs): the node is there on disk, nothing else changed
    assert os.path.exists(bundle_dir / "rootfs" / "opt" / "zero")


def test_device_conflict_is_an_error(bundle_dir):
    (bundle_dir / "rootfs" / "opt").mkdir()
    (bundle_dir / "rootfs" / "opt" / "thing").write_text("a file")
    rp = plan(bundle_dir, None, devices=[{"path": "/opt/thing", "type": "c", "major": 1, "minor": 3}])
    with pytest.raises(ChildError) as ei:
        run_child(rp, lambda: None)
    assert ei.value.out["stage"] == "rootfs" and "/opt/thing" in ei.value.out["error"]


def test_symlink_destination_stays_inside_rootfs(bundle_dir, tmp_path):
    """CVE-2021-30465 class: a destination through a symlink that points "out" of the rootfs
    is resolved as if the rootfs were "/"."""
    root = bundle_dir / "rootfs"
    depth = "/".join([".."] * (len(root.parts) + 3))
    os.symlink("/../../etc", root / "evil")
    os.symlink(f"{depth}/etc", root / "evil2")
    src = tmp_path / "payload"
    src.write_text("payload")
    name = f"pyoci-escape-{os.getpid()}"
    cfg_mounts = [
        {"destination": f"/evil/{name}", "source": str(src), "options": ["bind"]},
        {"destination": f"/evil2/{name}-dir/x", "type": "tmpfs", "source": "tmpfs"},
    ]
    rp = plan(bundle_dir, cfg_mounts, maskedPaths=[], readonlyPaths=[])

    def inspect():
        return {"mi": mountinfo(), "payload": open(f"/etc/{name}").read()}

    res = run_child(rp, inspect)
    mps = [m["mp"] for m in res["mi"]]
    assert f"/etc/{name}" in mps and f"/etc/{name}-dir/x" in mps
    assert res["payload"] == "payload"
    assert not os.path.exists(f"/etc/{name}") and not os.path.exists(f"/etc/{name}-dir")
    assert (root / "etc" / name).is_file() and (root / "etc" / f"{name}-dir" / "x").is_dir()


def test_dangling_symlink_in_destination_is_refused(bundle_dir):
    os.symlink("/etc/deeper/still", bundle_dir / "rootfs" / "dangling")
    rp = plan(bundle_dir, [{"destination": "/dangling/more", "type": "tmpfs", "source": "tmpfs"}])
    with pytest.raises(ChildError) as ei:
        run_child(rp, lambda: None)
    assert ei.value.out["stage"] == "rootfs" and "dangling symlink" in ei.value.out["error"]
    assert not os.path.exists(bundle_dir / "rootfs" / "etc" / "deeper")
    assert not os.path.exists("/etc/deeper")


def test_masked_path_refuses_fake_dev_null(bundle_dir):
    """CVE-2025-31133 class: /dev/null must be the real null device before masking with it."""
    rp = plan(bundle_dir, None, devices=[{"path": "/dev/null", "type": "c", "major": 1, "minor": 5}],
              maskedPaths=["/proc/keys"], readonlyPaths=[])
    with pytest.raises(ChildError) as ei:
        run_child(rp, lambda: None)
    assert ei.value.out["type"] == "StageError" and "null device" in ei.value.out["error"]


def test_masked_missing_paths_are_skipped_and_dirs_get_tmpfs(bundle_dir):
    rp = plan(bundle_dir, None, maskedPaths=["/proc/does-not-exist", "/etc", "/etc/passwd"],
              readonlyPaths=["/nope", "/bin"])
    res = run_child(rp, lambda: {"etc": os.listdir("/etc"), "mi": mountinfo(),
                                 "bin": attempt(lambda: open("/bin/new", "w").close())})
    assert res["etc"] == [] and by_mp(res["mi"], "/etc")["fstype"] == "tmpfs"
    assert res["bin"] == {"errno": errno.EROFS}


def test_console(bundle_dir):
    rp = plan(bundle_dir, None, console=True, maskedPaths=[], readonlyPaths=[])

    def inspect():
        st = os.lstat("/dev/console")
        before = [stat.S_ISREG(st.st_mode), st.st_size]
        master, slave = os.openpty()
        name = os.ttyname(slave)
        rootfs.bind_console(rp, name)
        c, s = os.stat("/dev/console"), os.fstat(slave)
        with open("/dev/console", "w") as f:
            f.write("hello\n")
        got = os.read(master, 100)
        # a symlink at /dev/console is refused
        libc.umount2("/dev/console", 0)
        os.unlink("/dev/console")
        os.symlink("/etc/passwd", "/dev/console")
        try:
            rootfs.bind_console(rp, name)
            refused = None
        except StageError as e:
            refused = [e.stage, str(e)]
        try:
            rootfs.bind_console(rp, "/dev/null")
            notpty = None
        except StageError as e:
            notpty = str(e)
        return {"before": before, "name": name, "same": c.st_rdev == s.st_rdev, "got": got.decode(),
                "refused": refused, "notpty": notpty, "passwd": open("/etc/passwd").read()[:5]}

    res = run_child(rp, inspect)
    assert res["before"] == [True, 0]
    assert res["name"].startswith("/dev/pts/") and res["same"]
    assert "hello" in res["got"]
    assert res["refused"][0] == "rootfs" and "symlink" in res["refused"][1]
    assert res["notpty"] is not None and res["passwd"] == "root:"


def test_failed_mount_names_stage_path_and_errno(bundle_dir):
    rp = plan(bundle_dir, [{"destination": "/x", "type": "no-such-fs", "source": "none"}])
    with pytest.raises(ChildError) as ei:
        run_child(rp, lambda: None)
    out = ei.value.out
    assert out["type"] == "SyscallError" and out["stage"] == "rootfs" and out["errno"] == errno.ENODEV
    assert out["error"].startswith("rootfs: mount /x (mounts[1] /x: source=none type=no-such-fs")


def test_missing_bind_source(bundle_dir, tmp_path):
    rp = plan(bundle_dir, [{"destination": "/x", "source": str(tmp_path / "nope"), "options": ["bind"]}])
    with pytest.raises(ChildError) as ei:
        run_child(rp, lambda: None)
    assert ei.value.out["errno"] == errno.ENOENT and str(tmp_path / "nope") in ei.value.out["error"]
    assert ei.value.out["stage"] == "rootfs"


def test_idmapped_bind(bundle_dir, tmp_path):
    src = tmp_path / "owned"
    src.mkdir()
    (src / "root-file").write_text("r")
    (src / "user-file").write_text("u")
    os.chown(src / "user-file", 1005, 1005)
    cfg_mounts = [{"destination": "/idm", "source": str(src), "options": ["bind", "idmap"],
                   "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 2000}],
                   "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 2000}]}]
    rp = plan(bundle_dir, cfg_mounts, maskedPaths=[], readonlyPaths=[])

    def inspect():
        a, b = os.stat("/idm/root-file"), os.stat("/idm/user-file")
        return [a.st_uid, a.st_gid, b.st_uid, b.st_gid]

    assert run_child(rp, inspect) == [100000, 200000, 101005, 201005]
    assert os.stat(src / "user-file").st_uid == 1005       # on disk nothing changed


# --- in a user namespace (rootless-like): mknod refused, sysfs/mqueue/cgroup2 refused, locked flags
def test_user_namespace_default_config(bundle_dir, tmp_path):
    src = tmp_path / "locked"
    src.mkdir()
    extra = [{"destination": "/locked", "source": str(src), "options": ["bind", "ro"]}]
    cfg_mounts = default_config()["mounts"] + extra
    rp = plan(bundle_dir, cfg_mounts, readonly=True, console=True,
              devices=[{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]
              if os.path.exists("/dev/fuse") else [])

    def pre_host():
        # a mount made outside the user namespace: its nosuid/nodev/noexec get locked
        libc.mount("tmpfs", str(src), "tmpfs", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC, "size=1m")

    def inspect():
        res = inspect_default()
        res["locked_write"] = attempt(lambda: open("/locked/x", "w").close())
        res["fuse"] = dev_info("/dev/fuse") if os.path.exists("/dev/fuse") else None
        return res

    res = run_child(rp, inspect, userns=True, pre_host=pre_host)
    mi = res["mi"]
    assert res["pid"] == 1 and res["root_write"] == {"errno": errno.EROFS}
    # mknod is refused in a user namespace: the host's nodes are bind-mounted instead
    for name, (ma, mi_) in {"null": (1, 3), "zero": (1, 5), "tty": (5, 0), "urandom": (1, 9)}.items():
        assert res["devs"][name]["rdev"] == [ma, mi_] and stat.S_ISCHR(res["devs"][name]["mode"])
        assert by_mp(mi, f"/dev/{name}")["root"] == f"/{name}"
    if res["fuse"] is not None:
        assert res["fuse"]["rdev"] == [10, 229]
    assert res["null_write"] == {"ok": 2} and res["keys"] == ""
    # sysfs, cgroup2 and mqueue are refused without their own namespaces: binds of the host's
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(by_mp(mi, "/sys")["opts"])
    assert by_mp(mi, "/sys/fs/cgroup")["fstype"] == "cgroup2" and "ro" in by_mp(mi, "/sys/fs/cgroup")["opts"]
    assert res["proc_sys"] == {"errno": errno.EROFS}
    # "ro" on a bind whose flags are locked: the remount keeps nosuid/nodev/noexec
    assert res["locked_write"] == {"errno": errno.EROFS}
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(by_mp(mi, "/locked")["opts"])
    assert os.listdir(bundle_dir / "rootfs" / "dev") == []


def test_user_namespace_rootless_config(bundle_dir):
    cfg = default_config(["sh"], terminal=False, rootless=True)
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 0, "size": 65536}]
    rp = mounts.build_rootfs_plan(cfg, str(bundle_dir), cgroup2=True)
    assert rp.userns
    res = run_child(rp, inspect_default, userns=True)
    assert by_mp(res["mi"], "/sys")["fstype"] == "sysfs" and res["proc_sys"] == {"errno": errno.EROFS}
    assert res["root_write"] == {"errno": errno.EROFS}
    assert res["devs"]["null"]["rdev"] == [1, 3]


def test_mount_into_proc_through_a_symlink_is_refused(bundle_dir, tmp_path):
    """A destination that only reaches /proc through a symlink in the rootfs is refused too
    (it would hide what maskedPaths/readonlyPaths protect)."""
    os.symlink("/proc/sys", bundle_dir / "rootfs" / "sneaky")
    (tmp_path / "f").write_text("x")
    rp = plan(bundle_dir, [{"destination": "/sneaky/kernel", "type": "tmpfs", "source": "tmpfs"}])
    with pytest.raises(ChildError) as ei:
        run_child(rp, lambda: None)
    assert ei.value.out["stage"] == "rootfs" and "inside /proc" in ei.value.out["error"]
    # a bind of a non-procfs onto /proc is refused; allowed files inside /proc are fine
    rp = plan(bundle_dir, [{"destination": "/proc", "source": str(tmp_path), "options": ["rbind"]}])
    with pytest.raises(ChildError) as ei:
        run_child(rp, lambda: None)
    assert "must be a proc filesystem" in ei.value.out["error"]
    rp = plan(bundle_dir, [{"destination": "/proc/uptime", "source": str(tmp_path / "f"), "options": ["bind"]}],
              maskedPaths=[], readonlyPaths=[])
    assert run_child(rp, lambda: open("/proc/uptime").read()) == "x"


def test_ridmap_rbind(bundle_dir, tmp_path):
    src = tmp_path / "owned"
    (src / "sub").mkdir(parents=True)
    cfg_mounts = [{"destination": "/idm", "source": str(src), "options": ["rbind", "ridmap"],
                   "uidMappings": [{"containerID": 0, "hostID": 3000, "size": 10}],
                   "gidMappings": [{"containerID": 0, "hostID": 4000, "size": 10}]},
                  {"destination": "/plain", "source": str(src), "options": ["rbind", "idmap"],
                   "uidMappings": [{"containerID": 0, "hostID": 3000, "size": 10}],
                   "gidMappings": [{"containerID": 0, "hostID": 4000, "size": 10}]}]
    rp = plan(bundle_dir, cfg_mounts, maskedPaths=[], readonlyPaths=[])

    def pre():
        libc.mount("tmpfs", str(src / "sub"), "tmpfs", 0, "size=1m")

    def inspect():
        return [[os.stat(p).st_uid, os.stat(p).st_gid] for p in ("/idm/sub", "/plain", "/plain/sub")]

    # ridmap: the submount is idmapped too; idmap: only the top one
    assert run_child(rp, inspect, pre=pre) == [[3000, 4000], [3000, 4000], [0, 0]]


def test_idmap_in_user_namespace_container_uses_parent_made_mounts(bundle_dir, tmp_path):
    """In a user namespace the init cannot idmap a host filesystem: the parent makes the
    detached idmapped mounts (open_idmapped_mounts) and the init attaches them."""
    src = tmp_path / "owned"
    src.mkdir()
    (src / "f").write_text("f")
    os.chown(src / "f", 7, 8)
    cfg = default_config(["sh"], terminal=False)
    cfg["root"]["readonly"] = False
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["mounts"] = [{"destination": "/proc", "type": "proc", "source": "proc"},
                     {"destination": "/own", "source": str(src), "options": ["bind", "idmap", "ro"]},
                     {"destination": "/explicit", "source": str(src), "options": ["bind", "idmap"],
                      "uidMappings": [{"containerID": 0, "hostID": 500, "size": 100}],
                      "gidMappings": [{"containerID": 0, "hostID": 600, "size": 100}]}]
    cfg["linux"]["maskedPaths"] = cfg["linux"]["readonlyPaths"] = []
    rp = mounts.build_rootfs_plan(cfg, str(bundle_dir), cgroup2=True)

    def inspect():
        return {p: [os.stat(p).st_uid, os.stat(p).st_gid] for p in ("/own/f", "/explicit/f")} | {
            "ro": attempt(lambda: open("/own/new", "w").close())}

    made = []

    def parent_mounts(pid):
        fds = rootfs.open_idmapped_mounts(rp, f"/proc/{pid}/ns/user")
        made.extend(fds)
        return fds

    res = run_child(rp, inspect, userns=True, parent_mounts=parent_mounts)
    assert made == [1, 2]
    # the harness maps container 0-65535 to host 0-65535, and so does "/own" (the container's
    # mapping); "/explicit" shows on-disk 7/8 through container→host 0→500 / 0→600, i.e. as
    # host 507/608, which the container's own mapping shows unchanged
    assert res["/own/f"] == [7, 8] and res["/explicit/f"] == [507, 608]
    assert res["ro"] == {"errno": errno.EROFS}


def test_idmap_in_user_namespace_without_parent_mounts_fails_clearly(bundle_dir, tmp_path):
    cfg_mounts = [{"destination": "/own", "source": str(tmp_path), "options": ["bind", "idmap"],
                   "uidMappings": [{"containerID": 0, "hostID": 500, "size": 100}],
                   "gidMappings": [{"containerID": 0, "hostID": 600, "size": 100}]}]
    rp = plan(bundle_dir, cfg_mounts, maskedPaths=[], readonlyPaths=[])
    with pytest.raises(ChildError) as ei:
        run_child(rp, lambda: None, userns=True)
    assert ei.value.out["stage"] == "rootfs" and "/own" in ei.value.out["error"]


def test_dev_from_the_rootfs_or_a_bind(bundle_dir, tmp_path):
    # no /dev mount: the rootfs's own /dev gets the devices and links (on disk, in the bundle)
    rp = plan(bundle_dir, [], maskedPaths=["/etc/hostname"], readonlyPaths=[])
    assert run_child(rp, lambda: [open("/etc/hostname").read(), os.readlink("/dev/ptmx")]) == ["", "pts/ptmx"]
    assert stat.S_ISCHR(os.lstat(bundle_dir / "rootfs" / "dev" / "null").st_mode)
    assert open(bundle_dir / "rootfs" / "etc" / "hostname").read() == "pyoci\n"
    # /dev bind-mounted: used exactly as it is, nothing created in it
    devdir = tmp_path / "devdir"
    devdir.mkdir()
    (devdir / "marker").write_text("m")
    rp = plan(bundle_dir, [{"destination": "/dev", "source": str(devdir), "options": ["rbind"]}],
              maskedPaths=[], readonlyPaths=[])
    assert not rp.setup_dev
    assert run_child(rp, lambda: sorted(os.listdir("/dev"))) == ["marker"]
    assert os.listdir(devdir) == ["marker"]


def test_overlay_and_other_filesystem_types(bundle_dir, tmp_path):
    lower, upper, work = (tmp_path / n for n in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        d.mkdir()
    (lower / "from-lower").write_text("lower")
    cfg_mounts = [{"destination": "/ov", "type": "overlay", "source": "overlay",
                   "options": [f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}", "nodev"]},
                  {"destination": "/rm", "type": "ramfs", "source": "ramfs", "options": ["mode=700"]}]
    rp = plan(bundle_dir, cfg_mounts, maskedPaths=[], readonlyPaths=[])

    def inspect():
        with open("/ov/from-container", "w") as f:
            f.write("up")
        return {"ls": sorted(os.listdir("/ov")), "mi": mountinfo(),
                "rm": stat.S_IMODE(os.stat("/rm").st_mode)}

    res = run_child(rp, inspect)
    assert res["ls"] == ["from-container", "from-lower"]
    ov = by_mp(res["mi"], "/ov")
    assert ov["fstype"] == "overlay" and "nodev" in ov["opts"] and f"lowerdir={lower}" in ov["super"]
    assert by_mp(res["mi"], "/rm")["fstype"] == "ramfs" and res["rm"] == 0o700
    assert (upper / "from-container").read_text() == "up"
