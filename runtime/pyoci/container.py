"""The library API: one function per verb. The CLI is a thin layer over this module.

Each operation takes the container's lock, checks the transition table (state.py), and
either completes or leaves the host as it was.
"""
from __future__ import annotations

import errno
import json
import os
import select
import signal
import time

from pyoci import state as st
from pyoci.errors import NotFound, PyociError, StageError, StateError, SyscallError, UsageError
from pyoci.linux import libc
from pyoci.log import log


# ───────────────────────────── helpers ─────────────────────────────

def _owner() -> str:
    return ""  # runc leaves owner empty unless rootless


def _cgroup(ctr: st.Container):
    path = ctr.data.get("cgroup_path")
    if not path:
        return None
    from pyoci.cgroups import Cgroup
    return Cgroup(path, root=ctr.data.get("cgroup_root"))


def _check_preserved_fds(n: int) -> None:
    for fd in range(3, 3 + n):
        try:
            os.fstat(fd)
        except OSError:
            raise UsageError(f"--preserve-fds {n}: file descriptor {fd} is not open") from None


def _write_pid_file(path: str, pid: int) -> None:
    path = os.path.abspath(path)
    d = os.path.dirname(path)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(str(pid))
        os.rename(tmp, path)
    except OSError as e:
        # a PyociError (one clean line, create cleans up), not a traceback; runc's wording
        raise SyscallError("open", e.errno or 0, path, stage="pid-file") from None


def _signal_init(ctr: st.Container, sig: int) -> None:
    """Signal the init through a pidfd after checking its start time (never a reused pid:
    the pidfd pins the process, the start time proves it is the container's)."""
    pid = ctr.pid
    if pid <= 0:
        raise StateError("container not running")
    try:
        fd = libc.pidfd_open(pid)
    except SyscallError as e:
        if e.errno == errno.ESRCH:
            raise StateError("container not running") from None
        raise
    try:
        if not ctr.init_alive():
            raise StateError("container not running")
        libc.pidfd_send_signal(fd, sig)
    finally:
        os.close(fd)


