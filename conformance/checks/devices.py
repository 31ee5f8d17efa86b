"""Devices and file descriptors (spec#110-116)."""
from __future__ import annotations

import json
import os

from ..catalogue import check
from ..harness import need, tail


def _stat(ctx, paths, mutate=None):
    def m(b):
        b.process["args"] = ["/probe", "stat", *paths]
        if mutate:
            mutate(b)
    return ctx.probe(mutate=m)


@check(110, fails_on="a runtime that ignores linux.devices")
def device_exists(ctx):
    st = _stat(ctx, ["/dev/cf-null"], lambda b: b.linux.update(
        devices=[{"path": "/dev/cf-null", "type": "c", "major": 1, "minor": 3}]))["/dev/cf-null"]
    need("errno" not in st, f"/dev/cf-null does not exist: {st}")
    need((st["type"], st["major"], st["minor"]) == ("c", 1, 3), f"/dev/cf-null is {st}")


@check(111, fails_on="a runtime that ignores fileMode/uid/gid or the fifo type")
def device_attributes(ctx):
    devs = [{"path": "/dev/cf-char", "type": "c", "major": 1, "minor": 5, "fileMode": 0o640, "uid": 1, "gid": 2},
            {"path": "/dev/cf-unbuf", "type": "u", "major": 1, "minor": 7},
            {"path": "/dev/cf-block", "type": "b", "major": 7, "minor": 250, "fileMode": 0o600},
            {"path": "/dev/cf-fifo", "type": "p", "fileMode": 0o620}]
    got = _stat(ctx, [d["path"] for d in devs], lambda b: b.linux.update(devices=devs))
    problems = []
    for d in devs:
        s = got[d["path"]]
        if "errno" in s:
            problems.append(f"{d['path']} missing")
            continue
        want_type = {"u": "c"}.get(d["type"], d["type"])
        if s["type"] != want_type:
            problems.append(f"{d['path']} type {s['type']} not {want_type}")
        if d["type"] != "p" and (s["major"], s["minor"]) != (d["major"], d["minor"]):
            problems.append(f"{d['path']} is {s['major']}:{s['minor']}")
        if "fileMode" in d and s["mode"] != d["fileMode"]:
            problems.append(f"{d['path']} mode {oct(s['mode'])} not {oct(d['fileMode'])}")
        if "uid" in d and (s["uid"], s["gid"]) != (d["uid"], d["gid"]):
            problems.append(f"{d['path']} owner {s['uid']}:{s['gid']}")
    need(not problems, "; ".join(problems))


@check(112, fails_on="runc 1.1.5 (accepts a regular file at the device path)")
def device_conflict(ctx):
    b = ctx.bundle(["/bin/true"])
    (b.rootfs / "cf-dev").write_text("a regular file")
    b.linux["devices"] = [{"path": "/cf-dev", "type": "c", "major": 1, "minor": 3}]
    b.save()
    ctx.expect_error(b, "a device path where a regular file already exists")


DEFAULT = {"/dev/null": (1, 3), "/dev/zero": (1, 5), "/dev/full": (1, 7), "/dev/random": (1, 8),
           "/dev/urandom": (1, 9), "/dev/tty": (5, 0)}


@check(114, fails_on="a runtime that leaves /dev as an empty tmpfs")
def default_devices(ctx):
    got = _stat(ctx, [*DEFAULT, "/dev/ptmx", "/dev/pts/ptmx"])
    problems = [f"{p}: {got[p]}" for p, (ma, mi) in DEFAULT.items()
                if got[p].get("type") != "c" or (got[p]["major"], got[p]["minor"]) != (ma, mi)]
    ptmx, pts = got["/dev/ptmx"], got["/dev/pts/ptmx"]
    ok = (ptmx.get("type") == "l" and ptmx["target"] in ("pts/ptmx", "/dev/pts/ptmx")) or \
         (ptmx.get("ino") == pts.get("ino") and ptmx.get("dev") == pts.get("dev"))
    if not ok:
        problems.append(f"/dev/ptmx is neither a link to nor a bind of /dev/pts/ptmx: {ptmx}")
    need(not problems, "; ".join(problems))


@check(115, fails_on="a runtime that does not make the /dev symlinks")
def dev_symlinks(ctx):
    want = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
            "/dev/stderr": "/proc/self/fd/2"}
    got = _stat(ctx, list(want))
    bad = {p: got[p].get("target") or got[p] for p, t in want.items() if got[p].get("target") != t}
    need(not bad, f"symlinks wrong or missing: {bad}")


@check(116, fails_on="a runtime that leaks inherited descriptors into the container")
def only_stdio(ctx):
    r, w = os.pipe()
    ctx.on_cleanup(lambda: (os.close(r), os.close(w)))
    b = ctx.bundle(["/probe"])
    rc, out, err, _ = ctx.run(b, pass_fds=(r, w))
    need(rc == 0, f"probe failed: {tail(err)}")
    d = json.loads(next(ln for ln in out.splitlines() if ln.startswith("{")))
    extra = {k: v for k, v in d["fds"].items() if k not in ("0", "1", "2")}
    need(not extra, f"descriptors open besides stdio: {extra}")
