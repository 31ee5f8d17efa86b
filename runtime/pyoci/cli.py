"""runc's command line, over the library API in container.py.

Flags are accepted as `--flag value`, `--flag=value` and single-dash `-flag` (urfave/cli
style), before or after the container id; after the id of `exec`, everything is the
command. Errors: one line in the `--log` file (JSON with --log-format json) and the
plain message on stderr, exit 1 (exec: 255 when the process could not be started).
"""
from __future__ import annotations

import json
import os
import signal
import sys

from pyoci import __version__, OCI_VERSION
from pyoci.errors import ConfigError, PyociError, UsageError
from pyoci.log import log

# name -> (takes_value, multi, aliases)
GLOBAL_FLAGS = {
    "root": (True, False, ()), "log": (True, False, ()), "log-format": (True, False, ()),
    "debug": (False, False, ()), "systemd-cgroup": (False, False, ()), "criu": (True, False, ()),
    "rootless": (True, False, ()), "help": (False, False, ("h",)), "version": (False, False, ("v",)),
}

_CREATE = {"bundle": (True, False, ("b",)), "console-socket": (True, False, ()),
           "pid-file": (True, False, ()), "no-pivot": (False, False, ()),
           "no-new-keyring": (False, False, ()), "preserve-fds": (True, False, ()),
           # pyoci extensions for direct use (images.py): a container made from an image
           "image": (True, False, ()), "name": (True, False, ()), "network": (True, False, ())}

# verbs implemented in pyoci.cli_images: images, diff, explain (dispatch(verb, argv, root))
EXT_VERBS = {"image": "manage the local image store (import, ls, inspect, rm)",
             "diff": "list what a container changed on top of its image",
             "explain": "print the plan pyoci would carry out for a bundle or an image"}

VERBS: dict[str, tuple[dict, str, str]] = {
    # verb: (flags, usage of positionals, one-line help)
    "create": (_CREATE, "<container-id>", "create a container"),
    "run": ({**_CREATE, "detach": (False, False, ("d",)), "keep": (False, False, ())},
            "<container-id>", "create and run a container"),
    "start": ({}, "<container-id>", "executes the user defined process in a created container"),
    "state": ({}, "<container-id>", "output the state of a container"),
    "kill": ({"all": (False, False, ("a",))}, "<container-id> [signal]",
             "kill sends the specified signal (default: SIGTERM) to the container's init process"),
    "delete": ({"force": (False, False, ("f",))}, "<container-id>", "delete any resources held by the container"),
    "list": ({"format": (True, False, ("f",)), "quiet": (False, False, ("q",))}, "", "lists containers"),
    "ps": ({"format": (True, False, ("f",))}, "<container-id> [ps options]",
           "ps displays the processes running inside a container"),
    "exec": ({"console-socket": (True, False, ()), "cwd": (True, False, ()), "env": (True, True, ("e",)),
              "tty": (False, False, ("t",)), "user": (True, False, ("u",)),
              "additional-gids": (True, True, ("g",)), "process": (True, False, ("p",)),
              "detach": (False, False, ("d",)), "pid-file": (True, False, ()),
              "process-label": (True, False, ()), "apparmor": (True, False, ()),
              "no-new-privs": (False, False, ()), "cap": (True, True, ("c",)),
              "preserve-fds": (True, False, ()), "cgroup": (True, True, ()),
              "ignore-paused": (False, False, ())},
             "<container-id> <command> [command options]", "execute new process inside the container"),
    "pause": ({}, "<container-id>", "pause suspends all processes inside the container"),
    "resume": ({}, "<container-id>", "resumes all processes that have been previously paused"),
    "update": ({"resources": (True, False, ("r",)), "memory": (True, False, ("m",)),
                "memory-reservation": (True, False, ()), "memory-swap": (True, False, ()),
                "kernel-memory": (True, False, ()), "kernel-memory-tcp": (True, False, ()),
                "cpu-period": (True, False, ()), "cpu-quota": (True, False, ()),
                "cpu-rt-period": (True, False, ()), "cpu-rt-runtime": (True, False, ()),
                "cpu-share": (True, False, ()), "cpu-shares": (True, False, ()),
                "cpuset-cpus": (True, False, ()), "cpuset-mems": (True, False, ()),
                "pids-limit": (True, False, ()), "blkio-weight": (True, False, ()),
                "l3-cache-schema": (True, False, ()), "mem-bw-schema": (True, False, ()),
                "cpu-idle": (True, False, ())},
               "<container-id>", "update container resource constraints"),
    "spec": ({"bundle": (True, False, ("b",)), "rootless": (False, False, ())}, "",
             "create a new specification file"),
    "features": ({}, "", "show the enabled features"),
    "events": ({"interval": (True, False, ()), "stats": (False, False, ())}, "<container-id>",
               "display container events such as OOM notifications, cpu, memory, and IO usage statistics"),
    "checkpoint": ({}, "<container-id>", "checkpoint a running container (not supported)"),
    "restore": ({}, "<container-id>", "restore a container from a previous checkpoint (not supported)"),
}