def _wait_dead(ctr: st.Container, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while ctr.init_alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# ───────────────────────────── create ─────────────────────────────

def create(opts: Options, config: dict | None = None, warnings: list[str] | None = None):
    """Create the container and leave its init at the exec gate. Returns the Launch record."""
    from pyoci import process
    from pyoci.plan import Options, build_plan   # not at module level: state/list/kill need no plan
    t0 = time.monotonic()
    st.validate_id(opts.container_id)
    bundle = os.path.abspath(opts.bundle)
    opts = Options(**{**opts.__dict__, "bundle": bundle})
    if config is None:
        from pyoci import spec
        config, warnings = spec.load_bundle_config(bundle)
    if (config.get("linux") or {}).get("intelRdt") is not None:
        _check_intel_rdt()
    if opts.network:
        config = dict(config, annotations=dict(config.get("annotations") or {},
                                               **{"org.pyoci.network": opts.network}))
    for w in warnings or []:
        log.warning(w)
    log.stage("validate", t0, f"{bundle}/config.json is valid")
    t = time.monotonic()
    plan = build_plan(config, opts, warnings)
    log.stage("plan", t, "launch plan built")
    if log.debug_enabled:
        log.debug("plan: " + json.dumps(plan.describe(), default=str))
    if plan.terminal and not opts.console_socket and opts.detach:
        raise UsageError("cannot allocate tty if runc will detach without setting console socket")
    if opts.console_socket and not plan.terminal:
        raise UsageError("cannot use console socket if runc will not detach or allocate tty")
    if opts.console_socket:
        from pyoci import terminal
        terminal.check_console_socket(opts.console_socket)
    _check_preserved_fds(opts.preserve_fds)

    ctr = st.Container.new(opts.root_dir, opts.container_id)
    launch = None
    try:
        from pyoci.state import proc_start_time
        ctr.data = {
            "id": ctr.id, "status": "creating", "bundle": bundle,
            "rootfs": plan.rootfs.rootfs if hasattr(plan.rootfs, "rootfs") else "",
            "created": st.now_rfc3339(), "owner": _owner(),
            "annotations": plan.annotations,
            "creator_pid": os.getpid(), "creator_start": proc_start_time(os.getpid()),
            "hooks": {k: plan.hooks[k] for k in ("poststart", "poststop") if plan.hooks.get(k)},
            "start_hooks": bool(plan.hooks.get("startContainer")),
            "namespaces": [n["type"] for n in (config.get("linux") or {}).get("namespaces") or []],
            "seccomp": (config.get("linux") or {}).get("seccomp"),
            "linux_sysctl": None,
            "config_version": plan.config_version,
            # set when the bundle was written by `--image` (images.py): released on delete
            "image": plan.annotations.get("org.pyoci.image"),
        }
        ctr.save()
        process.fault("after-state-dir")
        os.mkfifo(ctr.fifo_path, 0o622)
        os.chmod(ctr.fifo_path, 0o622)   # the init may no longer be root when it opens it

        def on_cgroup(pid: int):
            from pyoci.cgroups import Cgroup, cgroup_root
            root = cgroup_root()
            cg = Cgroup(plan.cgroup_path, root=root)
            if cg.exists() and cg.is_frozen():
                # spec#117: a process moved into a frozen cgroup would stop right there. Checked
                # before the cgroup is recorded: the cleanup must not touch a cgroup not ours.
                raise StageError("cgroup", f"cgroup {plan.cgroup_path} is frozen: resume it or "
                                 "choose another cgroupsPath")
            ctr.data.update(cgroup_path=plan.cgroup_path, cgroup_root=root,
                            cgroup_dir=os.path.join(root, plan.cgroup_path.lstrip("/")))
            ctr.save()
            cg.create(_cgroup_resources(plan, config))
            ctr.data["cgroup_created"] = list(getattr(cg, "created_dirs", []) or [])
            ctr.save()
            owner = _cgroup_owner(plan, config)
            if owner is not None:
                _delegate_cgroup(cg.dir, *owner)
            process.fault("after-cgroup")
            cg.add_pid(pid)
            return cg

        def on_network(pid: int):
            from pyoci import network
            ctr.data["network"] = {"pending": True}
            ctr.save()
            info = network.setup(plan.network, pid, ctr.id, opts.root_dir,
                                 rootfs=getattr(plan.rootfs, "rootfs", None))
            ctr.data["network"] = info
            if info and info.get("ip"):
                ctr.data["annotations"] = dict(ctr.data.get("annotations") or {},
                                               **{"org.pyoci.network.ip": info["ip"]})
            ctr.save()
            return info

        def state_for_hooks() -> dict:
            s = ctr.oci_state()
            s["status"] = "creating"
            s["pid"] = ctr.pid
            return s

        launch, ch = process.launch(plan, ctr, state_for_hooks, on_cgroup, on_network,
                                    reap_intermediate=True)
        try:
            ctr.data["status"] = "created"
            ctr.save()
            if opts.pid_file:
                _write_pid_file(opts.pid_file, launch.init_pid)
            s = ctr.oci_state()
            ch.send("go", state=s)
        finally:
            ch.close()
        log.stage("create.total", t0, f"container {ctr.id} created, init pid {launch.init_pid}")
        return launch
    except BaseException:
        if launch is None or True:
            _destroy(ctr, force_kill=True, run_poststop=False)
        raise
    finally:
        ctr.unlock()


def _cgroup_owner(plan, config: dict) -> tuple[int, int] | None:
    """spec#121: the container's root owns its cgroup when it has its own user and cgroup
    namespaces and a writable cgroup mount (cgroup delegation); returns its host (uid, gid)."""
    ns = plan.namespaces
    if not (ns.creates("user") and ns.creates("cgroup")):
        return None
    writable = any(m.get("type") in ("cgroup", "cgroup2") and "ro" not in (m.get("options") or [])
                   for m in config.get("mounts") or [])
    if not writable:
        return None

    def host(maps, cid=0):
        for c, h, n in maps:
            if c <= cid < c + n:
                return h + cid - c
        return None
    uid, gid = host(ns.uid_mappings), host(ns.gid_mappings)
    return None if uid is None or gid is None else (uid, gid)


def _delegate_cgroup(cg_dir: str, uid: int, gid: int) -> None:
    """spec#122: chown the directory and the files the kernel lists as delegatable."""
    try:
        with open("/sys/kernel/cgroup/delegate") as f:
            names = f.read().split()
    except OSError:
        names = ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"]
    for path in [cg_dir] + [os.path.join(cg_dir, n) for n in names]:
        try:
            os.chown(path, uid, gid, follow_symlinks=False)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise SyscallError("chown", e.errno, path, stage="cgroup",
                               detail="delegating the cgroup to the container's root") from None


def _check_intel_rdt() -> None:
    """spec#149: with linux.intelRdt, resctrl must be mounted in the runtime's mount namespace.
    pyoci does not manage Intel RDT classes (features: intelRdt.enabled false), so even where
    it is mounted the config is refused, clearly."""
    mounted = False
    try:
        with open("/proc/self/mountinfo") as f:
            mounted = any(" - resctrl " in line for line in f)
    except OSError:
        pass
    if not mounted:
        raise StageError("intelRdt", "linux.intelRdt is set but resctrl is not mounted "
                         "(mount -t resctrl resctrl /sys/fs/resctrl)")
    raise StageError("intelRdt", "linux.intelRdt is not supported by pyoci")


def _cgroup_resources(plan, config: dict) -> dict | None:
    res = plan.resources
    try:
        from pyoci.cgroups import DEFAULT_ALLOWED_DEVICES
    except ImportError:
        return res
    if res is None:
        res = {}
    res = dict(res)
    # runc: the config's rules, then the devices the container is given, then the defaults
    rules = list(res.get("devices") or [])
    if rules:
        for d in (config.get("linux") or {}).get("devices") or []:
            if d.get("type") in ("c", "b", "u"):
                rules.append({"allow": True, "type": "c" if d["type"] == "u" else d["type"],
                              "major": d.get("major"), "minor": d.get("minor"), "access": "rwm"})
        rules.extend(DEFAULT_ALLOWED_DEVICES)
        res["devices"] = rules
    return res or None


# ───────────────────────────── start / state / kill / delete ─────────────────────────────

def start(root: str, cid: str) -> None:
    t0 = time.monotonic()
    ctr = st.Container.load(root, cid)
    try:
        _guard_corrupt(ctr)
        st.check_transition("start", ctr.status(), cid)
        from pyoci._fault import fault
        fault("during-start")
        _release_gate(ctr)
        ctr.data["started"] = st.now_rfc3339()
        ctr.save()
        log.stage("start", t0, "exec gate released")
        hooks = (ctr.data.get("hooks") or {}).get("poststart")
        if hooks:
            from pyoci import hooks as hk
            try:
                hk.run_hooks("poststart", hooks, ctr.oci_state())
            except PyociError:
                _destroy(ctr, force_kill=True, run_poststop=True)
                raise
    finally:
        ctr.unlock()


def _release_gate(ctr: st.Container, timeout: float = 30.0) -> None:
    try:
        fd = os.open(ctr.fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StateError("cannot start an already running container") from None
    try:
        deadline = time.monotonic() + timeout
        p = select.poll()
        p.register(fd, select.POLLIN)
        while True:
            if p.poll(20):
                try:
                    data = os.read(fd, 1)
                except BlockingIOError:
                    data = b""
                if data:
                    break
            if not ctr.init_alive():
                raise StateError("cannot start a container that has stopped")
            if time.monotonic() > deadline:
                raise StageError("start", "the container process did not reach the exec gate in time")
        if ctr.data.get("start_hooks"):
            _await_start_hooks(ctr, fd, p)
    finally:
        os.close(fd)
    # (unlinked only now: the init may not have opened its end yet when start begins)
    os.unlink(ctr.fifo_path)


def _await_start_hooks(ctr: st.Container, fd: int, p, timeout: float = 300.0) -> None:
    """The init runs the startContainer hooks after the gate and closes its end of the fifo
    when they succeeded; a failure arrives as "E<message>" (then the init exits)."""
    from pyoci.errors import HookError
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll(50):
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                continue
            if not chunk:
                break                      # closed: the hooks passed (or the init exec'd)
            buf += chunk
        elif not ctr.init_alive():
            break
    if buf.startswith(b"E"):
        os.unlink(ctr.fifo_path)
        _wait_dead(ctr, timeout=5)
        raise HookError(buf[1:].decode("utf-8", "replace"))


def _guard_corrupt(ctr: st.Container) -> None:
    if ctr.data.get("_corrupt"):
        raise StateError(f"container {ctr.id}: {ctr.data['_corrupt']}; its processes may still "
                         f"run: `delete --force {ctr.id}` kills them and removes the container")


def state(root: str, cid: str) -> dict:
    ctr = st.Container.load(root, cid, lock=False)
    _guard_corrupt(ctr)
    return ctr.oci_state()


def kill(root: str, cid: str, sig: int, all_procs: bool = False) -> None:
    ctr = st.Container.load(root, cid)
    try:
        _guard_corrupt(ctr)
        status = ctr.status()
        if all_procs:
            cg = _cgroup(ctr)
            if status == "stopped" and (cg is None or not cg.exists() or not cg.pids()):
                return
            if cg is not None and cg.exists():
                if sig == signal.SIGKILL:
                    cg.kill()
                else:
                    for pid in cg.pids():
                        try:
                            os.kill(pid, sig)
                        except ProcessLookupError:
                            pass
                return
        st.check_transition("kill", status, cid)
        _signal_init(ctr, sig)
    finally:
        ctr.unlock()


def delete(root: str, cid: str, force: bool = False) -> None:
    """Delete a stopped container; with force, kill whatever still runs first. Also works
    on a half-made container (a create killed midway shows as stopped) and, with force, on
    one whose state.json is missing or damaged (cleanup.json, else the id's default cgroup)."""
    try:
        ctr = st.Container.load(root, cid)
    except NotFound:
        if force:
            return
        raise
    try:
        status = ctr.status()
        if not force and status != "stopped":
            _guard_corrupt(ctr)
            st.check_transition("delete", status, cid)
        _destroy(ctr, force_kill=True, run_poststop=True)
    finally:
        ctr.unlock()


def _creator_alive(ctr: st.Container) -> bool:
    """Another process is still running `create` for this container."""
    return ctr.data.get("creator_pid") != os.getpid() and ctr.creator_alive()


def _cleanup_cgroup(ctr: st.Container):
    """The container's cgroup for cleanup: as recorded (with the ancestors create made), or,
    when no record survived, the id's default cgroup if it exists."""
    from pyoci.cgroups import Cgroup
    path = ctr.data.get("cgroup_path")
    if path:
        return Cgroup(path, root=ctr.data.get("cgroup_root"),
                      created_dirs=ctr.data.get("cgroup_created") or None)
    if not ctr.data.get("_corrupt"):
        return None
    from pyoci.cgroups import cgroup_root, resolve_path
    try:
        cg = Cgroup(resolve_path(None, ctr.id), root=cgroup_root())
    except PyociError:
        return None
    return cg if cg.exists() else None


def _kill_recorded(ctr: st.Container, pid_key: str, start_key: str) -> None:
    """SIGKILL a helper process the state recorded (e.g. the intermediate of a create that
    was killed before the cgroup held it), only if its start time still matches."""
    pid = ctr.data.get(pid_key)
    if not pid:
        return
    try:
        fd = libc.pidfd_open(pid)
    except (SyscallError, OSError):
        return
    try:
        if st.proc_start_time(pid) == ctr.data.get(start_key):
            libc.pidfd_send_signal(fd, signal.SIGKILL)
    except (SyscallError, OSError):
        pass
    finally:
        os.close(fd)


def _destroy(ctr: st.Container, force_kill: bool, run_poststop: bool) -> None:
    """Kill whatever is left, then remove cgroup, network, state dir. Tolerates a
    half-made container: only what the state recorded is undone (when the state is lost,
    what cleanup.json recorded, else what the id alone names)."""
    cg = _cleanup_cgroup(ctr)
    if force_kill:
        if cg is not None and cg.exists():
            try:
                cg.kill()
            except PyociError as e:
                log.warning(f"cgroup kill: {e}")
        if ctr.pid and ctr.init_alive():
            try:
                _signal_init(ctr, signal.SIGKILL)
            except (PyociError, OSError):
                pass
        _kill_recorded(ctr, "intermediate_pid", "intermediate_start")
        _wait_dead(ctr)
    from pyoci._fault import fault
    fault("during-delete")
    if cg is not None:
        try:
            cg.destroy()
        except PyociError as e:
            log.warning(f"removing cgroup: {e}")
    net = ctr.data.get("network")
    if not net and ctr.data.get("_corrupt"):
        from pyoci.ipam import subnets_with_leases_of
        if subnets_with_leases_of(ctr.root, ctr.id):
            net = {}
    if net is not None:
        try:
            from pyoci import network
            network.teardown(net, ctr.id, ctr.root)
        except Exception as e:  # noqa: BLE001 - cleanup continues
            log.warning(f"network teardown: {e}")
    if ctr.data.get("image"):
        try:
            from pyoci import images
            images.on_delete(ctr.root, ctr.id, ctr.data)
        except Exception as e:  # noqa: BLE001 - cleanup continues
            log.warning(f"releasing the image layer: {e}")
    if run_poststop:
        hooks = (ctr.data.get("hooks") or {}).get("poststop")
        if hooks:
            from pyoci import hooks as hk
            s = ctr.oci_state()
            s["status"] = "stopped"
            hk.run_hooks("poststop", hooks, s, warn=log.warning)
    ctr.remove()


# ───────────────────────────── run ─────────────────────────────

# Like runc's foreground run/exec: every signal that can be caught goes on to the process,
# except SIGCHLD (we reap), SIGPIPE and SIGXFSZ (Python ignores them: they would come from our
# own writes), SIGURG (runc skips it) and the synchronous fault signals (ours, not the user's).
# A signal left at its default (SIGALRM, SIGPWR, SIGIO, SIGRTMIN+n...) would kill pyoci and
# leave the container running with its state behind.
_NOT_FORWARDED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ,
                  signal.SIGURG, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
                  signal.SIGTRAP, signal.SIGABRT, signal.SIGSYS}


def _forward_signals(pid: int, master: int | None = None) -> dict:
    """Install the forwarding handlers; returns the previous ones (for _restore_signals).
    With a pty proxied by us, SIGWINCH resizes the pty instead (as runc does)."""
    def handler(signum, frame):
        if signum == signal.SIGWINCH and master is not None:
            _resize(master)
        else:
            _forward(pid, signum)

    old = {}
    for s in signal.valid_signals():
        if s in _NOT_FORWARDED:
            continue
        try:
            old[s] = signal.signal(s, handler)
        except (OSError, ValueError, RuntimeError):
            pass
    return old


def _restore_signals(old: dict) -> None:
    for s, h in old.items():
        try:
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        except (OSError, ValueError, TypeError):
            pass


def _resize(master: int) -> None:
    try:
        rows, cols = os.get_terminal_size(0)
        from pyoci import terminal
        terminal.set_winsize(master, rows, cols)
    except OSError:
        pass


def run(opts: Options, keep: bool = False) -> int:
    """create + start (+ wait and delete unless detached). Returns the exit code."""
    if not opts.detach:
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
    launch = create(opts)
    try:
        start(opts.root_dir, opts.container_id)
    except BaseException:
        # like runc: a `run` whose start failed leaves no container behind
        try:
            delete(opts.root_dir, opts.container_id, force=True)
        except PyociError as e:
            log.warning(f"removing the container after a failed start: {e}")
        if not opts.detach:
            _reap(launch.init_pid, nohang=True)
        raise
    if opts.detach:
        return 0
    pid = launch.init_pid
    old = _forward_signals(pid, launch.master)
    try:
        if launch.master is not None:
            from pyoci import terminal
            terminal.proxy(launch.master, lambda: _alive_child(pid))
        code = _reap(pid)
    finally:
        _restore_signals(old)
    if not keep:
        try:
            delete(opts.root_dir, opts.container_id, force=True)
        except PyociError as e:
            log.warning(f"delete after run: {e}")
    return code


def _forward(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass


def _alive_child(pid: int) -> bool:
    try:
        r, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    if r == 0:
        return True
    _EXITS[pid] = _
    return False


_EXITS: dict[int, int] = {}


def _reap(pid: int, nohang: bool = False) -> int:
    """Wait for `pid` (our child via subreaping), reaping other orphans too."""
    if pid in _EXITS:       # already reaped by _alive_child (the pty proxy)
        code = os.waitstatus_to_exitcode(_EXITS.pop(pid))
        return 128 - code if code < 0 else code
    while True:
        try:
            r, status = os.waitpid(-1, os.WNOHANG if nohang else 0)
        except ChildProcessError:
            return 255
        except InterruptedError:
            continue
        if r == 0:
            return 0
        if r == pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


# ───────────────────────────── exec ─────────────────────────────

def exec_process(root: str, cid: str, process: dict, detach: bool, pid_file: str | None,
                 console_socket: str | None, preserve_fds: int = 0) -> int:
    from pyoci import process as proc
    from pyoci import security
    _check_preserved_fds(preserve_fds)     # before we open anything ourselves
    ctr = st.Container.load(root, cid)
    try:
        _guard_corrupt(ctr)
        status = ctr.status()
        st.check_transition("exec", status, cid)
        init = ctr.pid
        ns_types = []
        for t, name in libc.NS_PROC_NAME.items():
            try:
                if os.stat(f"/proc/{init}/ns/{name}").st_ino != os.stat(f"/proc/self/ns/{name}").st_ino:
                    ns_types.append(t)
            except OSError:
                continue
        pp = security.build_process_plan(process, None, for_exec=True)
        for w in getattr(pp, "warnings", ()) or ():
            log.warning(w)
        seccomp_prog = None
        if ctr.data.get("seccomp"):
            from pyoci import seccomp
            seccomp_prog = seccomp.compile_filter(ctr.data["seccomp"])
        if pp.terminal and detach and not console_socket:
            raise UsageError("cannot allocate tty if runc will detach without setting console socket")
        if console_socket:
            from pyoci import terminal
            terminal.check_console_socket(console_socket)
        _check_preserved_fds(preserve_fds)
        if not detach:
            libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
        pid, master = proc.exec_in(init, ns_types, pp, seccomp_prog, ctr.data.get("cgroup_dir"),
                                   preserve_fds, console_socket, subreaper=not detach,
                                   close_in_child=(ctr._lock_fd,) if ctr._lock_fd is not None else ())
    finally:
        ctr.unlock()
    if pid_file:
        _write_pid_file(pid_file, pid)
    if detach:
        return 0
    _forward_signals(pid, master)
    if master is not None:
        from pyoci import terminal
        terminal.proxy(master, lambda: _alive_child(pid))
    return _reap(pid)


# ───────────────────────────── pause / resume / ps / list / update ─────────────────────────────

def pause(root: str, cid: str) -> None:
    ctr = st.Container.load(root, cid)
    try:
        st.check_transition("pause", ctr.status(), cid)
        cg = _require_cgroup(ctr)
        cg.freeze()
    finally:
        ctr.unlock()


def resume(root: str, cid: str) -> None:
    ctr = st.Container.load(root, cid)
    try:
        st.check_transition("resume", ctr.status(), cid)
        cg = _require_cgroup(ctr)
        cg.thaw()
    finally:
        ctr.unlock()


def _require_cgroup(ctr):
    cg = _cgroup(ctr)
    if cg is None or not cg.exists():
        raise StateError(f"container {ctr.id} has no cgroup")
    return cg


def pids(root: str, cid: str) -> list[int]:
    ctr = st.Container.load(root, cid, lock=False)
    cg = _cgroup(ctr)
    if cg is None or not cg.exists():
        return [ctr.pid] if ctr.init_alive() else []
    return sorted(cg.pids())


def list_states(root: str) -> list[dict]:
    out = []
    for cid in st.list_ids(root):
        try:
            ctr = st.Container.load(root, cid, lock=False)
        except (NotFound, PyociError):
            continue
        if ctr.data.get("_corrupt"):
            # state.json is lost: say so, with what cleanup.json still knows
            d = ctr.data
            out.append({"ociVersion": "", "id": cid, "pid": ctr.pid if ctr.init_alive() else 0,
                        "status": "unknown", "bundle": d.get("bundle", ""), "rootfs": "",
                        "created": "", "owner": ""})
            continue
        out.append(ctr.oci_state())
    return out


def update(root: str, cid: str, resources: dict) -> None:
    ctr = st.Container.load(root, cid)
    try:
        st.check_transition("update", ctr.status(), cid)
        cg = _require_cgroup(ctr)
        if resources.get("devices"):
            # like create: the rules given, then the devices every container needs
            from pyoci.cgroups import DEFAULT_ALLOWED_DEVICES
            resources = dict(resources, devices=list(resources["devices"]) + list(DEFAULT_ALLOWED_DEVICES))
        cg.update(resources)
    finally:
        ctr.unlock()
