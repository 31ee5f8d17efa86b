"""The features document (`RUNTIME features`, spec#160-165)."""
from __future__ import annotations

import json
import re

from ..catalogue import check
from ..harness import Fail, Skip, host_caps, cap_mask, CAP_NAMES, need, tail
from .hooks import Hooks

SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")

# property -> the spec version that introduced it (None: present since features were introduced, 1.1.0)
TOP = {"ociVersionMin": None, "ociVersionMax": None, "hooks": None, "mountOptions": None, "linux": None,
       "annotations": None, "potentiallyUnsafeConfigAnnotations": (1, 2, 0)}
LINUX = {"namespaces": None, "capabilities": None, "cgroup": None, "seccomp": None, "apparmor": None,
         "selinux": None, "intelRdt": None, "mountExtensions": (1, 2, 0), "netDevices": (1, 3, 0),
         "memoryPolicy": (1, 3, 0)}
NESTED = {"cgroup": {"v1", "v2", "systemd", "systemdUser", "rdma"},
          "seccomp": {"enabled", "actions", "operators", "archs", "knownFlags", "supportedFlags"},
          "apparmor": {"enabled"}, "selinux": {"enabled"}, "intelRdt": {"enabled", "schemata", "monitoring"},
          "memoryPolicy": {"modes", "flags"}, "mountExtensions": {"idmap"}, "netDevices": {"enabled"}}
NESTED_SINCE = {("intelRdt", "schemata"): (1, 3, 0), ("intelRdt", "monitoring"): (1, 3, 0)}


def features(ctx) -> dict:
    p = ctx.rt.cmd("features", timeout=30)
    if p.returncode != 0:
        raise Fail(f"`features` is not supported: {tail(p.stderr or p.stdout)}")
    try:
        return json.loads(p.stdout)
    except ValueError:
        raise Fail(f"`features` printed no JSON: {tail(p.stdout)}")


def _ver(s: str) -> tuple:
    m = SEMVER.match(s or "")
    if not m:
        raise Fail(f"{s!r} is not a SemVer version")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4) is None)


@check(159, fails_on="a runtime that probes the host (e.g. cgroup v2 or LSMs) to fill the features document")
def features_fixed(ctx):
    """The same document with the host's cgroup2 and /sys/kernel (LSMs, delegate list) hidden."""
    import subprocess
    f = features(ctx)
    argv = " ".join(f"'{a}'" for a in ctx.rt.argv("features"))
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        "mount -t tmpfs none /sys/fs/cgroup && mount -t tmpfs none /sys/kernel && exec " + argv],
                       capture_output=True, text=True, timeout=30)
    need(p.returncode == 0, f"`features` failed on a host without cgroup2 and /sys/kernel: {tail(p.stderr)}")
    try:
        g = json.loads(p.stdout)
    except ValueError:
        raise Fail(f"`features` printed no JSON on the changed host: {tail(p.stdout)}")
    need(f == g, "the features document changes with the host (cgroup2 and /sys/kernel hidden): "
         f"{sorted(k for k in set(f) | set(g) if f.get(k) != g.get(k))} differ")


@check(160, fails_on="crun 1.8.1 (no `features` command); a runtime refusing its own ociVersionMin")
def features_versions(ctx):
    f = features(ctx)
    for k in ("ociVersionMin", "ociVersionMax"):
        need(isinstance(f.get(k), str), f"features lacks {k}")
    need(_ver(f["ociVersionMax"]) >= _ver(f["ociVersionMin"]), "ociVersionMax < ociVersionMin")
    for v in (f["ociVersionMin"], f["ociVersionMax"]):
        b = ctx.bundle(["/bin/true"])
        b.config["ociVersion"] = v
        b.save()
        rc, _, err, _ = ctx.run(b)
        need(rc == 0, f"a config with ociVersion {v} (named in features) was refused: {tail(err)}")


@check(161, fails_on="crun 1.8.1 (no `features` command)")
def features_properties(ctx):
    f = features(ctx)
    v = _ver(f.get("ociVersionMax", "0.0.0"))[:3]
    bad = []
    for k in f:
        if k not in TOP:
            bad.append(k)
        elif TOP[k] and v < TOP[k]:
            bad.append(f"{k} (new in {'.'.join(map(str, TOP[k]))}, document names {f['ociVersionMax']})")
    lin = f.get("linux") or {}
    for k, val in lin.items():
        if k not in LINUX:
            bad.append(f"linux.{k}")
            continue
        if LINUX[k] and v < LINUX[k]:
            bad.append(f"linux.{k} (new in {'.'.join(map(str, LINUX[k]))})")
        if isinstance(val, dict):
            for sub in val:
                if sub not in NESTED.get(k, set()):
                    bad.append(f"linux.{k}.{sub}")
                elif (k, sub) in NESTED_SINCE and v < NESTED_SINCE[(k, sub)]:
                    bad.append(f"linux.{k}.{sub} (new in 1.3.0)")
    need(not bad, f"properties not defined by spec {f.get('ociVersionMax')}: {bad}")


