"""Root filesystem (child side): executes a mounts.RootfsPlan in the container's mount namespace.

Called by the container init, in this order:
  prepare(rp)      "/" → rslave (or rootfsPropagation), rootfs bind-mounted onto itself,
                   config mounts in order, /dev (devices, ptmx, symlinks, console placeholder)
  (createContainer hooks)
  pivot(rp)        pivot_root (or MS_MOVE + chroot with rp.no_pivot); cwd is "/" afterwards
  finish(rp)       readonlyPaths, maskedPaths, root.readonly, rootfsPropagation of "/"
  bind_console(rp, slave_path)   the pty slave onto /dev/console (terminal only)

Safety: every destination is resolved inside the rootfs with openat2(RESOLVE_IN_ROOT), so a
symlink in the rootfs is read relative to the rootfs and can never lead out of it; missing
components are created the same way, one at a time; the mount itself targets the resolved
file descriptor through /proc/self/fd/N (checked to really be that fd). /dev/null used for
masking and the pty used for /dev/console are checked to be the expected character devices,
and /dev/console is never a symlink.

No config parsing happens here, and nothing is imported after pivot_root.
"""
from __future__ import annotations

import errno
import os
import stat

from pyoci.errors import StageError, SyscallError
from pyoci.linux import libc
from pyoci.mounts import proc_destination_problem
from pyoci.linux.libc import (
    AT_EMPTY_PATH, AT_RECURSIVE, MNT_DETACH, MOUNT_ATTR_IDMAP, MS_BIND, MS_MOVE, MS_NOATIME,
    MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC,
    MS_RELATIME, MS_REMOUNT, MS_SLAVE, MS_STRICTATIME, OPEN_TREE_CLOEXEC, OPEN_TREE_CLONE,
    RESOLVE_IN_ROOT, RESOLVE_NO_SYMLINKS,
)

STAGE = "rootfs"
O_PATH = os.O_PATH | os.O_CLOEXEC
UNIX98_PTY_SLAVE_MAJORS = range(136, 144)
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
_ATIME_FLAGS = MS_NOATIME | MS_RELATIME | MS_STRICTATIME | MS_NODIRATIME


# --- errors ------------------------------------------------------------------------------------
def _oserror(call: str, e: OSError, path: str, detail: str | None = None) -> SyscallError:
    return SyscallError(call, e.errno or 0, path, stage=STAGE, detail=detail)


def _staged(fn):
    """Give every SyscallError escaping `fn` the "rootfs" stage."""
    def wrapper(*args, **kw):
        try:
            return fn(*args, **kw)
        except SyscallError as e:
            raise e.with_stage(STAGE)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# --- path resolution inside the root ----------------------------------------------------------
class _Root:
    """A directory fd used as "/" for every lookup (openat2 RESOLVE_IN_ROOT)."""

    def __init__(self, path: str):
        self.path = path
        self.real = os.path.realpath(path)
        try:
            self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise _oserror("open", e, path, "container root") from None

    def close(self) -> None:
        os.close(self.fd)

    def open(self, path: str, flags: int = O_PATH, resolve: int = 0) -> int:
        # openat2 answers EAGAIN when a rename raced with a RESOLVE_IN_ROOT lookup (e.g. a
        # container renaming in a volume shared with this one): retry a bounded number of times
        for _ in range(64):
            try:
                return libc.openat2(self.fd, path, flags, resolve=RESOLVE_IN_ROOT | resolve)
            except SyscallError as e:
                if e.errno != errno.EAGAIN:
                    raise
        return libc.openat2(self.fd, path, flags, resolve=RESOLVE_IN_ROOT | resolve)

    def mkpath(self, path: str, is_dir: bool = True, mode: int = 0o755) -> int:
        """Open `path` (O_PATH) inside the root, creating what is missing one component at
        a time; the last one is a directory when is_dir, an empty file otherwise."""
        try:
            return self.open(path)
        except SyscallError as e:
            if e.errno != errno.ENOENT:
                raise e.with_stage(STAGE)
        comps = [c for c in path.split("/") if c]
        parent = self.open("/")
        cur = ""
        try:
            for i, name in enumerate(comps):
                cur = f"{cur}/{name}"
                try:
                    fd = self.open(cur)
                except SyscallError as e:
                    if e.errno != errno.ENOENT:
                        raise e.with_stage(STAGE)
                    last = i == len(comps) - 1
                    try:
                        if last and not is_dir:
                            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                             | os.O_CLOEXEC, 0o644, dir_fd=parent))
                        else:
                            os.mkdir(name, mode, dir_fd=parent)
                    except FileExistsError:
                        raise StageError(STAGE, f"cannot create {path} in the rootfs: {cur} is a "
                                                "dangling symlink") from None
                    except OSError as e2:
                        raise _oserror("mkdirat" if (is_dir or not last) else "openat", e2, cur) from None
                    fd = self.open(cur)
                os.close(parent)
                parent = fd
        except BaseException:
            os.close(parent)
            raise
        return parent


