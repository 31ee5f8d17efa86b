"""The only module that forks.

    pyoci (parent) ──fork──▶ intermediate ──unshare + fork──▶ init (pid 1 of the container)
                                  │ exits once init exists; init is reparented to the caller
                                  │ (conmon / the shim are subreapers), as with runc

The parent handles the requests of the channel protocol (see channel.py): user maps,
cgroup placement, network, prestart/createRuntime hooks, the console socket, the seccomp
listener. The child side only carries out the frozen plan: namespaces → rootfs → terminal
→ process attributes → identity and capabilities → seccomp → READY → exec gate → exec.
Every module the child needs is imported at the top of this file, before pivot_root.
"""
from __future__ import annotations

import os
import signal
import sys
import time

# Imported here, in the parent, so the child never imports after pivot_root.
import json  # noqa: F401  (channel, hooks)

from pyoci import channel as chn
from pyoci import hooks as hooks_mod
from pyoci import namespaces, rootfs, security, terminal
from pyoci.errors import PyociError, StageError, SyscallError
from pyoci.linux import libc
from pyoci.log import log


from pyoci._fault import fault  # noqa: E402,F401 (process.fault)


def _preload_child_modules(plan) -> None:
    _preload_debug()
    if plan.seccomp is not None:
        from pyoci import seccomp  # noqa: F401
    if plan.network is not None:
        from pyoci import network  # noqa: F401
    if "network" in plan.namespaces.new:
        from pyoci import _lo  # noqa: F401
    if plan.hooks.get("createContainer") or plan.hooks.get("startContainer"):
        import subprocess  # noqa: F401  (the child runs these hooks after pivot_root)


def _preload_debug() -> None:
    """With --debug, _fail formats the child's traceback: import what that needs now, the
    child may be past pivot_root (or in the container's mount namespace) where the host's
    Python is unreachable; a failed import there lost the error frame."""
    if log.debug_enabled:
        import traceback  # noqa: F401
        traceback.format_exception(ValueError("preload"))   # its lazy imports happen here


