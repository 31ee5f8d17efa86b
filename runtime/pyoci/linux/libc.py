"""Thin ctypes wrappers over the Linux system calls Python 3.11 lacks.

Every wrapper raises pyoci.errors.SyscallError(call, errno, path) on failure, so the
caller only has to add the stage (`err.with_stage("rootfs")`). x86_64 only for raw
syscall numbers (the target of this project); other arches can extend _NR.
"""
from __future__ import annotations

import ctypes
import os

from pyoci.errors import SyscallError

_libc = ctypes.CDLL(None, use_errno=True)

# --- syscall numbers (x86_64) ---------------------------------------------------------
_NR_X86_64 = {
    "personality": 135, "pivot_root": 155, "prctl": 157, "ioprio_set": 251, "ioprio_get": 252,
    "unshare": 272, "setns": 308, "sched_setattr": 314, "seccomp": 317, "bpf": 321,
    "set_mempolicy": 238, "pidfd_send_signal": 424, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "pidfd_open": 434, "close_range": 436,
    "openat2": 437, "mount_setattr": 442, "capget": 125, "capset": 126,
}
_NR_AARCH64 = {
    "personality": 92, "pivot_root": 41, "prctl": 167, "ioprio_set": 30, "ioprio_get": 31,
    "unshare": 97, "setns": 268, "sched_setattr": 274, "seccomp": 277, "bpf": 280,
    "set_mempolicy": 237, "pidfd_send_signal": 424, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "pidfd_open": 434, "close_range": 436,
    "openat2": 437, "mount_setattr": 442, "capget": 90, "capset": 91,
}
NR = _NR_AARCH64 if os.uname().machine in ("aarch64", "arm64") else _NR_X86_64

# --- namespace flags ----------------------------------------------------------------
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NS_FLAGS = {
    "pid": CLONE_NEWPID, "network": CLONE_NEWNET, "mount": CLONE_NEWNS, "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS, "user": CLONE_NEWUSER, "cgroup": CLONE_NEWCGROUP, "time": CLONE_NEWTIME,
}
# name of the file under /proc/PID/ns/ for each spec namespace type
NS_PROC_NAME = {
    "pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
    "user": "user", "cgroup": "cgroup", "time": "time",
}

# --- mount flags ---------------------------------------------------------------------
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

# mount_setattr / open_tree
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# openat2 resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# --- prctl ---------------------------------------------------------------------------
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# --- seccomp ---------------------------------------------------------------------------
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_LOG = 2
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4
SECCOMP_FILTER_FLAG_NEW_LISTENER = 8
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 32

_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _b(s):
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def _check(ret: int, call: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise SyscallError(call, err, path)
    return ret


def syscall(name: str, *args) -> int:
    """Raw syscall by name; returns the result or raises SyscallError(name)."""
    ret = _libc.syscall(ctypes.c_long(NR[name]), *args)
    return _check(ret, name)


# --- namespaces -------------------------------------------------------------------------
def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0, path: str | None = None) -> None:
    _check(_libc.setns(fd, nstype), "setns", path)


# --- mounts -----------------------------------------------------------------------------
def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    ret = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    if ret < 0:
        err = ctypes.get_errno()
        raise SyscallError("mount", err, target,
                           detail=f"source={source!s} type={fstype!s} flags={flags:#x} data={data!s}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    ret = _libc.syscall(ctypes.c_long(NR["pivot_root"]), _b(new_root), _b(put_old))
    _check(ret, "pivot_root", new_root)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path: str, attr_set: int, attr_clr: int = 0, propagation: int = 0,
                  recursive: bool = True, dirfd: int = AT_FDCWD, flags: int = 0,
                  userns_fd: int = 0) -> None:
    attr = _MountAttr(attr_set, attr_clr, propagation, userns_fd)
    f = flags | (AT_RECURSIVE if recursive else 0)
    ret = _libc.syscall(ctypes.c_long(NR["mount_setattr"]), ctypes.c_int(dirfd), _b(path),
                        ctypes.c_uint(f), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(ret, "mount_setattr", path)


def open_tree(path: str, flags: int, dirfd: int = AT_FDCWD) -> int:
    ret = _libc.syscall(ctypes.c_long(NR["open_tree"]), ctypes.c_int(dirfd), _b(path), ctypes.c_uint(flags))
    return _check(ret, "open_tree", path)


def move_mount(from_fd: int, to_path: str, from_path: str = "", to_dirfd: int = AT_FDCWD,
               flags: int = MOVE_MOUNT_F_EMPTY_PATH) -> None:
    ret = _libc.syscall(ctypes.c_long(NR["move_mount"]), ctypes.c_int(from_fd), _b(from_path),
                        ctypes.c_int(to_dirfd), _b(to_path), ctypes.c_uint(flags))
    _check(ret, "move_mount", to_path)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2): with RESOLVE_IN_ROOT the path is resolved as if dirfd were "/"."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    ret = _libc.syscall(ctypes.c_long(NR["openat2"]), ctypes.c_int(dirfd), _b(path),
                        ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    return _check(ret, "openat2", path)


# --- identity, process attributes ----------------------------------------------------------
def sethostname(name: str) -> None:
    b = name.encode()
    _check(_libc.sethostname(b, len(b)), "sethostname", name)


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_libc.setdomainname(b, len(b)), "setdomainname", name)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def personality(persona: int) -> int:
    ret = _libc.syscall(ctypes.c_long(NR["personality"]), ctypes.c_ulong(persona))
    return _check(ret, "personality")


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    ret = _libc.syscall(ctypes.c_long(NR["close_range"]), ctypes.c_uint(first), ctypes.c_uint(last),
                        ctypes.c_uint(flags))
    _check(ret, "close_range")


CLOSE_RANGE_CLOEXEC = 4


# --- capabilities ------------------------------------------------------------------------
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capget(pid: int = 0) -> tuple[int, int, int]:
    """Returns (effective, permitted, inheritable) as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    ret = _libc.syscall(ctypes.c_long(NR["capget"]), ctypes.byref(hdr), ctypes.byref(data))
    _check(ret, "capget")
    return tuple(data[0].__getattribute__(f) | (data[1].__getattribute__(f) << 32)
                 for f in ("effective", "permitted", "inheritable"))  # type: ignore[return-value]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        sh = 32 * i
        data[i].effective = (effective >> sh) & 0xFFFFFFFF
        data[i].permitted = (permitted >> sh) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> sh) & 0xFFFFFFFF
    ret = _libc.syscall(ctypes.c_long(NR["capset"]), ctypes.byref(hdr), ctypes.byref(data))
    _check(ret, "capset")


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


# --- pidfd -----------------------------------------------------------------------------------
def pidfd_open(pid: int) -> int:
    ret = _libc.syscall(ctypes.c_long(NR["pidfd_open"]), ctypes.c_int(pid), ctypes.c_uint(0))
    return _check(ret, "pidfd_open", f"pid {pid}")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    ret = _libc.syscall(ctypes.c_long(NR["pidfd_send_signal"]), ctypes.c_int(pidfd), ctypes.c_int(sig),
                        None, ctypes.c_uint(0))
    _check(ret, "pidfd_send_signal")


# --- keyrings (integrator block) -----------------------------------------------------------
NR.setdefault("keyctl", 219 if NR is _NR_AARCH64 else 250)
KEYCTL_JOIN_SESSION_KEYRING = 1


def join_session_keyring(name: str | None) -> int:
    ret = _libc.syscall(ctypes.c_long(NR["keyctl"]), ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING),
                        _b(name))
    return _check(ret, "keyctl(JOIN_SESSION_KEYRING)")
