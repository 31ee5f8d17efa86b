"""The image verbs of the CLI: `image import|ls|inspect|rm`, `diff`, `explain`, and the bundle
that `create/run --image` get (cli.py calls `bundle_from_image_flags`).

`explain` prints the LaunchPlan that `create` would execute (plan.build_plan + describe()):
the same object, so the explanation cannot drift from the behaviour.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import sys

from pyoci.errors import PyociError, UsageError

_IMPORT = {"busybox": (False, False, ()), "help": (False, False, ("h",))}
_LS = {"format": (True, False, ("f",)), "quiet": (False, False, ("q",)), "help": (False, False, ("h",))}
_INSPECT = {"format": (True, False, ("f",)), "help": (False, False, ("h",))}
_RM = {"help": (False, False, ("h",))}
_DIFF = {"format": (True, False, ("f",)), "help": (False, False, ("h",))}
_EXPLAIN = {"format": (True, False, ("f",)), "image": (True, False, ()), "name": (True, False, ()),
            "network": (True, False, ()), "help": (False, False, ("h",))}

USAGE = {
    "image": "pyoci image import FILE|DIR [NAME] | import --busybox [NAME] | ls [--format json] [-q] |"
             " inspect NAME | rm NAME...",
    "diff": "pyoci diff [--format json] CONTAINER-ID",
    "explain": "pyoci explain [--format text|json] [--name ID] BUNDLE\n"
               "       pyoci explain [--format text|json] [--name ID] [--network bridge] --image NAME [-- CMD...]",
}


def _parse(argv, spec):
    from pyoci.cli import _parse as parse
    a, _ = parse(argv, spec)
    return a


def dispatch(verb: str, argv: list[str], root: str) -> int:
    if verb == "image":
        return _image(argv, root)
    if verb == "diff":
        return _diff(argv, root)
    if verb == "explain":
        return _explain(argv, root)
    raise UsageError(f"unknown verb {verb!r}")


# ─────────────────────────────── image ───────────────────────────────

def _image(argv: list[str], root: str) -> int:
    from pyoci import images
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: " + USAGE["image"])
        return 0 if argv else 1
    sub, rest = argv[0], argv[1:]
    if sub == "import":
        a = _parse(rest, _IMPORT)
        if a.flags.get("busybox"):
            if len(a.pos) > 1:
                raise UsageError("usage: pyoci image import --busybox [NAME]")
            img = images.import_busybox(root, a.pos[0] if a.pos else "busybox")
        else:
            if len(a.pos) not in (1, 2):
                raise UsageError("usage: pyoci image import FILE|DIR [NAME]  (or --busybox [NAME])")
            img = images.import_image(root, a.pos[0], a.pos[1] if len(a.pos) == 2 else None)
        for n in img.get("notes") or []:
            sys.stderr.write(f"note: {n}\n")
        print(f"{', '.join(img['names'])} {img['id']}")
        return 0
    if sub in ("ls", "list"):
        a = _parse(rest, _LS)
        imgs = images.list_images(root)
        if a.flags.get("quiet"):
            for i in imgs:
                print(i["id"])
            return 0
        fmt = a.flags.get("format", "table")
        if fmt == "json":
            sys.stdout.write(json.dumps(imgs, indent=2) + "\n")
            return 0
        if fmt != "table":
            raise UsageError(f"invalid format option: {fmt}")
        rows = [("NAME", "ID", "LAYERS", "SIZE", "FORMAT", "CONTAINERS")]
        for i in imgs:
            rows.append((", ".join(i.get("names") or ["<none>"]), i["id"].split(":")[1][:12],
                         str(len(i.get("layers") or [])), _size(i.get("size") or 0), i.get("format", ""),
                         ", ".join(i.get("containers") or []) or "-"))
        _table(rows)
        return 0
    if sub == "inspect":
        a = _parse(rest, _INSPECT)
        if len(a.pos) != 1:
            raise UsageError("usage: pyoci image inspect NAME")
        sys.stdout.write(json.dumps(images.inspect_image(root, a.pos[0]), indent=2) + "\n")
        return 0
    if sub in ("rm", "remove"):
        a = _parse(rest, _RM)
        if not a.pos:
            raise UsageError("usage: pyoci image rm NAME...")
        for ref in a.pos:
            r = images.remove_image(root, ref)
            for n in r["untagged"]:
                print(f"Untagged: {n}")
            if r["deleted"]:
                print(f"Deleted: {r['deleted']}")
        return 0
    raise UsageError(f"unknown image command {sub!r}: {USAGE['image']}")


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return str(n)


def _table(rows) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


# ─────────────────────────────── create/run --image ───────────────────────────────

def _generated_id(image: str) -> str:
    base = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    base = re.sub(r"[^A-Za-z0-9_.-]", "", base)[:40] or "ctr"
    return f"{base}-{secrets.token_hex(4)}"


def bundle_from_image_flags(a, root: str):
    """`create/run --image NAME [--name ID] [--network MODE] [-- CMD...]`: make the container's
    layer and bundle (overlay mounted), then return `a` as if `--bundle DIR ID` was given."""
    from pyoci import images
    image = a.flags["image"]
    if a.flags.get("bundle"):
        raise UsageError("--image and --bundle cannot be used together: --image writes the bundle")
    cid = a.flags.get("name")
    if not cid:
        cid = _generated_id(image)
        sys.stderr.write(f"container id: {cid}\n")
    bundle = images.prepare_container(root, image, cid, cmd=list(a.pos) or None,
                                      network=a.flags.get("network"))
    a.flags["bundle"] = bundle
    a.pos = [cid]
    return a


# ─────────────────────────────── diff ───────────────────────────────

def _diff(argv: list[str], root: str) -> int:
    from pyoci import images
    a = _parse(argv, _DIFF)
    if len(a.pos) != 1:
        raise UsageError("usage: " + USAGE["diff"])
    changes = images.container_diff(root, a.pos[0])
    fmt = a.flags.get("format", "text")
    if fmt == "json":
        out = {"changed": [], "added": [], "deleted": []}
        key = {"C": "changed", "A": "added", "D": "deleted"}
        for kind, path in changes:
            out[key[kind]].append(path)
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    if fmt not in ("text", "table"):
        raise UsageError(f"invalid format option: {fmt}")
    for kind, path in changes:
        print(f"{kind} {path}")
    return 0


# ─────────────────────────────── explain ───────────────────────────────

def explain_image_config(root: str, ref: str, cid: str, cmd=None, network=None) -> tuple[dict, str, dict]:
    """The config `create --image` would write, without writing or mounting anything.
    Returns (config, bundle dir, overlay description)."""
    from pyoci import images
    store = images.Store(root)
    img = store.find(ref)
    d = store.container_dir(cid)
    lower = store.rootfs(img)
    user = None
    if (img.get("config") or {}).get("User"):
        user = images.resolve_user(img["config"]["User"], images.read_in_rootfs(lower, "etc/passwd"),
                                   images.read_in_rootfs(lower, "etc/group"))
    merged = os.path.join(d, "merged")
    cfg = images.container_config(img, cid, merged, cmd, network, user)
    overlay = {"image": (img.get("names") or [img["id"]])[0], "imageId": img["id"],
               "lowerdir (read-only, the image)": lower, "upperdir (the container's changes)":
               os.path.join(d, "upper"), "workdir": os.path.join(d, "work"),
               "merged (root.path)": merged,
               "mount": f"overlay on {merged} ({images.OVERLAY_OPTS}), in the mount namespace of "
                        "`pyoci create`; unmounted by `pyoci delete`"}
    return cfg, os.path.join(d, "bundle"), overlay


def explain(root: str, bundle: str | None = None, image: str | None = None, cid: str | None = None,
            cmd=None, network=None) -> dict:
    """The plan create would carry out, as a dict: plan.describe() plus what it implies (the
    cgroup files written, the overlay of an image container)."""
    from pyoci.plan import Options, build_plan
    overlay = None
    if image:
        cid = cid or _generated_id(image)
        cfg, bundle_dir, overlay = explain_image_config(root, image, cid, cmd, network)
        warnings: list[str] = []
        from pyoci import spec
        warnings = spec.validate_config(cfg)
    else:
        from pyoci import spec
        bundle_dir = os.path.abspath(bundle or ".")
        cfg, warnings = spec.load_bundle_config(bundle_dir)
        cid = cid or re.sub(r"[^A-Za-z0-9_.-]", "", os.path.basename(bundle_dir)) or "container"
    plan = build_plan(cfg, Options(container_id=cid, bundle=bundle_dir, root_dir=root), warnings)
    desc = plan.describe()
    desc["network"] = _network_desc(plan)
    desc["cgroup"] = _cgroup_desc(plan, cfg)
    desc["warnings"] = list(plan.warnings)
    if overlay:
        desc["image"] = overlay
    desc["annotations"] = plan.annotations
    return desc


def _network_desc(plan):
    net = plan.network
    if net is None:
        return desc_str(plan.describe().get("network"))
    br = getattr(net, "bridge", None)
    d = {"devices": [{"host_name": x.host_name, "name": x.name} for x in getattr(net, "devices", ()) or ()],
         "bridge": {"bridge": br.bridge, "subnet": br.subnet} if br else None,
         "hostname": getattr(net, "hostname", None), "netns_path": getattr(net, "netns_path", None)}
    if getattr(net, "bridge", None):
        d["summary"] = (f"bridge {net.bridge.bridge} (made if missing) with subnet {net.bridge.subnet}: "
                        "a veth pair, eth0 in the container with the next free address, default route "
                        "via the bridge address, an /etc/hosts line")
    return d


def desc_str(x):
    return x if isinstance(x, str) else json.dumps(x, default=str)


def _cgroup_desc(plan, cfg: dict) -> dict:
    from pyoci.cgroups import cgroup_root, convert_resources
    from pyoci.cgroups.resources import required_controllers
    from pyoci.errors import StageError
    try:
        root = cgroup_root()
    except StageError as e:
        root = None
        note = str(e)
    else:
        note = None
    res = plan.resources
    try:
        from pyoci.container import _cgroup_resources   # what create hands Cgroup.create
        res = _cgroup_resources(plan, cfg)
    except ImportError:
        pass
    files = convert_resources(res)
    out = {"path": plan.cgroup_path,
           "dir": os.path.join(root, plan.cgroup_path.lstrip("/")) if root and plan.cgroup_path else None,
           "controllers": required_controllers(files), "files": files,
           "deviceRules": len((res or {}).get("devices") or []),
           "then": "the init pid is written to cgroup.procs"}
    if note:
        out["note"] = note
    return out


def render_text(d: dict) -> str:
    L: list[str] = []
    add = L.append
    add(f"pyoci would create container {d['id']!r} from bundle {d['bundle']}")
    add(f"  state dir: {d['stateDir']}")
    if d.get("image"):
        im = d["image"]
        add("")
        add(f"Image {im['image']} ({im['imageId'][:19]}) as an overlay root filesystem:")
        for k, v in im.items():
            if k not in ("image", "imageId"):
                add(f"  {k}: {v}")
    ns = d["namespaces"]
    add("")
    add("Namespaces")
    add(f"  create: {' '.join(ns.get('create') or []) or '(none)'}")
    joins = ns.get("join") or {}
    add(f"  join:   {', '.join(f'{k} {v}' for k, v in joins.items()) or '(none)'}")
    for k in ("uidMappings", "gidMappings"):
        if ns.get(k):
            add(f"  {k}: {', '.join(str(m) for m in ns[k])}")
    if ns.get("timeOffsets"):
        add(f"  timeOffsets: {ns['timeOffsets']}")
    if d.get("hostname") or d.get("domainname"):
        add(f"  hostname: {d.get('hostname')}" + (f", domainname: {d['domainname']}" if d.get("domainname") else ""))
    add("")
    add("Root filesystem, in order")
    for s in d.get("rootfs") or []:
        add("  " + _step(s))
    p = d["process"]
    add("")
    add("Process")
    add(f"  args: {json.dumps(p.get('args'))}")
    add(f"  cwd: {p.get('cwd')}   user: {_user(p.get('user'))}   terminal: {p.get('terminal')}")
    for e in p.get("env") or []:
        add(f"  env: {e}")
    add("  capabilities:")
    for k, v in (p.get("capabilities") or {}).items():
        add(f"    {k:<12}{' '.join(v) if v else '(none)'}")
    add(f"  noNewPrivileges: {p.get('noNewPrivileges')}")
    for r in p.get("rlimits") or []:
        add(f"  rlimit {r['type']}: soft {r['soft']} hard {r['hard']}")
    for k in ("oomScoreAdj", "scheduler", "ioPriority", "personality", "execCPUAffinity",
              "memoryPolicy", "apparmorProfile", "selinuxLabel", "umask"):
        if p.get(k) is not None:
            add(f"  {k}: {p[k]}")
    for k, v in (p.get("sysctl") or {}).items():
        add(f"  sysctl {k} = {v}")
    add("")
    add(f"Seccomp: {d.get('seccomp') or 'none (no filter is loaded)'}")
    cg = d["cgroup"]
    add("")
    add(f"Cgroup {cg.get('path')}" + (f"  ({cg['dir']})" if cg.get("dir") else ""))
    if cg.get("controllers"):
        add(f"  enables in the parents' cgroup.subtree_control: {' '.join('+' + c for c in cg['controllers'])}")
    for f, v in (cg.get("files") or {}).items():
        add(f"  writes {f} = {v}")
    if cg.get("deviceRules"):
        add(f"  attaches an eBPF device program built from {cg['deviceRules']} rules")
    add(f"  then: {cg.get('then')}")
    if cg.get("note"):
        add(f"  note: {cg['note']}")
    add("")
    net = d.get("network")
    if isinstance(net, dict):
        add("Network")
        if net.get("summary"):
            add(f"  {net['summary']}")
        for dev in net.get("devices") or []:
            add(f"  move host interface {dev['host_name']} into the container as {dev['name']}")
        if net.get("netns_path"):
            add(f"  joins {net['netns_path']}")
    else:
        add(f"Network: {net}")
    add("")
    hooks = d.get("hooks") or {}
    add("Hooks" + ("" if hooks else ": none"))
    for k, v in hooks.items():
        add(f"  {k}: {', '.join(v)}")
    if d.get("annotations"):
        add("")
        add("Annotations")
        for k, v in d["annotations"].items():
            add(f"  {k} = {v}")
    if d.get("warnings"):
        add("")
        add("Warnings")
        for w in d["warnings"]:
            add(f"  {w}")
    return "\n".join(L)


def _user(u) -> str:
    if not u:
        return "?"
    s = f"{u.get('uid')}:{u.get('gid')}"
    if u.get("additionalGids"):
        s += f" +{','.join(map(str, u['additionalGids']))}"
    return s


def _step(s: dict) -> str:
    k = s.get("step")
    if k == "root":
        return (f"root {s['path']} ({'read-only' if s.get('readonly') else 'writable'}, "
                f"propagation {s.get('propagation')}"
                + (f", rootfsPropagation {s['rootfsPropagation']}" if s.get("rootfsPropagation") else "") + ")")
    if k == "mount":
        flags = ",".join(s.get("flags") or []) or "-"
        line = f"mount {s['destination']}: {s.get('type')} from {s.get('source')} flags {flags}"
        if s.get("data"):
            line += f" data {s['data']}"
        extra = {x: s[x] for x in s if x not in ("step", "index", "destination", "type", "source",
                                                 "options", "flags", "data")}
        if extra:
            line += " " + " ".join(f"{x}={_compact(v)}" for x, v in extra.items())
        return line
    if k == "device":
        return (f"device {s['path']} {s['type']} {s['major']}:{s['minor']} mode {s.get('fileMode')} "
                f"owner {s.get('uid')}:{s.get('gid')}")
    if k == "symlink":
        return f"symlink {s['path']} -> {s['target']}" + (f" (if the {s['when']})" if s.get("when") else "")
    if k in ("pivot_root", "chroot"):
        return f"{k} into {s['path']}"
    if k == "readonly_path":
        return f"read-only {s['path']}"
    if k == "masked_path":
        return f"mask {s['path']}"
    if k == "readonly_root":
        return "remount / read-only"
    rest = " ".join(f"{x}={_compact(v)}" for x, v in s.items() if x != "step")
    return f"{k} {rest}".strip()


def _compact(v) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    if isinstance(v, dict):
        return json.dumps(v, default=str)
    return str(v)


def _explain(argv: list[str], root: str) -> int:
    a = _parse(argv, _EXPLAIN)
    fmt = a.flags.get("format", "text")
    if fmt not in ("text", "json"):
        raise UsageError(f"invalid format option: {fmt} (text or json)")
    if a.flags.get("image"):
        d = explain(root, image=a.flags["image"], cid=a.flags.get("name"), cmd=list(a.pos) or None,
                    network=a.flags.get("network"))
    else:
        if len(a.pos) > 1:
            raise UsageError("usage: " + USAGE["explain"])
        if a.flags.get("network"):
            raise UsageError("--network goes with --image (a bundle's config says its network)")
        d = explain(root, bundle=a.pos[0] if a.pos else ".", cid=a.flags.get("name"))
    if fmt == "json":
        sys.stdout.write(json.dumps(d, indent=2, default=str) + "\n")
    else:
        print(render_text(d))
    return 0