def _fdpath(fd: int, path: str, fallback: bool = False) -> str:
    """/proc/self/fd/N for an fd, after checking it really leads to that fd (a fake /proc
    could point elsewhere). With fallback (after pivot_root, where a path can no longer leave
    the root) the plain path is used when /proc is not mounted."""
    p = f"/proc/self/fd/{fd}"
    try:
        a = os.stat(p)
    except OSError as e:
        if fallback and e.errno == errno.ENOENT and not os.path.exists("/proc/self"):
            return path
        raise _oserror("stat", e, p, f"for {path}") from None
    b = os.fstat(fd)
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        raise StageError(STAGE, f"{p} does not lead to {path}: /proc is not a real procfs")
    return p


def _statfs_flags(target: str) -> int:
    """MS_* flags of the mount at target (what a remount must keep in a user namespace)."""
    f = os.statvfs(target).f_flag
    out = 0
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                   (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                   (os.ST_RELATIME, MS_RELATIME), (os.ST_RDONLY, MS_RDONLY)):
        if f & st:
            out |= ms
    return out


def _remount(target: str, flags: int, data: str | None = None) -> None:
    """mount(MS_REMOUNT); on EPERM (flags locked by a user namespace) retry keeping the
    mount's current nosuid/nodev/noexec (and atime when the request sets none)."""
    try:
        libc.mount(None, target, None, flags, data)
    except SyscallError as e:
        if e.errno != errno.EPERM:
            raise
        keep = _statfs_flags(target) & (MS_NOSUID | MS_NODEV | MS_NOEXEC | _ATIME_FLAGS)
        if flags & _ATIME_FLAGS:
            keep &= ~_ATIME_FLAGS
        if keep & ~flags == 0:
            raise
        libc.mount(None, target, None, flags | keep, data)