_TRUE = {"true", "1", "yes"}


class Args:
    def __init__(self):
        self.flags: dict = {}
        self.pos: list[str] = []


def _parse(argv: list[str], spec: dict, stop_after_first_pos: bool = False,
           stop_at_first_pos: bool = False) -> tuple[Args, list[str]]:
    """Parse flags from argv. Returns (args, rest). `stop_at_first_pos` returns at the first
    positional (global flags); `stop_after_first_pos` treats everything after the first
    positional as positionals (exec's command)."""
    a = Args()
    alias = {}
    for name, (_, _, al) in spec.items():
        alias[name] = name
        for x in al:
            alias[x] = name
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            a.pos.extend(argv[i + 1:])
            return a, []
        if tok.startswith("-") and tok != "-" and not (a.pos and stop_after_first_pos):
            body = tok.lstrip("-")
            name, eq, val = body.partition("=")
            if name not in alias:
                if stop_at_first_pos:
                    raise UsageError(f"flag provided but not defined: -{name}")
                raise UsageError(f"flag provided but not defined: -{name}")
            name = alias[name]
            takes, multi, _ = spec[name]
            if takes:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise UsageError(f"flag needs an argument: -{name}")
                    val = argv[i]
                if multi:
                    a.flags.setdefault(name, []).append(val)
                else:
                    a.flags[name] = val
            else:
                a.flags[name] = (val.lower() in _TRUE) if eq else True
            i += 1
            continue
        if stop_at_first_pos:
            return a, argv[i:]
        a.pos.append(tok)
        i += 1
    return a, []


def _version() -> str:
    lines = [f"pyoci version {__version__}"]
    try:
        from pyoci import _build  # type: ignore[attr-defined]
        lines.append(f"commit: {_build.COMMIT}")
    except ImportError:
        lines.append("commit: unknown")
    lines.append(f"spec: {OCI_VERSION}")
    lines.append(f"python: {sys.version.split()[0]}")
    try:
        import ctypes
        lib = ctypes.CDLL("libseccomp.so.2")

        class V(ctypes.Structure):
            _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]
        lib.seccomp_version.restype = ctypes.POINTER(V)
        v = lib.seccomp_version().contents
        lines.append(f"libseccomp: {v.major}.{v.minor}.{v.micro}")
    except (OSError, AttributeError):
        pass
    return "\n".join(lines)


def _usage() -> str:
    out = ["NAME:", "   pyoci - OCI runtime-spec 1.3.0 container runtime in Python (runc-compatible CLI)", "",
           "USAGE:", "   pyoci [global options] command [command options] [arguments...]", "", "COMMANDS:"]
    for v, (_, _, h) in VERBS.items():
        out.append(f"   {v:<11}{h}")
    for v, h in EXT_VERBS.items():
        out.append(f"   {v:<11}{h}")
    out += ["", "GLOBAL OPTIONS:",
            "   --root value        root directory for storage of container state (default: \"/run/pyoci\")",
            "   --log value         set the log file to write pyoci logs to (default is stderr)",
            "   --log-format value  set the log format ('text' (default), or 'json')",
            "   --debug             enable debug logging (one line per stage, with timings)",
            "   --help, -h          show help",
            "   --version, -v       print the version"]
    return "\n".join(out)


def _need(a: Args, verb: str, n: int, exact: bool = True) -> None:
    if (exact and len(a.pos) != n) or (not exact and len(a.pos) < n):
        what = "exactly" if exact else "a minimum of"
        raise UsageError(f"\"{verb}\" requires {what} {n} argument(s)")


