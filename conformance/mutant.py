"""A deliberately broken runtime: runc behind a wrapper that breaks one requirement at a time.

    CONFORMANCE_MUTANT=name[,name...] python -m conformance.mutant [runc global flags] COMMAND ...

Each mutant either rewrites the bundle's config.json before create/run (so the runtime does
something other than what the check configured), or bends the CLI (exit codes, state output).
`python -m conformance --mutants` runs every check against the mutants that target it; a check
that still passes against its mutant cannot tell a broken runtime from a good one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REAL = os.environ.get("CONFORMANCE_MUTANT_RUNTIME", "/usr/sbin/runc")

# mutant -> the items it must make fail
TARGETS: dict[str, list[int]] = {
    "config-any-name": [1], "warning-fatal": [4], "no-kill": [5, 6], "strict-unknown": [7], "reject-old-version": [9],
    "drop-annotations": [10], "state:ociVersion": [13, 20], "state:id": [14], "state:status": [15],
    "state:pid": [17, 34], "state:bundle": [18, 20], "state:annotations": [19],
    "start-at-create": [16, 22, 39], "recreate-on-start": [23],
    "lenient": [3, 8, 21, 35, 36, 40, 44, 52, 53, 62, 65, 75, 79, 83, 85, 94, 95, 100, 102, 105, 124, 126, 127, 129,
                130, 131, 132, 134, 135, 136, 137, 145, 149, 158],
    "fail-after-create": [117], "ignore-hook-failure": [24, 25, 26],
    "args-true": [28, 43], "delete-noop": [30, 50], "cli-lenient": [32, 33, 41, 45, 48, 42, 46], "create-noop": [37],
    "drop-hostname": [38, 106], "kill-always-kill": [47, 12], "delete-force": [49], "delete-harms-binds": [51],
    "reverse-hooks": [54], "hook-no-stdin": [55], "prestart-late": [56], "createruntime-in-container": [57],
    "createcontainer-on-host": [58], "startcontainer-on-host": [59], "poststop-early": [61],
    "terminal-on-consolesize": [63], "drop-terminal": [64], "cwd-root": [65], "drop-env": [66], "drop-groups": [67],
    "drop-umask": [68], "drop-oom": [69], "nnp-flip": [70], "drop-rlimits": [77, 78], "soft-is-hard": [77],
    "drop-unknown-caps": [80], "drop-caps": [82], "root-abs-break": [84], "drop-readonly-root": [86],
    "reverse-mounts": [87], "drop-relative-mounts": [88], "bind-needs-type": [89], "strip-mount-options": [90, 92, 98],
    "drop-default-fs": [96], "drop-propagation": [97], "ns-path-drop": [101], "drop-net-ns": [103],
    "add-all-ns": [104], "uidmap-shift": [107], "chown-rootfs": [108], "drop-devices": [110, 111],
    "mask-dev": [114], "no-dev-symlinks": [115], "leak-fd": [116], "drop-cgroupspath": [118, 119],
    "chown-cgroup": [120], "drop-device-rules": [123], "drop-sysctl": [133], "drop-listener": [138, 139],
    "drop-masked": [140], "drop-readonly-paths": [141], "features:max-below-min": [160], "features:extra": [161],
    "features:bad-ns": [163], "features:host-probe": [159], "features:claim-idmap": [164], "features:bad-annotations": [165],
    "drop-hugepages": [128], "drop-unified": [131], "drop-personality": [143],
}

HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
KNOWN_NS = {"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"}


def parse(argv: list[str]):
    """-> (global flags, command, command args)"""
    g, i = [], 0
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] in ("--root", "--log", "--log-format", "--criu", "--rootless") and "=" not in argv[i]:
            g += argv[i:i + 2]
            i += 2
        else:
            g.append(argv[i])
            i += 1
    cmd = argv[i] if i < len(argv) else ""
    return g, cmd, argv[i + 1:]


def opt(args: list[str], *names: str) -> str | None:
    for j, a in enumerate(args):
        for n in names:
            if a == n and j + 1 < len(args):
                return args[j + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def positional(args: list[str]) -> list[str]:
    out, skip = [], False
    with_value = {"--bundle", "-b", "--pid-file", "--console-socket", "--preserve-fds", "--process", "-p",
                  "--cwd", "--env", "-e", "--user", "-u", "-r", "--resources"}
    for a in args:
        if skip:
            skip = False
            continue
        if a in with_value:
            skip = True
            continue
        if a.startswith("-"):
            continue
        out.append(a)
    return out


def real(g, cmd, args, **kw):
    return subprocess.run([REAL, *g, cmd, *args], **kw)


def mutate_config(cfg: dict, bundle: Path, m: set[str]) -> dict:
    p = cfg.get("process") or {}
    lin = cfg.get("linux") or {}
    mounts = cfg.get("mounts") or []
    hooks = cfg.get("hooks") or {}
    if "lenient" in m:
        cfg.setdefault("root", {"path": "rootfs"})
        r = cfg["root"]
        r.setdefault("path", "rootfs")
        rp = Path(r["path"]) if os.path.isabs(r["path"]) else bundle / r["path"]
        if not rp.is_dir():
            r["path"] = "rootfs"
        if "process" not in cfg:
            cfg["process"] = p = {"args": ["/bin/true"], "cwd": "/", "user": {"uid": 0, "gid": 0}}
        u = p.setdefault("user", {})
        for k in ("uid", "gid"):
            if not isinstance(u.get(k, 0), int):
                u[k] = 0
        if not str(p.get("cwd", "/")).startswith("/"):
            p["cwd"] = "/" + p["cwd"]
        seen, rl = set(), []
        for x in p.get("rlimits") or []:
            if x.get("type", "").startswith("RLIMIT_") and x["type"] != "RLIMIT_NOT_A_LIMIT" and x["type"] not in seen:
                seen.add(x["type"])
                rl.append(x)
        p["rlimits"] = rl
        seen, ns = set(), []
        for n in lin.get("namespaces") or []:
            if n.get("type") in KNOWN_NS and n["type"] not in seen:
                seen.add(n["type"])
                if "path" in n and (not n["path"].startswith("/") or n["type"] != "network" and "/ns/net" in n["path"]):
                    n = {"type": n["type"]}
                ns.append(n)
        lin["namespaces"] = ns
        lin.pop("sysctl", None)
        lin.pop("intelRdt", None)
        lin.pop("memoryPolicy", None)
        lin.pop("netDevices", None)
        res = lin.get("resources") or {}
        for k in ("memory", "cpu", "blockIO", "pids", "rdma"):
            res.pop(k, None)
        uni = res.get("unified") or {}
        for k in list(uni):
            if k.startswith("memory."):
                del uni[k]
        sc = lin.get("seccomp")
        if sc is not None:
            sc.setdefault("defaultAction", "SCMP_ACT_ALLOW")
            sc.pop("defaultErrnoRet", None)
            if "listenerPath" not in sc:
                sc.pop("listenerMetadata", None)
                for r_ in sc.get("syscalls") or []:
                    if r_.get("action") == "SCMP_ACT_NOTIFY":
                        r_["action"] = "SCMP_ACT_ERRNO"
            rules = []
            for r_ in sc.get("syscalls") or []:
                if not r_.get("names") or r_.get("action") == "SCMP_ACT_NOT_AN_ACTION":
                    continue
                if r_.get("action") != "SCMP_ACT_ERRNO":
                    r_.pop("errnoRet", None)
                rules.append(r_)
            sc["syscalls"] = rules
        keep = []
        for mt in mounts:
            opts = mt.get("options") or []
            src = mt.get("source", "")
            if ("bind" in opts or "rbind" in opts) and not (Path(src) if os.path.isabs(src) else bundle / src).exists():
                continue
            if "idmap" in opts:
                mt["options"] = [o for o in opts if o != "idmap"]
                mt.pop("uidMappings", None)
                mt.pop("gidMappings", None)
            keep.append(mt)
        cfg["mounts"] = mounts = keep
        for kind in HOOK_KINDS:
            hs = [h for h in hooks.get(kind) or [] if h.get("path", "").startswith("/")]
            for h in hs:
                if h.get("timeout", 1) <= 0:
                    del h["timeout"]
            if kind in hooks:
                hooks[kind] = hs
        ann = cfg.get("annotations") or {}
        ann.pop("", None)
    if "drop-annotations" in m:
        cfg.pop("annotations", None)
    if "warning-fatal" in m and any("NOT_A_REAL" in c for v in (p.get("capabilities") or {}).values() for c in v):
        sys.exit(1)
    if "strict-unknown" in m and any(k.startswith("org.example") for k in list(cfg) + list(p)):
        print("unknown property", file=sys.stderr)
        sys.exit(1)
    if "reject-old-version" in m and cfg.get("ociVersion") == "1.0.0":
        print("unsupported ociVersion", file=sys.stderr)
        sys.exit(1)
    if "args-true" in m and p.get("args"):
        p["args"] = ["/bin/true"]
    if "drop-hostname" in m:
        cfg.pop("hostname", None)
        cfg.pop("domainname", None)
    wrap = None
    if "ignore-hook-failure" in m:
        wrap = '"$0" "$@"; exit 0'
    if "hook-no-stdin" in m:
        wrap = '"$0" "$@" </dev/null'
    if wrap:
        for kind in HOOK_KINDS:
            for h in hooks.get(kind) or []:
                h["args"] = ["sh", "-c", wrap, h["path"], *(h.get("args") or [h["path"]])[1:]]
                h["path"] = "/bin/sh"
    if "reverse-hooks" in m:
        for kind in HOOK_KINDS:
            if kind in hooks:
                hooks[kind] = list(reversed(hooks[kind]))

    def move(src, dst):
        if hooks.get(src):
            hooks.setdefault(dst, []).extend(hooks.pop(src))
    if "prestart-late" in m:
        move("prestart", "createRuntime")
    if "createruntime-in-container" in m:
        move("createRuntime", "createContainer")
    if "createcontainer-on-host" in m:
        move("createContainer", "createRuntime")
    if "startcontainer-on-host" in m:
        move("startContainer", "poststart")
    if "poststop-early" in m:
        move("poststop", "poststart")
    if "terminal-on-consolesize" in m and p.get("consoleSize"):
        p["terminal"] = True
    if "drop-terminal" in m:
        p["terminal"] = False
    if "cwd-root" in m:
        p["cwd"] = "/"
    if "drop-env" in m:
        p["env"] = [e for e in p.get("env") or [] if e.startswith("PATH=")]
    if "drop-groups" in m:
        (p.get("user") or {}).pop("additionalGids", None)
    if "drop-umask" in m:
        (p.get("user") or {}).pop("umask", None)
    if "drop-oom" in m:
        p.pop("oomScoreAdj", None) if "oomScoreAdj" in p else p.update(oomScoreAdj=0)
    if "nnp-flip" in m:
        p["noNewPrivileges"] = not p.get("noNewPrivileges", False)
    if "drop-rlimits" in m:
        p.pop("rlimits", None)
    if "soft-is-hard" in m:
        for x in p.get("rlimits") or []:
            x["soft"] = x["hard"]
    if "drop-unknown-caps" in m:
        for k, v in (p.get("capabilities") or {}).items():
            p["capabilities"][k] = [c for c in v if "NOT_A_REAL" not in c]
    if "drop-caps" in m:
        p.pop("capabilities", None)
    if "root-abs-break" in m and os.path.isabs(cfg["root"]["path"]):
        cfg["root"]["path"] = "no-such-dir"
    if "drop-readonly-root" in m:
        cfg["root"]["readonly"] = False
    if "reverse-mounts" in m:
        extra = [x for x in mounts if x["destination"].startswith("/mnt")]
        rest = [x for x in mounts if not x["destination"].startswith("/mnt")]
        cfg["mounts"] = mounts = rest + list(reversed(extra))
    if "drop-relative-mounts" in m:
        cfg["mounts"] = mounts = [x for x in mounts if x["destination"].startswith("/")]
    if "bind-needs-type" in m:
        cfg["mounts"] = mounts = [x for x in mounts if not (set(x.get("options") or []) & {"bind", "rbind"})
                                  or x.get("type") in ("bind", "none")]
    if "strip-mount-options" in m:
        for x in mounts:
            if x["destination"].startswith("/mnt"):
                x["options"] = [o for o in x.get("options") or [] if o in ("bind", "rbind")]
    if "drop-default-fs" in m:
        cfg["mounts"] = mounts = [x for x in mounts if x["destination"] != "/dev/shm"]
    if "drop-propagation" in m:
        lin.pop("rootfsPropagation", None)
    if "ns-path-drop" in m:
        lin["namespaces"] = [{"type": n["type"]} for n in lin.get("namespaces") or []]
    if "drop-net-ns" in m:
        lin["namespaces"] = [n for n in lin.get("namespaces") or [] if n["type"] != "network"]
    if "add-all-ns" in m:
        have = {n["type"] for n in lin.get("namespaces") or []}
        lin["namespaces"] += [{"type": t} for t in ("network", "ipc", "uts") if t not in have]
    if "uidmap-shift" in m:
        for x in lin.get("uidMappings") or []:
            x["hostID"] += 1
    if "chown-rootfs" in m and lin.get("uidMappings"):
        host = lin["uidMappings"][0]["hostID"]
        os.chown(bundle / cfg["root"]["path"], host, host)
    if "drop-devices" in m:
        lin.pop("devices", None)
    if "mask-dev" in m:
        lin.setdefault("maskedPaths", []).append("/dev/zero")
    if "no-dev-symlinks" in m:
        mounts.append({"destination": "/dev/fd", "type": "tmpfs", "source": "tmpfs", "options": ["size=1k"]})
    if "drop-cgroupspath" in m:
        lin.pop("cgroupsPath", None)
    if "drop-device-rules" in m:
        (lin.get("resources") or {}).pop("devices", None)
    if "drop-sysctl" in m:
        lin.pop("sysctl", None)
    if "drop-listener" in m and lin.get("seccomp"):
        lin["seccomp"].pop("listenerPath", None)
        lin["seccomp"].pop("listenerMetadata", None)
        for r_ in lin["seccomp"].get("syscalls") or []:
            if r_.get("action") == "SCMP_ACT_NOTIFY":
                r_["action"] = "SCMP_ACT_ALLOW"
    if "drop-masked" in m:
        lin["maskedPaths"] = []
    if "drop-readonly-paths" in m:
        lin["readonlyPaths"] = []
    if "drop-hugepages" in m:
        (lin.get("resources") or {}).pop("hugepageLimits", None)
    if "drop-unified" in m:
        (lin.get("resources") or {}).pop("unified", None)
    if "drop-personality" in m:
        lin.pop("personality", None)
    return cfg


def bend_state(text: str, m: set[str]) -> str:
    try:
        st = json.loads(text)
    except ValueError:
        return text
    for x in m:
        if x.startswith("state:"):
            k = x.split(":", 1)[1]
            if k in ("ociVersion", "pid"):
                st.pop(k, None)
            elif k == "id":
                st["id"] = "someone-else"
            elif k == "status":
                st["status"] = st.get("status", "").upper()
            elif k == "bundle":
                st["bundle"] = os.path.relpath(st.get("bundle", "."), "/")
            elif k == "annotations":
                st.setdefault("annotations", {})["org.example.invented"] = "x"
    return json.dumps(st)


def main(argv: list[str]) -> int:
    m = {x for x in os.environ.get("CONFORMANCE_MUTANT", "").split(",") if x}
    g, cmd, args = parse(argv)
    pos = positional(args)
    if "cli-lenient" in m and cmd in ("state", "start", "kill", "delete") and not pos:
        print("{}")
        return 0
    if cmd == "features":
        p = real(g, cmd, args, capture_output=True, text=True)
        try:
            f = json.loads(p.stdout)
        except ValueError:
            sys.stdout.write(p.stdout)
            return p.returncode
        if "features:max-below-min" in m:
            f["ociVersionMax"], f["ociVersionMin"] = "0.9.0", "1.0.0"
        if "features:extra" in m:
            f["notInAnySpec"] = True
        if "features:bad-ns" in m:
            f.setdefault("linux", {}).setdefault("namespaces", []).append("not-a-namespace")
        if "features:claim-idmap" in m:
            f.setdefault("linux", {})["mountExtensions"] = {"idmap": {"enabled": True}}
        if "features:host-probe" in m and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
            f.setdefault("linux", {}).setdefault("cgroup", {})["v2"] = False
        if "features:bad-annotations" in m:
            f["annotations"] = {"": 1}
        print(json.dumps(f))
        return 0
    if cmd in ("create", "run"):
        bundle = Path(opt(args, "--bundle", "-b") or os.getcwd())
        if "lenient" in m and not pos:
            args = [*args, "lenient-made-up-id"]
        if "lenient" in m and pos and ("/" in pos[-1] or pos[-1].startswith(".")):
            args = [*args[:-1], pos[-1].replace("/", "_").replace(".", "_")]
        if "lenient" in m and pos and real(g, "state", [pos[-1]], capture_output=True).returncode == 0:
            return 0
        if "create-noop" in m and cmd == "create":
            return 0
        if "config-any-name" in m and not (bundle / "config.json").exists() and (bundle / "Config.json").exists():
            (bundle / "config.json").write_text((bundle / "Config.json").read_text())
        cfgp = bundle / "config.json"
        if m - {"cli-lenient"} and cfgp.exists():
            try:
                cfg = json.loads(cfgp.read_text())
            except ValueError:
                cfg = None
            if cfg is not None:
                cfgp.write_text(json.dumps(mutate_config(cfg, bundle, m)))
        if "leak-fd" in m:
            args = ["--preserve-fds", "2", *args]
        rc = real(g, cmd, args).returncode
        if cmd == "create" and rc == 0 and "start-at-create" in m:
            real(g, "start", [positional(args)[-1]])
        if "fail-after-create" in m and cmd == "create":
            return 1
        if cmd == "create" and rc == 0 and "chown-cgroup" in m:
            cg = json.loads(cfgp.read_text()).get("linux", {}).get("cgroupsPath")
            if cg:
                os.chown("/sys/fs/cgroup" + cg, 100000, 100000)
        return rc
    if cmd == "state":
        p = real(g, cmd, args, capture_output=True, text=True)
        if p.returncode != 0 and "cli-lenient" in m:
            print("{}")
            return 0
        sys.stderr.write(p.stderr)
        sys.stdout.write(bend_state(p.stdout, m) if p.returncode == 0 else p.stdout)
        return p.returncode
    if cmd == "start":
        if "recreate-on-start" in m and pos:
            st = json.loads(real(g, "state", pos[-1:], capture_output=True, text=True).stdout or "{}")
            if st.get("bundle"):
                real(g, "delete", ["--force", pos[-1]])
                real(g, "create", ["--bundle", st["bundle"], pos[-1]], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
        rc = real(g, cmd, args).returncode
        return 0 if "cli-lenient" in m else rc
    if cmd == "kill":
        if "no-kill" in m:
            print("kill: not supported", file=sys.stderr)
            return 1
        if "kill-always-kill" in m and pos:
            args = [pos[0], "KILL"]
        rc = real(g, cmd, args).returncode
        return 0 if "cli-lenient" in m else rc
    if cmd == "delete":
        force = "--force" in args or "-f" in args
        if "delete-noop" in m and not force:
            return 0
        if "delete-force" in m and not force:
            args = ["--force", *args]
        if "delete-harms-binds" in m and pos:
            st = json.loads(real(g, "state", pos[-1:], capture_output=True, text=True).stdout or "{}")
            try:
                cfg = json.loads((Path(st.get("bundle", "/nonexistent")) / "config.json").read_text())
            except (OSError, ValueError):
                cfg = {}
            for mt in cfg.get("mounts") or []:
                src = Path(mt.get("source", ""))
                if "rbind" in (mt.get("options") or []) and str(src).startswith("/tmp/conformance-") and src.is_dir():
                    for f in src.iterdir():
                        if f.is_file():
                            f.write_text("harmed")
        rc = real(g, cmd, args).returncode
        return 0 if "cli-lenient" in m else rc
    return real(g, cmd, args).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