class Launch:
    """Parent-side record of a launch in progress (what exists so far, for cleanup)."""

    def __init__(self):
        self.init_pid: int | None = None
        self.pidfd: int | None = None
        self.intermediate: int | None = None
        self.cgroup = None
        self.network_info: dict | None = None
        self.master: int | None = None   # pty master kept for a foreground `run -t`

    def kill_init(self) -> None:
        if self.pidfd is not None:
            try:
                libc.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except SyscallError:
                pass
        if self.intermediate:
            try:
                os.kill(self.intermediate, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.waitpid(self.intermediate, 0)
            except ChildProcessError:
                pass
            self.intermediate = None


def launch(plan, ctr, state_for_hooks, on_cgroup, on_network, reap_intermediate=True) -> tuple[Launch, chn.Channel]:
    """Parent side of `create`. Returns once the container init is READY at the exec gate.

    `ctr` is the locked state.Container (its data is saved before each resource is made).
    `state_for_hooks()` returns the current OCI state dict. `on_cgroup(pid)` places the
    intermediate in the container's cgroup; `on_network(pid)` runs the network stage.
    The caller sends GO on the returned channel and closes it.
    """
    _preload_child_modules(plan)
    parent, child = chn.Channel.pair()
    st = Launch()
    ctr_dir_fd = os.open(ctr.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    t0 = time.monotonic()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # ───── intermediate ─────
        parent.close()
        # the state lock belongs to this pyoci invocation, never to the container
        if ctr._lock_fd is not None:
            os.close(ctr._lock_fd)
        _intermediate(plan, child, ctr_dir_fd)
        os._exit(1)  # not reached
    st.intermediate = pid
    child.close()
    os.close(ctr_dir_fd)
    from pyoci.state import proc_start_time
    # recorded before anything else happens, so `delete --force` after a crash can end it
    ctr.data.update(intermediate_pid=pid, intermediate_start=proc_start_time(pid))
    ctr.save()
    log.stage("fork", t0, f"intermediate pid {pid}")
    idmap_fds: dict[int, int] = {}
    try:
        ns = plan.namespaces
        if ns.creates("user"):
            t = time.monotonic()
            m = parent.expect(chn.USERNS_READY)
            namespaces.write_id_maps(m.data["pid"], ns)
            if any(getattr(mo, "idmap", "") for mo in plan.rootfs.mounts):
                # the init can't idmap a filesystem its user namespace doesn't own: do it here
                idmap_fds = rootfs.open_idmapped_mounts(plan.rootfs, f"/proc/{m.data['pid']}/ns/user")
            parent.send(chn.ACK)
            log.stage("user-maps", t, f"uid_map {list(ns.uid_mappings)} gid_map {list(ns.gid_mappings)}")
        if plan.cgroup_path is not None:
            t = time.monotonic()
            m = parent.expect(chn.CGROUP_READY)
            st.cgroup = on_cgroup(m.data["pid"])
            parent.send(chn.ACK)
            log.stage("cgroup", t, f"placed in {plan.cgroup_path}")
        m = parent.expect(chn.INIT_PID)
        st.init_pid = m.data["pid"]
        try:
            st.pidfd = libc.pidfd_open(st.init_pid)
        except SyscallError:
            st.pidfd = None
        ctr.data["pid"] = st.init_pid
        from pyoci.state import proc_start_time
        ctr.data["pid_start"] = proc_start_time(st.init_pid)
        ctr.save()
        fault("after-namespaces")
        parent.send(chn.ACK, fds=list(idmap_fds.values()), idmap=list(idmap_fds.keys()))
        for fd in idmap_fds.values():
            os.close(fd)
        idmap_fds = {}
        if reap_intermediate:
            os.waitpid(pid, 0)
            st.intermediate = None
        log.debug(f"container init has pid {st.init_pid}")

        m = parent.expect(chn.SETUP_DONE)
        fault("after-mounts")
        t = time.monotonic()
        if plan.network is not None:
            st.network_info = on_network(st.init_pid)
            fault("after-network")
        state = state_for_hooks()
        for kind in ("prestart", "createRuntime"):
            if plan.hooks.get(kind):
                th = time.monotonic()
                fault("during-hooks")
                hooks_mod.run_hooks(kind, plan.hooks[kind], state)
                log.stage(f"hooks.{kind}", th, f"{len(plan.hooks[kind])} hook(s)")
        parent.send(chn.ACK, state=state)
        log.stage("parent-setup", t, "network and runtime hooks done")

        while True:
            m = parent.expect(chn.CONSOLE, chn.NOTIFY_FD, chn.READY)
            if m.type == chn.READY:
                break
            if m.type == chn.CONSOLE:
                master = m.fds[0]
                try:
                    if plan.console_socket:
                        terminal.send_console(plan.console_socket, master)
                        log.debug(f"sent the pty master to {plan.console_socket}")
                    else:
                        st.master = os.dup(master)
                finally:
                    os.close(master)
            elif m.type == chn.NOTIFY_FD:
                from pyoci import seccomp
                fd = m.fds[0]
                try:
                    s = dict(state_for_hooks())
                    seccomp.send_to_listener(plan.seccomp.listener_path, fd, s,
                                             plan.seccomp.listener_metadata)
                finally:
                    os.close(fd)
        log.stage("create", t0, "container init is waiting at the exec gate")
        return st, parent
    except BaseException:
        for fd in idmap_fds.values():
            os.close(fd)
        st.kill_init()
        parent.close()
        raise


# ───────────────────────────── child side ─────────────────────────────

def _fail(ch: chn.Channel, exc: BaseException, stage: str, code: int = 1):
    try:
        if log.debug_enabled and not isinstance(exc, PyociError):
            import traceback
            log.debug("".join(traceback.format_exception(exc)))
        ch.send_error(exc, stage)
    except Exception:
        pass
    os._exit(code)


def _intermediate(plan, ch: chn.Channel, ctr_dir_fd: int) -> None:
    stage = "namespaces"
    try:
        libc.prctl(libc.PR_SET_DUMPABLE, 0)
        ns = plan.namespaces
        t = time.monotonic()
        if ns.join:
            namespaces.join_all(ns.join)
        if ns.creates("user"):
            namespaces.unshare(libc.CLONE_NEWUSER)
            ch.send(chn.USERNS_READY, pid=os.getpid())
            ch.expect(chn.ACK)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        if plan.cgroup_path is not None:
            stage = "cgroup"
            ch.send(chn.CGROUP_READY, pid=os.getpid())
            ch.expect(chn.ACK)
            stage = "namespaces"
        namespaces.unshare(ns.new_flags & ~libc.CLONE_NEWUSER)
        if ns.creates("time"):
            namespaces.write_time_offsets(ns)
        log.stage("namespaces", t, f"created {','.join(ns.new) or 'none'}; joined "
                  f"{','.join(tp for tp, _ in ns.join) or 'none'}")
        pid = os.fork()
        if pid == 0:
            _init(plan, ch, ctr_dir_fd)
            os._exit(1)  # not reached
        ch.send(chn.INIT_PID, pid=pid)
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
        _fail(ch, e, stage)


# Signals whose default action ends a process; not the synchronous ones, and not SIGPIPE and
# SIGXFSZ, which Python ignores (exec_process resets those for the user program).
_TERMINATING = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
                signal.SIGUSR2, signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO,
                signal.SIGPWR, signal.SIGXCPU, signal.SIGSTKFLT,
                *range(signal.SIGRTMIN, signal.SIGRTMAX + 1))


def _die_by_signal(signum, frame) -> None:
    signal.signal(signum, signal.SIG_DFL)
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
        os.kill(os.getpid(), signum)       # ends us here, unless we are a pid namespace's init
    except OSError:
        pass
    os._exit(128 + signum)                 # the kernel drops an init's own default-action signals


def _end_on_signals(terminal: bool = False) -> None:
    """The container's process before exec (at the exec gate, in hooks) is a fork of pyoci:
    SIGINT would raise KeyboardInterrupt (logged as an error, exit 1), and, as pid 1 of a pid
    namespace, a signal left at SIG_DFL (SIGTERM from `kill`) would be dropped by the kernel.
    runc's init dies of them: do the same (exec resets these handlers). With a terminal, the
    hangup a client causes by closing its copy of the pty master before `start` is ignored
    (exec_process resets ignored signals to their default for the user program)."""
    for s in _TERMINATING:
        try:
            if terminal and s == signal.SIGHUP:
                signal.signal(s, signal.SIG_IGN)
            else:
                signal.signal(s, _die_by_signal)
        except (OSError, ValueError):
            pass


def _init(plan, ch: chn.Channel, ctr_dir_fd: int) -> None:
    stage = "init"
    _end_on_signals(terminal=plan.terminal)
    try:
        ack = ch.expect(chn.ACK)  # the parent knows our pid
        mount_fds = dict(zip(ack.data.get("idmap") or [], ack.fds)) or None
        ns = plan.namespaces
        pp = plan.process
        if ns.creates("uts") or plan.hostname or plan.domainname:
            stage = "namespaces"
            namespaces.set_names(plan.hostname, plan.domainname)
        if ns.creates("network"):
            stage = "network"
            from pyoci import _lo
            _lo.loopback_up()
        if plan.new_keyring:
            try:
                libc.join_session_keyring(plan.id[:64])
            except SyscallError as e:
                log.debug(f"no new session keyring: {e}")

        stage = "rootfs"
        t = time.monotonic()
        rootfs.prepare(plan.rootfs, mount_fds=mount_fds)
        for fd in (mount_fds or {}).values():
            os.close(fd)
        log.stage("rootfs.prepare", t, f"{len(getattr(plan.rootfs, 'mounts', ()))} mount(s)")

        ch.send(chn.SETUP_DONE)
        state = ch.expect(chn.ACK).data.get("state") or {}

        if plan.hooks.get("createContainer"):
            stage = "hooks"
            hooks_mod.run_hooks("createContainer", plan.hooks["createContainer"], state)

        stage = "rootfs"
        t = time.monotonic()
        rootfs.pivot(plan.rootfs)
        if getattr(plan.process, "sysctl", None):
            security.apply_sysctl(plan.process)   # before /proc/sys becomes read-only
        rootfs.finish(plan.rootfs)
        log.stage("rootfs.pivot", t, "pivot_root done, masked and readonly paths applied")

        if plan.terminal:
            stage = "terminal"
            master, slave_path = terminal.open_pty()
            ch.send(chn.CONSOLE, fds=[master])
            os.close(master)
            terminal.attach_slave(slave_path, getattr(pp, "console_size", None))
            rootfs.bind_console(plan.rootfs, slave_path)

        stage = "process"
        t = time.monotonic()
        for w in security.apply_attributes(pp, sysctl=False) or ():
            log.warning(w)
        notify_fd = None
        if plan.seccomp is not None and not pp.no_new_privileges:
            stage = "seccomp"
            from pyoci import seccomp
            notify_fd = seccomp.load(plan.seccomp)
        stage = "capabilities"
        for w in security.switch_identity(pp) or ():
            log.warning(w)
        if plan.seccomp is not None and pp.no_new_privileges:
            stage = "seccomp"
            from pyoci import seccomp
            notify_fd = seccomp.load(plan.seccomp)
        if notify_fd is not None:
            ch.send(chn.NOTIFY_FD, fds=[notify_fd])
            os.close(notify_fd)
        stage = "exec"
        path = security.resolve_executable(pp)
        log.stage("process", t, f"attributes, identity{' and seccomp' if plan.seccomp else ''} applied; "
                  f"will exec {path}")

        ch.send(chn.READY)
        go = ch.expect(chn.GO)
        state = go.data.get("state") or state
        ch.close()
    except BaseException as e:  # noqa: BLE001
        _fail(ch, e, stage)

    # ── after READY the parent may be gone: errors go to the log and exit non-zero ──
    try:
        stage = "exec gate"
        fd = os.open("exec.fifo", os.O_WRONLY | os.O_CLOEXEC, dir_fd=ctr_dir_fd)
        os.write(fd, b"0")
        os.close(ctr_dir_fd)
        if plan.hooks.get("startContainer"):
            # `start` keeps reading the fifo until we close it: a failed hook is reported
            # there ("E" + message), so start fails and the user program never runs (spec#27)
            stage = "hooks"
            state = dict(state, status="running")
            try:
                hooks_mod.run_hooks("startContainer", plan.hooks["startContainer"], state)
            except PyociError as e:
                os.write(fd, b"E" + str(e).encode("utf-8", "replace")[:4000])
                raise
        os.close(fd)
        stage = "exec"
        n = plan.preserve_fds
        for fd in range(3, 3 + n):
            try:
                os.set_inheritable(fd, True)
            except OSError:
                pass
        libc.close_range(3 + n)
        security.exec_process(plan.process, path)
    except BaseException as e:  # noqa: BLE001
        try:
            log.error(f"{stage}: {e}")
        except Exception:
            pass
        os._exit(255 if stage == "exec" else 1)


# ───────────────────────────── exec into a running container ─────────────────────────────

def _reap_bounded(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if r:
            return
        time.sleep(0.01)

def exec_in(init_pid: int, ns_types: list[str], pp, seccomp_prog, cgroup_dir: str | None,
            preserve_fds: int, console_socket: str | None, subreaper: bool,
            close_in_child: tuple[int, ...] = ()) -> tuple[int, int | None]:
    """Start a process inside the namespaces of `init_pid`. Returns (pid, master_fd).

    The new process is a grandchild: the intermediate joins the namespaces (non-dumpable
    first, so nothing in the container can open /proc/<pid>/exe of a runtime process),
    is moved into the container's cgroup, forks the process (which enters the pid
    namespace) and exits, so the process is reparented to the caller (a subreaper)."""
    _preload_debug()
    parent, child = chn.Channel.pair()
    sys.stdout.flush()
    sys.stderr.flush()
    joins = tuple((t, f"/proc/{init_pid}/ns/{libc.NS_PROC_NAME[t]}") for t in ns_types)
    order = ["user", "pid", "ipc", "uts", "network", "cgroup", "time", "mount"]
    joins = tuple(sorted(joins, key=lambda tp: order.index(tp[0])))
    # open the namespace files in the parent: the paths must be read before we join anything
    pid = os.fork()
    if pid == 0:
        parent.close()
        for fd in close_in_child:
            os.close(fd)
        stage = "exec"
        try:
            libc.prctl(libc.PR_SET_DUMPABLE, 0)
            ch = child
            ch.send(chn.CGROUP_READY, pid=os.getpid())
            ch.expect(chn.ACK)
            stage = "namespaces"
            namespaces.join_all(joins)
            gc = os.fork()
            if gc == 0:
                _end_on_signals(terminal=pp.terminal)
                try:
                    ch.expect(chn.ACK)
                    if pp.terminal:
                        stage = "terminal"
                        master, slave_path = terminal.open_pty()
                        ch.send(chn.CONSOLE, fds=[master])
                        os.close(master)
                        terminal.attach_slave(slave_path, getattr(pp, "console_size", None))
                    stage = "process"
                    for w in security.apply_attributes(pp) or ():
                        log.warning(w)
                    if seccomp_prog is not None and not pp.no_new_privileges:
                        from pyoci import seccomp
                        seccomp.load(seccomp_prog)
                    for w in security.switch_identity(pp) or ():
                        log.warning(w)
                    if seccomp_prog is not None and pp.no_new_privileges:
                        from pyoci import seccomp
                        seccomp.load(seccomp_prog)
                    stage = "exec"
                    path = security.resolve_executable(pp)
                    ch.send(chn.READY)
                    ch.expect(chn.GO)
                    ch.close()
                except BaseException as e:  # noqa: BLE001
                    _fail(ch, e, stage, code=255)
                try:
                    for fd in range(3, 3 + preserve_fds):
                        os.set_inheritable(fd, True)
                    libc.close_range(3 + preserve_fds)
                    security.exec_process(pp, path)
                except BaseException as e:  # noqa: BLE001
                    log.error(f"exec: {e}")
                    os._exit(255)
            ch.send(chn.INIT_PID, pid=gc)
            os._exit(0)
        except BaseException as e:  # noqa: BLE001
            _fail(child, e, stage, code=255)
    child.close()
    master_out = None
    proc_pid = None
    try:
        m = parent.expect(chn.CGROUP_READY)
        if cgroup_dir:
            try:
                with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
                    f.write(str(m.data["pid"]))
            except OSError as e:
                raise SyscallError("write", e.errno, os.path.join(cgroup_dir, "cgroup.procs"),
                                   stage="cgroup") from None
        parent.send(chn.ACK)
        m = parent.expect(chn.INIT_PID)
        proc_pid = m.data["pid"]
        os.waitpid(pid, 0)
        pid = None
        parent.send(chn.ACK)
        while True:
            m = parent.expect(chn.CONSOLE, chn.READY)
            if m.type == chn.READY:
                break
            master = m.fds[0]
            if console_socket:
                try:
                    terminal.send_console(console_socket, master)
                finally:
                    os.close(master)
            else:
                master_out = master
        parent.send(chn.GO)
        return proc_pid, master_out
    except BaseException:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        if proc_pid and subreaper:
            # the failed process was reparented to us: reap it, or it would stay a zombie
            # in the container's pid namespace and hold its pid 1 from exiting
            _reap_bounded(proc_pid, 5.0)
        raise
    finally:
        parent.close()