def parse_signal(s: str) -> int:
    s = s.strip()
    if s.isdigit():
        n = int(s)
        if n < 0 or n > 64:      # 0 is allowed, as in runc: a liveness probe
            raise UsageError(f"unknown signal \"{s}\"")
        return n
    name = s.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name.startswith("SIGRTMIN+") or name.startswith("SIGRTMAX-"):
        base = signal.SIGRTMIN if "MIN" in name else signal.SIGRTMAX
        off = int(name[9:])
        return int(base + off if "MIN" in name else base - off)
    try:
        return int(getattr(signal.Signals, name))
    except AttributeError:
        raise UsageError(f"unknown signal \"{s}\"") from None


def main(argv: list[str]) -> int:
    try:
        g, rest = _parse(argv, GLOBAL_FLAGS, stop_at_first_pos=True)
    except UsageError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    if g.flags.get("version"):
        print(_version())
        return 0
    if not rest or g.flags.get("help"):
        print(_usage())
        return 0 if g.flags.get("help") or not rest else 1
    fmt = g.flags.get("log-format", "text")
    try:
        log.configure(g.flags.get("log"), fmt, bool(g.flags.get("debug")))
    except OSError as e:
        sys.stderr.write(f"open {g.flags.get('log')}: {e.strerror.lower()}\n")
        return 1
    if fmt not in ("text", "json"):
        log.fatal(f"unknown log-format {fmt!r}")
        return 1
    verb = rest[0]
    if verb in EXT_VERBS:
        root = g.flags.get("root") or os.environ.get("PYOCI_ROOT") or "/run/pyoci"
        try:
            from pyoci import cli_images
            return cli_images.dispatch(verb, rest[1:], os.path.abspath(root)) or 0
        except PyociError as e:
            log.fatal(str(e))
            return e.exit_code
    if verb not in VERBS:
        log.fatal(f"No help topic for '{verb}'")
        return 3
    root = g.flags.get("root") or os.environ.get("PYOCI_ROOT") or "/run/pyoci"
    try:
        if g.flags.get("systemd-cgroup"):
            raise UsageError("--systemd-cgroup is not supported yet: use the cgroupfs manager "
                             "(drop --systemd-cgroup; set cgroup_manager = \"cgroupfs\" in containers.conf)")
        if not os.path.isabs(root):
            root = os.path.abspath(root)
        spec, _, _ = VERBS[verb]
        try:
            a, _ = _parse(rest[1:], spec, stop_after_first_pos=(verb == "exec"))
        except UsageError as e:
            e.before_exec_args = True
            raise
        return _dispatch(verb, a, root) or 0
    except PyociError as e:
        log.fatal(str(e))
        # runc: once exec's arguments are parsed, every failure exits 255
        if verb == "exec" and not getattr(e, "before_exec_args", False):
            return 255
        return e.exit_code
    except BrokenPipeError:
        raise                    # our stdout's reader went away: __main__ ends quietly
    except OSError as e:
        # an OSError no stage turned into a PyociError: still one plain line on stderr and the
        # one JSON error line in --log (containerd and podman read it), never a traceback
        what = (e.strerror or str(e)).lower()
        log.fatal(f"{verb}: {e.filename}: {what}" if e.filename else f"{verb}: {what}")
        return 255 if verb == "exec" else 1
    except KeyboardInterrupt:
        return 130


def _id(a: Args, verb: str) -> str:
    _need(a, verb, 1)
    return a.pos[0]


def _uint_flag(flags: dict, name: str) -> int:
    """A non-negative integer flag (runc: uint). A negative --preserve-fds would make the child
    close fds from 2 on (the container's stderr)."""
    v = flags.get(name, 0)
    try:
        n = int(v)
        if n < 0:
            raise ValueError
    except ValueError:
        e = UsageError(f"invalid value for --{name}: {v} (a non-negative integer)")
        e.before_exec_args = True
        raise e from None
    return n


def _int_list_flag(values: list, name: str) -> list[int]:
    try:
        return [int(x) for x in values]
    except ValueError:
        e = UsageError(f"invalid value for --{name}: {', '.join(map(str, values))} (numeric ids only)")
        e.before_exec_args = True
        raise e from None