# --- prepare ----------------------------------------------------------------------------------
def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _mountinfo() -> list[tuple[str, str, list[str]]]:
    """[(mount point, fstype, optional fields)] of the caller's mount namespace."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            out.append((_unescape(fields[4]), fields[sep + 1], fields[6:sep]))
    return out


def _under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def _make_parent_private(rootfs: str) -> None:
    """pivot_root refuses a new root whose parent mount is shared: make it private (runc)."""
    real = os.path.realpath(rootfs)
    best = None
    for mp, _fstype, optional in _mountinfo():
        if _under(real, mp) and (best is None or len(mp) >= len(best[0])):
            best = (mp, optional)
    if best and any(o.startswith("shared:") for o in best[1]):
        libc.mount(None, best[0], None, MS_PRIVATE)


def _copy_tree(src: int, dst: int) -> None:
    """Copy the content of directory fd src into directory fd dst (tmpcopyup)."""
    for entry in os.scandir(src):
        name = entry.name
        st = os.stat(name, dir_fd=src, follow_symlinks=False)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(name, 0o700, dir_fd=dst)
            s = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            d = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst)
            try:
                _copy_tree(s, d)
                os.fchown(d, st.st_uid, st.st_gid)
                os.fchmod(d, mode)
            finally:
                os.close(s)
                os.close(d)
        elif stat.S_ISREG(st.st_mode):
            s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            try:
                d = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                            0o600, dir_fd=dst)
                try:
                    while True:
                        buf = os.read(s, 1 << 20)
                        if not buf:
                            break
                        while buf:
                            buf = buf[os.write(d, buf):]
                    os.fchown(d, st.st_uid, st.st_gid)
                    os.fchmod(d, mode)
                finally:
                    os.close(d)
            finally:
                os.close(s)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
        elif stat.S_ISSOCK(st.st_mode):
            continue
        else:
            os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dst)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
            os.chmod(name, mode, dir_fd=dst)
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst, follow_symlinks=False)


def _idmap_userns(m, userns_path: str | None = None) -> int:
    """An fd of a user namespace carrying the mount's mappings; without mappings, the
    container's (userns_path, default: the caller's own). A short-lived helper process
    holds a new namespace while its maps are written."""
    if not m.uid_mappings and not m.gid_mappings:
        path = userns_path or "/proc/self/ns/user"
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise _oserror("open", e, path, "user namespace for idmap") from None
    r1, w1 = os.pipe()    # init -> helper: "you can go" (EOF)
    r2, w2 = os.pipe()    # helper -> init: its pid as this /proc numbers it
    pid = os.fork()
    if pid == 0:  # helper: enter a new user namespace, say who it is, wait until released
        try:
            os.close(w1)
            os.close(r2)
            libc.unshare(libc.CLONE_NEWUSER)
            os.write(w2, os.readlink("/proc/self").encode())
            os.close(w2)
            os.read(r1, 1)
        finally:
            os._exit(0)
    os.close(r1)
    os.close(w2)
    try:
        # the pid as the mounted /proc sees it (the init may be in a new pid namespace)
        proc_pid = os.read(r2, 64).decode()
        if not proc_pid.isdigit():
            raise StageError(STAGE, "idmap: the helper process could not enter a user namespace")
        for fname, maps in (("uid_map", m.uid_mappings), ("gid_map", m.gid_mappings or m.uid_mappings)):
            text = "".join(f"{x.container_id} {x.host_id} {x.size}\n" for x in maps)
            try:
                with open(f"/proc/{proc_pid}/{fname}", "w") as f:
                    f.write(text)
            except OSError as e:
                raise _oserror("write", e, f"/proc/{proc_pid}/{fname}", "idmap mappings") from None
        return os.open(f"/proc/{proc_pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(r2)
        os.close(w1)
        os.waitpid(pid, 0)


def idmapped_tree(m, userns_path: str | None = None) -> int:
    """A detached mount (fd) of a bind mount's source carrying its idmapping (idmap: the top
    mount, ridmap: every mount of an rbind). Runs anywhere with privilege over the source's
    filesystem: in the container init when it has no user namespace, else in the parent
    (see open_idmapped_mounts)."""
    tree = libc.open_tree(m.source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
                          | (AT_RECURSIVE if m.recursive else 0))
    try:
        userns = _idmap_userns(m, userns_path)
        try:
            libc.mount_setattr("", MOUNT_ATTR_IDMAP, recursive=m.idmap == "ridmap", dirfd=tree,
                               flags=AT_EMPTY_PATH, userns_fd=userns)
        finally:
            os.close(userns)
    except BaseException:
        os.close(tree)
        raise
    return tree


@_staged
def open_idmapped_mounts(rp, userns_path: str | None = None) -> dict[int, int]:
    """PARENT side, for a container with a user namespace (the init cannot idmap a mount of
    a filesystem it does not own): {mount index: detached idmapped mount fd} for every
    idmap/ridmap mount of the plan. userns_path is the container's user namespace
    (/proc/<init pid>/ns/user), used for mounts without their own mappings. Send the fds to
    the init and pass the dict to prepare(rp, mount_fds=...); close them afterwards."""
    out: dict[int, int] = {}
    try:
        for m in rp.mounts:
            if m.idmap:
                out[m.index] = idmapped_tree(m, userns_path)
    except BaseException:
        for fd in out.values():
            os.close(fd)
        raise
    return out


def _attach(tree: int, dest_fd: int) -> None:
    libc.move_mount(tree, "", to_dirfd=dest_fd, flags=MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)


def _check_proc_destination(root: _Root, fd: int, m) -> None:
    """Where the destination really is (after symlinks inside the rootfs): nothing but a
    procfs on /proc, only the allowed files inside it (runc's rule, see mounts.py)."""
    real = os.readlink(f"/proc/self/fd/{fd}")
    top = root.real.rstrip("/")
    if real != top and not real.startswith(top + "/"):
        raise StageError(STAGE, f"mounts[{m.index}] {m.destination}: resolved outside the rootfs ({real})")
    resolved = real[len(top):] or "/"
    problem = proc_destination_problem(resolved, m.bind, m.fstype)
    if problem:
        raise StageError(STAGE, f"mounts[{m.index}] {m.destination}: {problem}")
    if resolved == "/proc" and m.bind:
        src = os.path.realpath(m.source)
        best = ("", "")
        for mp, fstype, _ in _mountinfo():
            if _under(src, mp) and len(mp) >= len(best[0]):
                best = (mp, fstype)
        if best[1] != "proc":
            raise StageError(STAGE, f"mounts[{m.index}] {m.destination}: the source of a bind "
                                    f"mount on /proc must be a proc filesystem ({m.source} is not)")


def _mount_one(root: _Root, m, tree: int | None = None) -> None:
    where = f"mounts[{m.index}] {m.destination}"
    if m.bind:
        try:
            is_dir = stat.S_ISDIR(os.stat(m.source).st_mode)
        except OSError as e:
            raise _oserror("stat", e, m.source, f"bind source of {where}") from None
    else:
        is_dir = True
    fd = root.mkpath(m.destination, is_dir)
    old = None
    try:
        target = _fdpath(fd, m.destination)
        _check_proc_destination(root, fd, m)
        if m.tmpcopyup:
            old = root.open(m.destination, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        remount = m.remount_flags
        if tree is not None:                 # made by the parent (open_idmapped_mounts)
            _attach(tree, fd)
        elif m.idmap:
            t = idmapped_tree(m)
            try:
                _attach(t, fd)
            finally:
                os.close(t)
        elif m.bind:
            libc.mount(m.source, target, None, m.mount_flags)
        else:
            try:
                libc.mount(m.source, target, m.fstype, m.mount_flags, m.data or None)
            except SyscallError as e:
                # e.g. sysfs/mqueue/cgroup2 refused in a user namespace: bind the host's view
                if (e.errno not in (errno.EPERM, errno.EBUSY) or not m.fallback_bind
                        or not os.path.exists(m.fallback_bind)):
                    raise
                libc.mount(m.fallback_bind, target, None, MS_BIND | MS_REC)
                if m.flags & ~(MS_REC | MS_REMOUNT | MS_BIND):
                    remount = m.flags | MS_BIND | MS_REMOUNT
        os.close(fd)
        fd = -1
        fd = root.open(m.destination)       # now the root of the new mount
        target = _fdpath(fd, m.destination)
        if old is not None:
            new = root.open(m.destination, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _copy_tree(old, new)
                st = os.fstat(old)
                os.fchown(new, st.st_uid, st.st_gid)
                if "mode=" not in m.data:
                    os.fchmod(new, stat.S_IMODE(st.st_mode))
            except OSError as e:
                raise _oserror("copy", e, m.destination, "tmpcopyup") from None
            finally:
                os.close(new)
        if remount:
            _remount(target, remount)
        for prop in m.propagation:
            libc.mount(None, target, None, prop)
        if m.attr_set or m.attr_clr:
            libc.mount_setattr("", m.attr_set, m.attr_clr, recursive=True, dirfd=fd, flags=AT_EMPTY_PATH)
    except SyscallError as e:
        if e.path and e.path.startswith("/proc/self/fd/"):
            e.path = m.destination
        e.detail = f"{where}: {e.detail}" if e.detail else where
        e.stage = STAGE
        e.args = (e._format(),)
        raise
    finally:
        if fd >= 0:
            os.close(fd)
        if old is not None:
            os.close(old)


def _same_device(st: os.stat_result, d) -> bool:
    if stat.S_IFMT(st.st_mode) != d.file_type:
        return False
    return d.type == "p" or st.st_rdev == os.makedev(d.major, d.minor)


def _make_device(root: _Root, d) -> None:
    parent_path, name = os.path.split(d.path)
    parent = root.mkpath(parent_path or "/")
    try:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and _same_device(st, d):
            if stat.S_IMODE(st.st_mode) != d.mode:
                os.chmod(name, d.mode, dir_fd=parent)
            if (st.st_uid, st.st_gid) != (d.uid, d.gid):
                os.chown(name, d.uid, d.gid, dir_fd=parent, follow_symlinks=False)
            return
        if st is not None:
            if not d.default or stat.S_ISDIR(st.st_mode):
                raise StageError(STAGE, f"device {d.path}: a different file already exists there "
                                        f"(mode {oct(st.st_mode)})")
            os.unlink(name, dir_fd=parent)
        rdev = 0 if d.type == "p" else os.makedev(d.major, d.minor)
        try:
            os.mknod(name, d.file_type | d.mode, rdev, dir_fd=parent)
        except PermissionError:
            _bind_device(root, parent, name, d)
            return
        os.chmod(name, d.mode, dir_fd=parent)
        os.chown(name, d.uid, d.gid, dir_fd=parent, follow_symlinks=False)
    except OSError as e:
        raise _oserror("mknod", e, d.path) from None
    finally:
        os.close(parent)


def _bind_device(root: _Root, parent: int, name: str, d) -> None:
    """mknod is not allowed (user namespace): bind the host's node, if it is the same device."""
    try:
        st = os.stat(d.path)
    except OSError as e:
        raise _oserror("stat", e, d.path, "host device to bind (mknod not permitted)") from None
    if not _same_device(st, d):
        raise StageError(STAGE, f"device {d.path}: mknod not permitted and the host's "
                                f"{d.path} is a different device")
    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=parent))
    fd = root.open(d.path, O_PATH | os.O_NOFOLLOW)
    try:
        libc.mount(d.path, _fdpath(fd, d.path), None, MS_BIND)
    finally:
        os.close(fd)


def _setup_dev(root: _Root, rp) -> None:
    for d in rp.devices:
        _make_device(root, d)
    dev = root.mkpath("/dev")
    try:
        try:
            os.unlink("ptmx", dir_fd=dev)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _oserror("unlink", e, "/dev/ptmx") from None
        try:
            os.symlink("pts/ptmx", "ptmx", dir_fd=dev)
        except OSError as e:
            raise _oserror("symlink", e, "/dev/ptmx") from None
        for target, link in rp.dev_symlinks:
            if not os.path.exists(target):
                continue
            try:
                os.symlink(target, os.path.basename(link), dir_fd=dev)
            except FileExistsError:
                pass
            except OSError as e:
                raise _oserror("symlink", e, link) from None
    finally:
        os.close(dev)


def _console_placeholder(root: _Root) -> None:
    """An empty regular file at /dev/console for bind_console() (never a symlink)."""
    dev = root.mkpath("/dev")
    try:
        try:
            st = os.stat("console", dir_fd=dev, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
            if stat.S_ISDIR(st.st_mode):
                raise StageError(STAGE, "/dev/console is a directory")
            os.unlink("console", dir_fd=dev)
            st = None
        if st is None:
            os.close(os.open("console", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=dev))
    except OSError as e:
        raise _oserror("create", e, "/dev/console") from None
    finally:
        os.close(dev)


@_staged
def prepare(rp, mount_fds: dict[int, int] | None = None) -> None:
    """Everything before pivot_root (see module doc). Runs in the container's mount ns.
    mount_fds: {mount index: detached mount fd} from open_idmapped_mounts() (user namespace
    containers with idmap/ridmap mounts); they are attached instead of being made here."""
    libc.mount(None, "/", None, rp.prepare_propagation)
    _make_parent_private(rp.rootfs)
    try:
        libc.mount(rp.rootfs, rp.rootfs, None, MS_BIND | MS_REC)
    except SyscallError as e:
        e.detail = "bind-mount the rootfs onto itself"
        raise
    root = _Root(rp.rootfs)
    try:
        for m in rp.mounts:
            _mount_one(root, m, (mount_fds or {}).get(m.index))
        if rp.setup_dev:
            _setup_dev(root, rp)
        if rp.console:
            _console_placeholder(root)
    finally:
        root.close()


# --- pivot ------------------------------------------------------------------------------------
def _pivot_root(rootfs: str) -> None:
    oldroot = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        newroot = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchdir(newroot)
            libc.pivot_root(".", ".")
        finally:
            os.close(newroot)
        # the old root is now stacked on top of "/": detach it without telling the host
        os.fchdir(oldroot)
        libc.mount(None, ".", None, MS_SLAVE | MS_REC)
        libc.umount2(".", MNT_DETACH)
    finally:
        os.close(oldroot)
    os.chdir("/")


def _move_root(rootfs: str) -> None:
    """--no-pivot: MS_MOVE the rootfs onto "/" and chroot into it (runc's msMoveRoot): first
    detach the host's proc and sysfs mounts that would stay reachable beneath."""
    real = os.path.realpath(rootfs)
    os.chdir(rootfs)
    stale = [mp for mp, fstype, _ in _mountinfo()
             if fstype in ("proc", "sysfs") and not _under(mp, real)]
    for mp in sorted(set(stale), key=len, reverse=True):
        try:
            libc.mount(None, mp, None, MS_SLAVE | MS_REC)
        except SyscallError as e:
            if e.errno == errno.ENOENT:
                continue
            raise
        try:
            libc.umount2(mp, MNT_DETACH)
        except SyscallError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM):
                raise
            libc.mount("tmpfs", mp, "tmpfs", 0)
    libc.mount(rootfs, "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")


@_staged
def pivot(rp) -> None:
    """Make the rootfs "/" (pivot_root, or MS_MOVE + chroot with rp.no_pivot); cwd is "/"."""
    if rp.no_pivot:
        _move_root(rp.rootfs)
    else:
        _pivot_root(rp.rootfs)


# --- finish -----------------------------------------------------------------------------------
def _readonly_path(root: _Root, path: str) -> None:
    try:
        fd = root.open(path)
    except SyscallError as e:
        if e.errno == errno.ENOENT:
            return
        raise
    try:
        target = _fdpath(fd, path, fallback=True)
        libc.mount(target, target, None, MS_BIND | MS_REC)
    finally:
        os.close(fd)
    fd = root.open(path)
    try:
        target = _fdpath(fd, path, fallback=True)
        keep = _statfs_flags(target) & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
        _remount(target, MS_BIND | MS_REMOUNT | MS_RDONLY | keep)
    finally:
        os.close(fd)


def _dev_null(root: _Root) -> int:
    """An O_PATH fd of the container's /dev/null, checked to be the 1:3 char device."""
    fd = root.open("/dev/null", O_PATH | os.O_NOFOLLOW)
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise StageError(STAGE, "maskedPaths: /dev/null in the container is not the null "
                                "device (char 1:3); refusing to use it for masking")
    return fd


def _mask_path(root: _Root, path: str, null: list) -> None:
    try:
        fd = root.open(path)
    except SyscallError as e:
        if e.errno == errno.ENOENT:
            return
        raise
    try:
        target = _fdpath(fd, path, fallback=True)
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            libc.mount("tmpfs", target, "tmpfs", MS_RDONLY)
        else:
            if not null:
                null.append(_dev_null(root))
            libc.mount(_fdpath(null[0], "/dev/null", fallback=True), target, None, MS_BIND)
    finally:
        os.close(fd)


@_staged
def finish(rp) -> None:
    """After pivot: readonlyPaths, maskedPaths, root.readonly, rootfsPropagation of "/"."""
    root = _Root("/")
    null: list[int] = []
    try:
        for p in rp.readonly_paths:
            _readonly_path(root, p)
        for p in rp.masked_paths:
            _mask_path(root, p, null)
    finally:
        for fd in null:
            os.close(fd)
        root.close()
    if rp.readonly:
        _remount("/", MS_BIND | MS_REMOUNT | MS_RDONLY
                 | (_statfs_flags("/") & (MS_NOSUID | MS_NODEV | MS_NOEXEC)))
    if rp.root_propagation:
        libc.mount(None, "/", None, rp.root_propagation)


@_staged
def bind_console(rp, slave_path: str) -> None:
    """Bind the pty slave (a path inside the container, e.g. /dev/pts/0) onto /dev/console.
    Refuses a /dev/console that is a symlink, and a slave that is not a pty slave device."""
    root = _Root("/")
    try:
        try:
            dev = root.open("/dev", O_PATH | os.O_DIRECTORY)
        except SyscallError as e:
            raise e.with_stage(STAGE)
        try:
            try:
                st = os.stat("console", dir_fd=dev, follow_symlinks=False)
            except FileNotFoundError:
                os.close(os.open("console", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o600, dir_fd=dev))
                st = os.stat("console", dir_fd=dev, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise StageError(STAGE, "/dev/console is a symlink: refusing to mount the console over it")
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
                raise StageError(STAGE, f"/dev/console is not a file (mode {oct(st.st_mode)})")
            cfd = libc.openat2(dev, "console", O_PATH | os.O_NOFOLLOW, resolve=RESOLVE_NO_SYMLINKS)
        finally:
            os.close(dev)
        try:
            if stat.S_ISLNK(os.fstat(cfd).st_mode):
                raise StageError(STAGE, "/dev/console is a symlink: refusing to mount the console over it")
            sfd = root.open(slave_path, O_PATH | os.O_NOFOLLOW)
            try:
                sst = os.fstat(sfd)
                if not stat.S_ISCHR(sst.st_mode) or os.major(sst.st_rdev) not in UNIX98_PTY_SLAVE_MAJORS:
                    raise StageError(STAGE, f"console: {slave_path} is not a pty slave device")
                libc.mount(_fdpath(sfd, slave_path, fallback=True),
                           _fdpath(cfd, "/dev/console", fallback=True), None, MS_BIND)
            finally:
                os.close(sfd)
        finally:
            os.close(cfd)
    except OSError as e:
        raise _oserror("console", e, "/dev/console") from None
    finally:
        root.close()