@check(162, fails_on="runc 1.1.5 (lists ratime and rnostrictatime but rejects them)")
def features_hooks_mount_options(ctx):
    f = features(ctx)
    hooks = f.get("hooks") or []
    h = Hooks(ctx)
    b = ctx.bundle(["/bin/true"])
    for kind in hooks:
        if kind == "startContainer":
            continue  # needs a path inside the container; judged by spec#59
        h.add(b, kind, kind)
    with ctx.container(b) as c:
        c.create()
        c.start()
        c.wait_status("stopped")
        c.delete()
    missing = [k for k in hooks if k != "startContainer" and k not in h.seq()]
    need(not missing, f"listed hooks that did not run: {missing}")
    opts = f.get("mountOptions") or []
    data_like = [o for o in opts if "=" in o]
    need(not data_like, f"mountOptions lists filesystem data options: {data_like}")
    special = {"idmap", "ridmap", "remount"}
    src = ctx.tmpdir("fsrc")
    rejected = []
    for o in opts:
        if o in special:
            continue
        b = ctx.bundle(["/bin/true"])
        b.mount(destination="/mnt/o", type="bind", source=str(src), options=["rbind", o] if o not in ("bind", "rbind") else [o])
        rc, _, err, _ = ctx.run(b)
        if rc != 0:
            rejected.append(f"{o} ({tail(err, 80)})")
    need(not rejected, f"listed mount options rejected: {rejected}")


@check(163, fails_on="crun 1.8.1 (no `features` command)")
def features_linux_names(ctx):
    f = features(ctx)
    lin = f.get("linux") or {}
    problems = []
    for ns in lin.get("namespaces") or []:
        b = ctx.bundle(["/bin/true"])
        if not any(n["type"] == ns for n in b.linux["namespaces"]):
            b.linux["namespaces"].append({"type": ns})
        if ns == "user":
            from .namespaces import _userns
            b.linux["namespaces"].remove({"type": "user"})
            _userns(b)
        b.save()
        rc, _, err, _ = ctx.run(b)
        if rc != 0:
            problems.append(f"namespace {ns}: {tail(err, 80)}")
    grantable = host_caps()["bounding"]
    caps = [c for c in lin.get("capabilities") or [] if c in CAP_NAMES and grantable & cap_mask([c])]
    b = ctx.bundle(["/bin/true"])
    b.process["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    b.save()
    rc, _, err, _ = ctx.run(b)
    if rc != 0:
        problems.append(f"listed capabilities: {tail(err, 80)}")
    sc = lin.get("seccomp") or {}
    if sc.get("enabled"):
        rules = []
        for a in sc.get("actions") or []:
            if a in ("SCMP_ACT_NOTIFY",):
                continue
            r = {"names": ["acct"], "action": a}
            rules.append(r)
            b = ctx.bundle(["/bin/true"])
            b.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [r]}
            b.save()
            rc, _, err, _ = ctx.run(b)
            if rc != 0:
                problems.append(f"seccomp action {a}: {tail(err, 80)}")
        for op in sc.get("operators") or []:
            b = ctx.bundle(["/bin/true"])
            b.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["acct"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "valueTwo": 1, "op": op}]}]}
            b.save()
            rc, _, err, _ = ctx.run(b)
            if rc != 0:
                problems.append(f"seccomp operator {op}: {tail(err, 80)}")
        for fl in sc.get("supportedFlags") or []:
            b = ctx.bundle(["/bin/true"])
            b.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "flags": [fl],
                                  "syscalls": [{"names": ["acct"], "action": "SCMP_ACT_ERRNO"}]}
            b.save()
            rc, _, err, _ = ctx.run(b)
            if rc != 0:
                problems.append(f"seccomp supported flag {fl}: {tail(err, 80)}")
    need(not problems, "; ".join(problems))


@check(164, fails_on="crun 1.8.1 (no features command); a runtime claiming idmap it does not do, or doing it unclaimed")
def features_idmap_honest(ctx):
    f = features(ctx)
    claimed = (((f.get("linux") or {}).get("mountExtensions") or {}).get("idmap") or {}).get("enabled") is True
    from .rootfs import idmap_mount
    try:
        idmap_mount(ctx)
        works = True
    except Fail:
        works = False
    need(claimed == works, f"mountExtensions.idmap.enabled is {claimed}, but idmapped mounts "
         f"{'work' if works else 'do not work'}")


@check(165, fails_on="crun 1.8.1 (no `features` command)")
def features_annotations(ctx):
    f = features(ctx)
    ann = f.get("annotations")
    if ann is not None:
        need(isinstance(ann, dict) and all(isinstance(k, str) and k and isinstance(v, str) for k, v in ann.items()),
             f"features annotations is not a map of non-empty string keys to strings: {ann!r}")
    unsafe = f.get("potentiallyUnsafeConfigAnnotations")
    if unsafe is not None:
        need(isinstance(unsafe, list) and all(isinstance(k, str) and k for k in unsafe),
             f"potentiallyUnsafeConfigAnnotations is not a list of keys/prefixes: {unsafe!r}")