def _create_opts(a: Args, root: str, detach: bool = True):
    from pyoci.plan import Options
    if a.flags.get("image"):
        # `create/run --image NAME [--name ID] [--network bridge] [-- CMD...]`: write a bundle
        from pyoci import cli_images
        a = cli_images.bundle_from_image_flags(a, root)
    _need(a, "create", 1)
    pf = a.flags.get("pid-file")
    if pf:
        pf = os.path.abspath(pf)
    n = _uint_flag(a.flags, "preserve-fds")
    return Options(container_id=a.pos[0], bundle=a.flags.get("bundle") or os.getcwd(), root_dir=root,
                   pid_file=pf, console_socket=a.flags.get("console-socket"), preserve_fds=n,
                   no_pivot=bool(a.flags.get("no-pivot")), no_new_keyring=bool(a.flags.get("no-new-keyring")),
                   detach=detach, network=a.flags.get("network") if not a.flags.get("image") else None)


def _dispatch(verb: str, a: Args, root: str) -> int | None:
    from pyoci import container as C
    if verb == "create":
        C.create(_create_opts(a, root))
        return 0
    if verb == "run":
        opts = _create_opts(a, root, detach=bool(a.flags.get("detach")))
        return C.run(opts, keep=bool(a.flags.get("keep")))
    if verb == "start":
        C.start(root, _id(a, verb))
        return 0
    if verb == "state":
        s = C.state(root, _id(a, verb))
        sys.stdout.write(json.dumps(s, indent=2) + "\n")
        return 0
    if verb == "kill":
        if len(a.pos) not in (1, 2):
            raise UsageError("\"kill\" requires a minimum of 1 argument(s)")
        sig = parse_signal(a.pos[1]) if len(a.pos) == 2 else _default_stop_signal(root, a.pos[0])
        C.kill(root, a.pos[0], sig, bool(a.flags.get("all")))
        return 0
    if verb == "delete":
        C.delete(root, _id(a, verb), bool(a.flags.get("force")))
        return 0
    if verb == "list":
        return _list(root, a)
    if verb == "ps":
        return _ps(root, a)
    if verb == "exec":
        return _exec(root, a)
    if verb == "pause":
        C.pause(root, _id(a, verb))
        return 0
    if verb == "resume":
        C.resume(root, _id(a, verb))
        return 0
    if verb == "update":
        return _update(root, a)
    if verb == "spec":
        return _spec(a)
    if verb == "features":
        from pyoci.features import features
        sys.stdout.write(json.dumps(features(), indent=4) + "\n")
        return 0
    if verb == "events":
        from pyoci.events import events
        return events(root, _id(a, verb), stats=bool(a.flags.get("stats")),
                      interval=a.flags.get("interval", "5s"))
    raise UsageError(f"{verb} is not supported by pyoci (no CRIU integration yet)")


def _default_stop_signal(root: str, cid: str) -> int:
    """spec#12: without a signal, the image's stop signal (annotation) or SIGTERM."""
    from pyoci import state as st
    try:
        ann = st.Container.load(root, cid, lock=False).data.get("annotations") or {}
    except PyociError:
        return signal.SIGTERM           # kill itself reports a missing container
    text = ann.get("org.opencontainers.image.stopSignal")
    return parse_signal(text) if text else signal.SIGTERM


