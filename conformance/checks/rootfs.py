"""Root filesystem, mounts, mount options and propagation (spec#83-98)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..catalogue import check
from ..harness import Fail, Skip, mount_at, need, parse_mountinfo, tail, wait_for


def _mounts(d) -> list[dict]:
    return parse_mountinfo(d["mountinfo"])


@check(83, fails_on="a runtime that runs a config without root")
def root_required(ctx):
    b = ctx.bundle(["/bin/true"])
    del b.config["root"]
    b.save()
    ctx.expect_error(b, "a config without root")
    b2 = ctx.bundle(["/bin/true"])
    b2.config["root"] = {"readonly": False}
    b2.save()
    ctx.expect_error(b2, "root without root.path")


@check(84, fails_on="a runtime that resolves root.path against its cwd instead of the bundle")
def root_path_forms(ctx):
    b = ctx.bundle(["/bin/sh", "-c", "echo relative-ok"])
    rc, out, err, _ = ctx.run(b)
    need(rc == 0 and "relative-ok" in out, f"relative root.path 'rootfs' failed: {tail(err)}")
    b.config["root"]["path"] = str(b.rootfs)
    b.process["args"] = ["/bin/sh", "-c", "echo absolute-ok"]
    b.save()
    rc, out, err, _ = ctx.run(b)
    need(rc == 0 and "absolute-ok" in out, f"absolute root.path failed: {tail(err)}")


@check(85, fails_on="a runtime that accepts a regular file as root.path")
def root_path_directory(ctx):
    b = ctx.bundle(["/bin/true"])
    (b.path / "not-a-dir").write_text("x")
    b.config["root"]["path"] = "not-a-dir"
    b.save()
    ctx.expect_error(b, "a root.path that is a regular file")


@check(86, fails_on="a runtime that ignores root.readonly")
def root_readonly(ctx):
    d = ctx.probe(mutate=lambda b: b.config["root"].update(readonly=True))
    root = mount_at(_mounts(d), "/")
    need(root and "ro" in root["opts"], f"readonly root is mounted {root and sorted(root['opts'])}")
    b = ctx.bundle(["/bin/sh", "-c", "touch /written && echo wrote"])
    b.config["root"]["readonly"] = True
    b.save()
    rc, out, err, _ = ctx.run(b)
    need("wrote" not in out, "a file could be written on a readonly root")
    d = ctx.probe()
    root = mount_at(_mounts(d), "/")
    need(root and "rw" in root["opts"], "root.readonly unset, but the root is not writable")


@check(87, fails_on="a runtime that sorts mounts (e.g. by path depth) instead of keeping their order")
def mount_order(ctx):
    def m(b):
        b.mount(destination="/mnt/a", type="tmpfs", source="tmpfs", options=["mode=701"])
        b.mount(destination="/mnt/a/b", type="tmpfs", source="tmpfs", options=["mode=702"])
        b.mount(destination="/mnt/c/d", type="tmpfs", source="tmpfs", options=["mode=705"])
        b.mount(destination="/mnt/c", type="tmpfs", source="tmpfs", options=["mode=703"])
        b.mount(destination="/mnt/c", type="tmpfs", source="tmpfs", options=["mode=704"])
    ms = _mounts(ctx.probe(mutate=m))
    order = [(x["mountpoint"], next((o for o in x["super"] if o.startswith("mode=")), ""))
             for x in ms if x["mountpoint"].startswith("/mnt/")]
    want = [("/mnt/a", "mode=701"), ("/mnt/a/b", "mode=702"), ("/mnt/c/d", "mode=705"),
            ("/mnt/c", "mode=703"), ("/mnt/c", "mode=704")]
    need(order == want, f"mounts appear as {order}, configured {want}")


@check(88, fails_on="a runtime that rejects or misplaces a relative destination")
def relative_destination(ctx):
    ms = _mounts(ctx.probe(mutate=lambda b: b.mount(destination="mnt/rel", type="tmpfs", source="tmpfs",
                                                    options=["mode=711"])))
    m = mount_at(ms, "/mnt/rel")
    need(m and "mode=711" in m["super"], "destination 'mnt/rel' was not mounted at /mnt/rel")


@check(89, fails_on="a runtime that resolves a relative bind source against its cwd, or needs type 'bind'")
def bind_relative_source(ctx):
    b = ctx.bundle(["/bin/cat", "/mnt/data/marker"])
    (b.path / "data").mkdir()
    (b.path / "data/marker").write_text("bundle-relative")
    b.mount(destination="/mnt/data", type="tmpfs", source="data", options=["bind", "ro"])
    rc, out, err, _ = ctx.run(b)
    need(rc == 0 and "bundle-relative" in out, f"bind of bundle-relative 'data' (type tmpfs as dummy) failed: "
         f"exit {rc}: {tail(err)} {tail(out)}")


# option -> (mount entry kind, predicate on the mountinfo entry)
def _has(flag):
    return lambda m: flag in m["opts"] or flag in m["super"]


def _lacks(flag):
    return lambda m: flag not in m["opts"] and flag not in m["super"]


MUST_OPTIONS = {
    "async": _lacks("sync"), "atime": _lacks("noatime"), "bind": lambda m: True, "defaults": _has("rw"),
    "dev": _lacks("nodev"), "diratime": _lacks("nodiratime"), "dirsync": _has("dirsync"), "exec": _lacks("noexec"),
    "iversion": lambda m: True, "lazytime": _has("lazytime"), "loud": _lacks("silent"), "noatime": _has("noatime"),
    "nodev": _has("nodev"), "nodiratime": _has("nodiratime"), "noexec": _has("noexec"),
    "noiversion": lambda m: True, "nolazytime": _lacks("lazytime"), "norelatime": lambda m: True,
    "nostrictatime": lambda m: True, "nosuid": _has("nosuid"), "rbind": lambda m: True,
    "relatime": _has("relatime"), "ro": _has("ro"), "rw": _has("rw"), "silent": lambda m: True,
    "strictatime": lambda m: "relatime" not in m["opts"] and "noatime" not in m["opts"], "suid": _lacks("nosuid"),
    "sync": _has("sync"),
}
PROPAGATION = {
    "private": lambda m: not any(o.startswith(("shared:", "master:")) for o in m["optional"]),
    "rprivate": lambda m: not any(o.startswith(("shared:", "master:")) for o in m["optional"]),
    "shared": lambda m: any(o.startswith("shared:") for o in m["optional"]),
    "rshared": lambda m: any(o.startswith("shared:") for o in m["optional"]),
    # a slave of a source that is private in the container's namespace is simply private: judge
    # what slave promises, that nothing propagates out (no shared: peer group)
    "slave": lambda m: not any(o.startswith("shared:") for o in m["optional"]),
    "rslave": lambda m: not any(o.startswith("shared:") for o in m["optional"]),
    "unbindable": lambda m: "unbindable" in m["optional"],
    "runbindable": lambda m: "unbindable" in m["optional"],
}


# superblock flags cannot be set on a bind mount: judge them on a fresh tmpfs
SUPERBLOCK = {"async", "sync", "dirsync", "lazytime", "nolazytime", "iversion", "noiversion", "loud", "silent"}


def _option_mounts(ctx, b, options: dict, source: Path, extra=()):
    """One mount per option (a bind of `source`, or a tmpfs for superblock flags); returns {option: dest}."""
    dests = {}
    for i, opt in enumerate(options):
        dest = f"/mnt/opt{i}"
        if opt in SUPERBLOCK:
            b.mount(destination=dest, type="tmpfs", source="tmpfs", options=[opt, "size=1m"])
        else:
            opts = [opt] if opt in ("bind", "rbind") else ["rbind", opt, *extra]
            b.mount(destination=dest, type="bind", source=str(source), options=opts)
        dests[opt] = dest
    return dests


def _judge_options(ctx, options: dict, sub: bool = False):
    src = ctx.tmpdir("optsrc")
    (src / "sub").mkdir()
    if sub:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "subtmp", str(src / "sub")], check=True, timeout=10)
        ctx.on_cleanup(lambda: subprocess.run(["umount", "-l", str(src / "sub")], timeout=10))
    failed, rejected = [], []
    # one container per option: a runtime that rejects one option must not hide the others
    for opt, pred in options.items():
        b = ctx.bundle(["/probe"])
        dest = _option_mounts(ctx, b, {opt: pred}, src)[opt]
        rc, out, err, _ = ctx.run(b)
        if rc != 0:
            rejected.append(opt)
            continue
        import json
        d = json.loads(next(ln for ln in out.splitlines() if ln.startswith("{")))
        m = mount_at(_mounts(d), dest + "/sub" if sub else dest)
        if m is None or not pred(m):
            failed.append(opt)
    return failed, rejected


@check(90, fails_on="a runtime that ignores a flag (each option is judged on its own mount via mountinfo)")
def must_mount_options(ctx):
    failed, rejected = _judge_options(ctx, MUST_OPTIONS)
    need(not failed and not rejected, f"options not honoured: {failed}; options rejected: {rejected}")


RECURSIVE = {
    "rro": _has("ro"), "rrw": _has("rw"), "rnosuid": _has("nosuid"), "rsuid": _lacks("nosuid"),
    "rnodev": _has("nodev"), "rdev": _lacks("nodev"), "rnoexec": _has("noexec"), "rexec": _lacks("noexec"),
    "rnoatime": _has("noatime"), "ratime": _lacks("noatime"), "rnodiratime": _has("nodiratime"),
    "rdiratime": _lacks("nodiratime"), "rrelatime": _has("relatime"), "rnorelatime": lambda m: True,
    "rstrictatime": lambda m: "relatime" not in m["opts"] and "noatime" not in m["opts"],
    "rnostrictatime": lambda m: True, "rnosymfollow": _has("nosymfollow"), "rsymfollow": _lacks("nosymfollow"),
}


@check(91, fails_on="runc 1.1.5 (rejects ratime and rnostrictatime)")
def should_mount_options(ctx):
    failed, rejected = _judge_options(ctx, RECURSIVE, sub=True)
    f2, r2 = _judge_options(ctx, {"nosymfollow": _has("nosymfollow"), "symfollow": _lacks("nosymfollow")})
    failed += f2
    rejected += r2
    need(not failed and not rejected, f"options not honoured (checked on a submount for r*): {failed}; "
         f"rejected: {rejected}")


@check(92, fails_on="a runtime that drops filesystem data options")
def data_options(ctx):
    ms = _mounts(ctx.probe(mutate=lambda b: b.mount(destination="/mnt/data", type="tmpfs", source="tmpfs",
                                                    options=["nosuid", "size=2m", "mode=0711", "nr_inodes=1000"])))
    m = mount_at(ms, "/mnt/data")
    need(m is not None, "tmpfs with data options not mounted")
    missing = [o for o in ("size=2048k", "mode=711", "nr_inodes=1000") if o not in m["super"]]
    need(not missing, f"data options not passed to mount(2): missing {missing} in {sorted(m['super'])}")
    need("nosuid" in m["opts"], "the flag next to the data options was lost")


def _idmap_source(ctx) -> Path:
    src = ctx.tmpdir("idmap")
    (src / "owned").write_text("x")
    os.chown(src / "owned", 5, 7)
    return src


@check(93, fails_on="runc 1.1.5 (no idmap mounts: files keep their on-disk owner)")
def idmap_mount(ctx):
    src = _idmap_source(ctx)

    def m(b):
        b.process["args"] = ["/probe", "stat", "/mnt/idmapped/owned"]
        b.mount(destination="/mnt/idmapped", type="bind", source=str(src), options=["rbind", "idmap"],
                uidMappings=[{"containerID": 0, "hostID": 100000, "size": 65536}],
                gidMappings=[{"containerID": 0, "hostID": 200000, "size": 65536}])
    st = ctx.probe(mutate=m)["/mnt/idmapped/owned"]
    need("errno" not in st, f"stat failed: {st}")
    need((st["uid"], st["gid"]) == (100005, 200007),
         f"an on-disk 5:7 file shows as {st['uid']}:{st['gid']} through the idmapped mount, expected 100005:200007")


@check(94, fails_on="a runtime that mounts idmap without any mapping")
def idmap_needs_mapping(ctx):
    b = ctx.bundle(["/bin/true"])
    b.mount(destination="/mnt/idmapped", type="bind", source=str(_idmap_source(ctx)), options=["rbind", "idmap"])
    ctx.expect_error(b, "an idmap mount with no mappings and no user namespace")


@check(95, fails_on="runc 1.1.5 (ignores mount mappings altogether)")
def mount_mappings_paired(ctx):
    b = ctx.bundle(["/bin/true"])
    b.mount(destination="/mnt/idmapped", type="bind", source=str(_idmap_source(ctx)), options=["rbind", "idmap"],
            uidMappings=[{"containerID": 0, "hostID": 100000, "size": 65536}])
    ctx.expect_error(b, "mount uidMappings without gidMappings")


@check(96, fails_on="a runtime that drops the configured default filesystems")
def default_filesystems(ctx):
    ms = _mounts(ctx.probe())
    want = {"/proc": "proc", "/sys": "sysfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs"}
    bad = {p: (mount_at(ms, p) or {}).get("fstype") for p, t in want.items() if (mount_at(ms, p) or {}).get("fstype") != t}
    need(not bad, f"default filesystems missing or wrong: {bad}")


@check(97, fails_on="runc 1.1.5 (the root stays private whatever rootfsPropagation says)")
def rootfs_propagation(ctx):
    want = {"shared": "shared", "private": None, "unbindable": "unbindable"}
    got = {}
    for prop in want:
        root = mount_at(_mounts(ctx.probe(mutate=lambda b: b.linux.update(rootfsPropagation=prop))), "/")
        opt = root["optional"] if root else []
        got[prop] = ("shared" if any(o.startswith("shared:") for o in opt) else
                     "slave" if any(o.startswith("master:") for o in opt) else
                     "unbindable" if "unbindable" in opt else None)
    need(got == want, f"propagation of the container's / per rootfsPropagation: {got}, expected {want}")


@check(98, fails_on="crun 1.8.1 (shared and unbindable are not applied to bind mounts)")
def mount_propagation_options(ctx):
    failed, rejected = _judge_options(ctx, PROPAGATION)
    need(not failed and not rejected, f"propagation options not honoured: {failed}; rejected: {rejected}")