def _list(root: str, a: Args) -> int:
    from pyoci import container as C
    _need(a, "list", 0)
    states = C.list_states(root)
    fmt = a.flags.get("format", "table")
    if a.flags.get("quiet"):
        for s in states:
            print(s["id"])
        return 0
    if fmt == "json":
        sys.stdout.write(json.dumps(states) + "\n")
        return 0
    if fmt != "table":
        raise UsageError(f"invalid format option: {fmt}")
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER", "IP")]
    for s in states:
        ip = (s.get("annotations") or {}).get("org.pyoci.network.ip", "")
        rows.append((s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"] or "root", ip))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _ps(root: str, a: Args) -> int:
    from pyoci import container as C
    _need(a, "ps", 1, exact=False)
    pids = C.pids(root, a.pos[0])
    fmt = a.flags.get("format", "table")
    if fmt == "json":
        sys.stdout.write(json.dumps(pids) + "\n")
        return 0
    if fmt != "table":
        raise UsageError(f"invalid format option: {fmt}")
    import subprocess
    ps_args = a.pos[1:] or ["-ef"]
    out = subprocess.run(["ps"] + ps_args, capture_output=True, text=True)
    if out.returncode != 0:
        raise PyociError(f"ps: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    try:
        col = header.index("PID")
    except ValueError:
        raise PyociError("couldn't find PID field in ps output") from None
    print(lines[0])
    want = set(pids)
    for ln in lines[1:]:
        f = ln.split()
        if len(f) > col and f[col].isdigit() and int(f[col]) in want:
            print(ln)
    return 0


def _exec(root: str, a: Args) -> int:
    from pyoci import container as C
    from pyoci import spec as S
    if not a.pos:
        e = UsageError("\"exec\" requires a minimum of 1 argument(s)")
        e.before_exec_args = True
        raise e
    cid = a.pos[0]
    if a.flags.get("process"):
        proc = S.read_json(a.flags["process"])
        warnings = S.validate_process(proc)
        for w in warnings:
            log.warning(w)
    else:
        if len(a.pos) < 2:
            raise UsageError("process args cannot be empty")
        proc = _process_from_container(root, cid)
        proc["args"] = a.pos[1:]
    f = a.flags
    if f.get("tty"):
        proc["terminal"] = True
    if f.get("cwd"):
        proc["cwd"] = f["cwd"]
    if f.get("env"):
        proc["env"] = list(proc.get("env") or []) + f["env"]
    if f.get("user"):
        u, _, g = f["user"].partition(":")
        ids = _int_list_flag([u, g] if g else [u], "user")
        proc["user"] = dict(proc.get("user") or {}, uid=ids[0], **({"gid": ids[1]} if g else {}))
    if f.get("additional-gids"):
        proc.setdefault("user", {})["additionalGids"] = _int_list_flag(f["additional-gids"], "additional-gids")
    if f.get("cap"):
        caps = proc.setdefault("capabilities", {})
        for k in ("bounding", "effective", "permitted"):
            caps[k] = list(dict.fromkeys((caps.get(k) or []) + f["cap"]))
    if f.get("no-new-privs"):
        proc["noNewPrivileges"] = True
    if f.get("apparmor"):
        proc["apparmorProfile"] = f["apparmor"]
    if f.get("process-label"):
        proc["selinuxLabel"] = f["process-label"]
    pf = os.path.abspath(f["pid-file"]) if f.get("pid-file") else None
    return C.exec_process(root, cid, proc, detach=bool(f.get("detach")), pid_file=pf,
                          console_socket=f.get("console-socket"),
                          preserve_fds=_uint_flag(f, "preserve-fds"))


def _process_from_container(root: str, cid: str) -> dict:
    """`exec ID CMD...`: start from the container's own process (env, user, caps...)."""
    from pyoci import spec as S
    from pyoci import state as st
    ctr = st.Container.load(root, cid, lock=False)
    bundle = ctr.data.get("bundle")
    try:
        cfg = S.read_json(os.path.join(bundle, "config.json"))
        proc = dict(cfg.get("process") or {})
    except (PyociError, TypeError):
        proc = {}
    proc["terminal"] = False
    proc.setdefault("cwd", "/")
    proc.pop("consoleSize", None)
    return proc


def _update(root: str, a: Args) -> int:
    from pyoci import container as C
    cid = _id(a, "update")
    res: dict = {}
    r = a.flags.get("resources")
    if r:
        from pyoci import spec as S
        if r == "-":
            try:
                res = json.loads(sys.stdin.read() or "{}")
            except ValueError as e:
                raise ConfigError(f"resources from stdin: invalid JSON: {e}") from None
        else:
            res = S.read_json(r)
        S.validate_resources(res)
    flag_names = [k for k in a.flags if k != "resources"]
    if flag_names:
        from pyoci.cgroups import resources_from_update_flags
        extra = resources_from_update_flags(**{k.replace("-", "_"): v for k, v in a.flags.items()
                                               if k != "resources"})
        for k, v in extra.items():
            if isinstance(v, dict):
                res.setdefault(k, {}).update(v)
            else:
                res[k] = v
    C.update(root, cid, res)
    return 0


def _spec(a: Args) -> int:
    from pyoci.specgen import default_config
    bundle = a.flags.get("bundle") or "."
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise PyociError("File config.json exists. Remove it first")
    cfg = default_config(rootless=bool(a.flags.get("rootless")))
    with open(path, "w") as f:
        json.dump(cfg, f, indent="\t")
        f.write("\n")
    return 0
