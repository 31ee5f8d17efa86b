"""Process attributes and privileges of the container process.

Parent side (pure): `build_process_plan(process, linux) -> ProcessPlan`, a frozen description of
everything below, built before any fork; `check_host_support(pp)` for the LSM checks runc does
before starting (parent side, reads /sys and /proc of the host).

Child side, called by process.py in this order after pivot_root (the child's /proc is the
container's procfs):
  1. `apply_attributes(pp)`  sysctl, oom_score_adj, rlimits, personality, scheduler, ioprio,
                             mempolicy, umask, AppArmor / SELinux exec labels. sysctl must be
                             written before /proc/sys is made read-only: either call this before
                             rootfs.finish, or `apply_sysctl(pp)` before it and
                             `apply_attributes(pp, sysctl=False)` after.
  2. `switch_identity(pp)`   bounding set, groups, gid, uid (keeping caps), capability sets,
                             ambient set, cwd, no_new_privs
  3. (seccomp, exec gate: process.py)
  4. `resolve_executable(pp)` execvp lookup with runc's error wording
  5. `exec_process(pp, path)` signal reset, final CPU affinity, execve with exactly pp.env

Both child steps return a list of warnings (capabilities that could not be granted, groups that
could not be set) for the caller to log. Everything the child uses is imported at module level:
after pivot_root the host's Python library is out of reach.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import json
import os
import signal
import stat
from pyoci._record import dataclass, field
from pyoci._nt import NamedTuple  # not typing (~2-3 ms); NoReturn is only an annotation

from pyoci import caps as _caps
from pyoci.errors import ConfigError, PyociError, StageError, SyscallError
from pyoci.linux import libc

# ----------------------------------------------------------------------------------------------
# kernel constants
# ----------------------------------------------------------------------------------------------
#: rlimit names -> resource numbers (asm-generic/resource.h; x86_64 and arm64)
RLIMITS: dict[str, int] = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
RLIMIT_NAMES = {v: k for k, v in RLIMITS.items()}
RLIM64_INFINITY = (1 << 64) - 1

SCHED_POLICIES = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
                  "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
               "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
               "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
               "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}
IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
IOPRIO_CLASS_SHIFT = 13
IOPRIO_WHO_PROCESS = 1
PERSONALITY_DOMAINS = {"LINUX": 0x0000, "LINUX32": 0x0008}
PERSONALITY_FLAGS = {
    "UNAME26": 0x0020000, "ADDR_NO_RANDOMIZE": 0x0040000, "FDPIC_FUNCPTRS": 0x0080000,
    "MMAP_PAGE_ZERO": 0x0100000, "ADDR_COMPAT_LAYOUT": 0x0200000, "READ_IMPLIES_EXEC": 0x0400000,
    "ADDR_LIMIT_32BIT": 0x0800000, "SHORT_INODE": 0x1000000, "WHOLE_SECONDS": 0x2000000,
    "STICKY_TIMEOUTS": 0x4000000, "ADDR_LIMIT_3GB": 0x8000000,
}
MPOL_MODES = {"MPOL_DEFAULT": 0, "MPOL_PREFERRED": 1, "MPOL_BIND": 2, "MPOL_INTERLEAVE": 3,
              "MPOL_LOCAL": 4, "MPOL_PREFERRED_MANY": 5, "MPOL_WEIGHTED_INTERLEAVE": 6}
MPOL_FLAGS = {"MPOL_F_NUMA_BALANCING": 1 << 13, "MPOL_F_RELATIVE_NODES": 1 << 14,
              "MPOL_F_STATIC_NODES": 1 << 15}
PROC_SUPER_MAGIC = 0x9FA0
SELINUX_MAGIC = 0xF97CFF8C
DEFAULT_EXEC_PATH = "/bin:/usr/bin"  # glibc's execvp default when PATH is unset

APPARMOR_DISABLED_MSG = 'apparmor profile "{}" specified, but AppArmor is not enabled on this system'
SELINUX_DISABLED_MSG = "selinux label is specified in config, but selinux is disabled or not supported"


class ExecError(PyociError):
    """The user program cannot be executed. str() is runc's wording, which podman maps to exit
    codes (`executable file not found in $PATH` -> 127, `permission denied` -> 126). The CLI
    sets exit code 255 for `exec`; `create` fails with 1."""


# ----------------------------------------------------------------------------------------------
# the plan (pure data)
# ----------------------------------------------------------------------------------------------
class CapSets(NamedTuple):
    bounding: int = 0
    effective: int = 0
    permitted: int = 0
    inheritable: int = 0
    ambient: int = 0


class Rlimit(NamedTuple):
    resource: int
    soft: int
    hard: int


class Scheduler(NamedTuple):
    policy: int
    nice: int = 0
    priority: int = 0
    flags: int = 0
    runtime: int = 0
    deadline: int = 0
    period: int = 0


class IoPriority(NamedTuple):
    ioclass: int
    priority: int


class Personality(NamedTuple):
    domain: int
    flags: int = 0


class CpuAffinity(NamedTuple):
    initial: tuple[int, ...] | None
    final: tuple[int, ...] | None


class MemoryPolicy(NamedTuple):
    mode: int
    nodes: tuple[int, ...]
    flags: int = 0


@dataclass(frozen=True)
class ProcessPlan:
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    umask: int | None = None
    capabilities: CapSets = CapSets()
    rlimits: tuple[Rlimit, ...] = ()
    no_new_privileges: bool = False
    oom_score_adj: int | None = None
    sysctl: tuple[tuple[str, str], ...] = ()
    scheduler: Scheduler | None = None
    io_priority: IoPriority | None = None
    personality: Personality | None = None
    exec_cpu_affinity: CpuAffinity | None = None
    memory_policy: MemoryPolicy | None = None
    apparmor_profile: str | None = None
    selinux_label: str | None = None
    terminal: bool = False
    console_size: tuple[int, int] | None = None  # (height, width)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def describe(self) -> dict:
        """Plain data (JSON-ready) for --debug and `explain`."""
        c = self.capabilities
        return {
            "args": list(self.args), "env": list(self.env), "cwd": self.cwd,
            "user": {"uid": self.uid, "gid": self.gid, "additionalGids": list(self.additional_gids),
                     "umask": None if self.umask is None else f"{self.umask:04o}"},
            "capabilities": {k: _caps.mask_to_names(getattr(c, k)) for k in CapSets._fields},
            "rlimits": [{"type": RLIMIT_NAMES.get(r.resource, str(r.resource)), "soft": r.soft,
                         "hard": r.hard} for r in self.rlimits],
            "noNewPrivileges": self.no_new_privileges, "oomScoreAdj": self.oom_score_adj,
            "sysctl": dict(self.sysctl),
            "scheduler": None if self.scheduler is None else {
                **self.scheduler._asdict(), "policy": _name(SCHED_POLICIES, self.scheduler.policy),
                "flags": _flag_names(SCHED_FLAGS, self.scheduler.flags)},
            "ioPriority": None if self.io_priority is None else {
                "class": _name(IOPRIO_CLASSES, self.io_priority.ioclass),
                "priority": self.io_priority.priority},
            "personality": None if self.personality is None else {
                "domain": _name(PERSONALITY_DOMAINS, self.personality.domain),
                "flags": _flag_names(PERSONALITY_FLAGS, self.personality.flags)},
            "execCPUAffinity": None if self.exec_cpu_affinity is None else {
                "initial": _opt_list(self.exec_cpu_affinity.initial),
                "final": _opt_list(self.exec_cpu_affinity.final)},
            "memoryPolicy": None if self.memory_policy is None else {
                "mode": _name(MPOL_MODES, self.memory_policy.mode),
                "nodes": list(self.memory_policy.nodes),
                "flags": _flag_names(MPOL_FLAGS, self.memory_policy.flags)},
            "apparmorProfile": self.apparmor_profile, "selinuxLabel": self.selinux_label,
            "terminal": self.terminal,
            "consoleSize": None if self.console_size is None else
            {"height": self.console_size[0], "width": self.console_size[1]},
            "warnings": list(self.warnings),
        }


def _opt_list(t):
    return None if t is None else list(t)


def _name(table: dict[str, int], value: int):
    for k, v in table.items():
        if v == value:
            return k
    return value


def _flag_names(table: dict[str, int], value: int) -> list:
    names = [k for k, v in table.items() if value & v]
    rest = value & ~sum(table[k] for k in names)
    return names + ([rest] if rest else [])


def parse_id_list(text: str) -> tuple[int, ...]:
    """"0-3,7" -> (0, 1, 2, 3, 7). Raises ValueError on a malformed list. Blanks are ignored."""
    out: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        if "-" in part:
            lo, _, hi = part.partition("-")
            a, b = int(lo), int(hi)
            if a > b or a < 0:
                raise ValueError(f"bad range {part!r}")
            out.update(range(a, b + 1))
        else:
            n = int(part)
            if n < 0:
                raise ValueError(f"bad number {part!r}")
            out.add(n)
    return tuple(sorted(out))


def _flags(names, table: dict[str, int], path: str, problems: list[str]) -> int:
    v = 0
    for i, n in enumerate(names or ()):
        if n not in table:
            problems.append(f"{path}[{i}]: unknown flag {n!r} (known: {', '.join(table)})")
        else:
            v |= table[n]
    return v


def build_process_plan(process: dict, linux: dict | None = None, *,
                       for_exec: bool = False) -> ProcessPlan:
    """config.process (+ config.linux) -> ProcessPlan. Pure. Raises ConfigError listing every
    problem (unknown rlimit/scheduler/ioprio/personality/mempolicy names, duplicate rlimits...).
    Unknown capability names are dropped and reported in `warnings`.
    for_exec=True plans a process for `pyoci exec`: `execCPUAffinity` is kept (runtime-spec: it
    does not apply to the container's init) and `linux.sysctl` is left out (the init wrote it)."""
    linux = linux or {}
    problems: list[str] = []
    warnings: list[str] = []
    p = "process"

    args = process.get("args") or []
    if not args:
        problems.append(f"{p}.args: must have at least one entry")
    env = list(process.get("env") or [])
    for i, s in enumerate([*args, *env]):
        if "\0" in s:
            what = f"args[{i}]" if i < len(args) else f"env[{i - len(args)}]"
            problems.append(f"{p}.{what}: contains a NUL byte")
    cwd = process.get("cwd") or ""
    if not cwd.startswith("/"):
        problems.append(f"{p}.cwd: must be an absolute path (got {cwd!r})")

    user = process.get("user") or {}
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    add_gids = tuple(int(g) for g in (user.get("additionalGids") or ()))
    umask = user.get("umask")

    # capabilities: unknown names are warnings (spec#80), never errors
    cfg_caps = process.get("capabilities") or {}
    masks = {}
    for k in CapSets._fields:
        m, unknown = _caps.names_to_mask(cfg_caps.get(k) or ())
        for n in unknown:
            warnings.append(f"{p}.capabilities.{k}: unknown capability {n!r} ignored")
        masks[k] = m
    cs = CapSets(**masks)
    lost = cs.effective & ~cs.permitted
    if lost:
        warnings.append(f"{p}.capabilities.effective: {', '.join(_caps.mask_to_names(lost))} not in "
                        "the permitted set: cannot be granted, ignored")
    lost_amb = cs.ambient & ~(cs.permitted & cs.inheritable)
    if lost_amb:
        warnings.append(f"{p}.capabilities.ambient: {', '.join(_caps.mask_to_names(lost_amb))} not in "
                        "both the permitted and inheritable sets: cannot be raised, ignored")
    cs = cs._replace(effective=cs.effective & cs.permitted, ambient=cs.ambient & ~lost_amb)

    rlimits: list[Rlimit] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(process.get("rlimits") or ()):
        t = r.get("type")
        if t not in RLIMITS:
            problems.append(f"{p}.rlimits[{i}].type: unknown rlimit {t!r}")
            continue
        if t in seen:
            problems.append(f"{p}.rlimits[{i}].type: duplicate rlimit {t} (also rlimits[{seen[t]}])")
            continue
        seen[t] = i
        soft, hard = int(r.get("soft", 0)), int(r.get("hard", 0))
        if not (0 <= soft <= RLIM64_INFINITY and 0 <= hard <= RLIM64_INFINITY):
            problems.append(f"{p}.rlimits[{i}]: limits must be within 0..2^64-1")
            continue
        if soft > hard:
            problems.append(f"{p}.rlimits[{i}]: soft limit {soft} is greater than hard limit {hard}")
            continue
        rlimits.append(Rlimit(RLIMITS[t], soft, hard))

    oom = process.get("oomScoreAdj")
    if oom is not None and not -1000 <= int(oom) <= 1000:
        problems.append(f"{p}.oomScoreAdj: {oom} is outside -1000..1000")

    sysctl = []
    # linux.sysctl belongs to the container, written once by its init: an exec'd process skips it
    # (and /proc/sys is usually read-only by then).
    for k, v in ({} if for_exec else linux.get("sysctl") or {}).items():
        comps = sysctl_path(k).split("/")
        if not k or any(c in ("", ".", "..") for c in comps):
            problems.append(f"linux.sysctl: bad key {k!r}")
        sysctl.append((k, str(v)))

    sched = None
    s = process.get("scheduler")
    if s is not None:
        pol = s.get("policy")
        if pol not in SCHED_POLICIES:
            problems.append(f"{p}.scheduler.policy: unknown policy {pol!r}")
        else:
            sched = Scheduler(SCHED_POLICIES[pol], int(s.get("nice", 0)), int(s.get("priority", 0)),
                              _flags(s.get("flags"), SCHED_FLAGS, f"{p}.scheduler.flags", problems),
                              int(s.get("runtime", 0)), int(s.get("deadline", 0)), int(s.get("period", 0)))

    iop = None
    io = process.get("ioPriority")
    if io is not None:
        cls, prio = io.get("class"), int(io.get("priority", 0))
        if cls not in IOPRIO_CLASSES:
            problems.append(f"{p}.ioPriority.class: unknown class {cls!r}")
        elif not 0 <= prio <= 7:
            problems.append(f"{p}.ioPriority.priority: {prio} is outside 0..7")
        else:
            iop = IoPriority(IOPRIO_CLASSES[cls], prio)

    pers = None
    pe = linux.get("personality")
    if pe is not None:
        dom = pe.get("domain")
        if dom not in PERSONALITY_DOMAINS:
            problems.append(f"linux.personality.domain: unknown domain {dom!r} (LINUX or LINUX32)")
        else:
            pers = Personality(PERSONALITY_DOMAINS[dom],
                               _flags(pe.get("flags"), PERSONALITY_FLAGS, "linux.personality.flags",
                                      problems))

    aff = None
    a = process.get("execCPUAffinity")
    if a is not None and for_exec:
        vals = []
        for k in ("initial", "final"):
            try:
                vals.append(parse_id_list(a[k]) if a.get(k) else None)
            except ValueError as e:
                problems.append(f"{p}.execCPUAffinity.{k}: {e}")
                vals.append(None)
        if vals[0] is not None or vals[1] is not None:
            aff = CpuAffinity(*vals)

    mpol = None
    mp = linux.get("memoryPolicy")
    if mp is not None:
        mode = mp.get("mode")
        try:
            nodes = parse_id_list(mp.get("nodes") or "")
        except ValueError as e:
            problems.append(f"linux.memoryPolicy.nodes: {e}")
            nodes = ()
        if mode not in MPOL_MODES:
            problems.append(f"linux.memoryPolicy.mode: unknown mode {mode!r}")
        else:
            m = MPOL_MODES[mode]
            if m in (0, 4) and nodes:
                problems.append(f"linux.memoryPolicy.nodes: must be empty for {mode}")
            elif m in (2, 3, 5, 6) and not nodes:
                problems.append(f"linux.memoryPolicy.nodes: {mode} needs at least one node")
            mpol = MemoryPolicy(m, nodes, _flags(mp.get("flags"), MPOL_FLAGS, "linux.memoryPolicy.flags",
                                                 problems))

    terminal = bool(process.get("terminal", False))
    size = process.get("consoleSize")
    console = (int(size.get("height", 0)), int(size.get("width", 0))) if terminal and size else None

    if problems:
        raise ConfigError(problems)
    return ProcessPlan(
        args=tuple(args), env=tuple(env), cwd=cwd, uid=uid, gid=gid, additional_gids=add_gids,
        umask=None if umask is None else int(umask), capabilities=cs, rlimits=tuple(rlimits),
        no_new_privileges=bool(process.get("noNewPrivileges", False)),
        oom_score_adj=None if oom is None else int(oom), sysctl=tuple(sysctl), scheduler=sched,
        io_priority=iop, personality=pers, exec_cpu_affinity=aff, memory_policy=mpol,
        apparmor_profile=process.get("apparmorProfile") or None,
        selinux_label=process.get("selinuxLabel") or None, terminal=terminal, console_size=console,
        warnings=tuple(warnings))


def sysctl_path(key: str) -> str:
    """sysctl(8) naming: "net.ipv4.ip_forward" -> "net/ipv4/ip_forward". When the first separator
    is "/", the key is a path already ("net/ipv4/conf/eth0.1/forwarding")."""
    for ch in key:
        if ch == "/":
            return key
        if ch == ".":
            return key.translate(str.maketrans("./", "/."))
    return key


# ----------------------------------------------------------------------------------------------
# host checks (parent side)
# ----------------------------------------------------------------------------------------------
def apparmor_enabled() -> bool:
    try:
        with open("/sys/module/apparmor/parameters/enabled", "rb") as f:
            return f.read(1) == b"Y"
    except OSError:
        return False


def selinux_enabled() -> bool:
    try:
        if _statfs_type("/sys/fs/selinux") != SELINUX_MAGIC:
            return False
        with open("/proc/self/attr/current", "rb") as f:
            return f.read().rstrip(b"\0\n") not in (b"", b"kernel")
    except (OSError, SyscallError):
        return False


def check_host_support(pp: ProcessPlan) -> None:
    """Parent side, before fork: an LSM label asked for on a host without that LSM is an error,
    as in runc. Raises ConfigError."""
    problems = []
    if pp.apparmor_profile and not apparmor_enabled():
        problems.append("process.apparmorProfile: " + APPARMOR_DISABLED_MSG.format(pp.apparmor_profile))
    if pp.selinux_label and not selinux_enabled():
        problems.append("process.selinuxLabel: " + SELINUX_DISABLED_MSG)
    if problems:
        raise ConfigError(problems)


# ----------------------------------------------------------------------------------------------
# child side: low-level helpers
# ----------------------------------------------------------------------------------------------
_c = ctypes.CDLL(None, use_errno=True)
_c.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
_c.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
_c.setrlimit.argtypes = [ctypes.c_int, ctypes.c_void_p]
_c.execve.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p)]


def _fs_type_of(ret: int, buf, call: str, path: str) -> int:
    if ret < 0:
        raise SyscallError(call, ctypes.get_errno(), path)
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF  # f_type is the first field


def _fstatfs_type(fd: int, path: str) -> int:
    buf = ctypes.create_string_buffer(256)
    return _fs_type_of(_c.fstatfs(fd, buf), buf, "fstatfs", path)


def _statfs_type(path: str) -> int:
    buf = ctypes.create_string_buffer(256)
    return _fs_type_of(_c.statfs(os.fsencode(path), buf), buf, "statfs", path)


def _open_proc(rel: str, flags: int, stage: str, follow: bool = False) -> int:
    """Open /proc/<rel> making sure it really is a file of procfs: the /proc directory and the
    file are checked with fstatfs, and the path is resolved with openat2 beneath /proc without
    crossing a mount point (a bind mount over a procfs file cannot redirect the write) and,
    unless `follow`, without following any symlink (`follow` allows procfs's own plain
    symlinks such as self/thread-self, never magic links)."""
    path = "/proc/" + rel
    try:
        root = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise SyscallError("open", e.errno, "/proc", stage=stage) from None
    try:
        if _fstatfs_type(root, "/proc") != PROC_SUPER_MAGIC:
            raise StageError(stage, "/proc is not a procfs mount: refusing to write " + path)
        resolve = libc.RESOLVE_BENEATH | libc.RESOLVE_NO_XDEV | libc.RESOLVE_NO_MAGICLINKS
        if not follow:
            resolve |= libc.RESOLVE_NO_SYMLINKS
        try:
            fd = libc.openat2(root, rel, flags | os.O_NOFOLLOW, 0, resolve)
        except SyscallError as e:
            if e.errno != _errno.ENOSYS:
                detail = "path crosses a mount point inside /proc" if e.errno == _errno.EXDEV else None
                raise SyscallError("openat2", e.errno, path, stage=stage, detail=detail) from None
            try:  # kernel without openat2: the fstatfs check below still applies
                fd = os.open(rel, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root)
            except OSError as e2:
                raise SyscallError("open", e2.errno, path, stage=stage) from None
        if _fstatfs_type(fd, path) != PROC_SUPER_MAGIC:
            os.close(fd)
            raise StageError(stage, f"{path} is not on procfs: refusing to write it")
        return fd
    finally:
        os.close(root)


def _write_proc(rel: str, data: str, stage: str, follow: bool = False) -> None:
    fd = _open_proc(rel, os.O_WRONLY, stage, follow)
    try:
        os.write(fd, data.encode())
    except OSError as e:
        raise SyscallError("write", e.errno, "/proc/" + rel, stage=stage) from None
    finally:
        os.close(fd)


def _read_proc(rel: str, stage: str) -> str:
    fd = _open_proc(rel, os.O_RDONLY, stage, follow=True)
    try:
        return os.read(fd, 4096).decode(errors="replace")
    except OSError as e:
        raise SyscallError("read", e.errno, "/proc/" + rel, stage=stage) from None
    finally:
        os.close(fd)


class _SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32),
                ("sched_flags", ctypes.c_uint64), ("sched_nice", ctypes.c_int32),
                ("sched_priority", ctypes.c_uint32), ("sched_runtime", ctypes.c_uint64),
                ("sched_deadline", ctypes.c_uint64), ("sched_period", ctypes.c_uint64),
                ("sched_util_min", ctypes.c_uint32), ("sched_util_max", ctypes.c_uint32)]


def _sys(stage: str, name: str, *args, detail: str | None = None) -> int:
    try:
        return libc.syscall(name, *args)
    except SyscallError as e:
        raise SyscallError(name, e.errno, stage=stage, detail=detail) from None


def set_scheduler(s: Scheduler) -> None:
    attr = _SchedAttr(ctypes.sizeof(_SchedAttr), s.policy, s.flags, s.nice, s.priority, s.runtime,
                      s.deadline, s.period, 0, 1024)
    _sys("scheduler", "sched_setattr", ctypes.c_int(0), ctypes.byref(attr), ctypes.c_uint(0),
         detail=f"policy={s.policy} nice={s.nice} priority={s.priority} flags={s.flags:#x}")


def set_io_priority(io: IoPriority) -> None:
    _sys("ioPriority", "ioprio_set", ctypes.c_int(IOPRIO_WHO_PROCESS), ctypes.c_int(0),
         ctypes.c_int((io.ioclass << IOPRIO_CLASS_SHIFT) | io.priority),
         detail=f"class={io.ioclass} priority={io.priority}")


def set_memory_policy(mp: MemoryPolicy) -> None:
    if mp.nodes:
        words = max(mp.nodes) // 64 + 1
        mask = (ctypes.c_ulong * words)()
        for n in mp.nodes:
            mask[n // 64] |= 1 << (n % 64)
        ptr, maxnode = mask, words * 64 + 1  # the kernel reads maxnode - 1 bits
    else:
        ptr, maxnode = None, 0
    _sys("memoryPolicy", "set_mempolicy", ctypes.c_int(mp.mode | mp.flags), ptr, ctypes.c_ulong(maxnode),
         detail=f"mode={mp.mode} nodes={','.join(map(str, mp.nodes))} flags={mp.flags:#x}")


class _RLimit(ctypes.Structure):
    _fields_ = [("rlim_cur", ctypes.c_uint64), ("rlim_max", ctypes.c_uint64)]


def set_rlimit(r: Rlimit) -> None:
    """setrlimit(2) through libc (Python's resource module hides errno). Exactly the values of
    the plan: a hard limit is only raised when the config asks for it."""
    lim = _RLimit(r.soft, r.hard)
    if _c.setrlimit(r.resource, ctypes.byref(lim)) < 0:
        raise SyscallError("error setting rlimit", ctypes.get_errno(),
                           RLIMIT_NAMES.get(r.resource, str(r.resource)))


def _lsm_write(rel_candidates: tuple[str, ...], value: str, stage: str) -> None:
    last: SyscallError | None = None
    for rel in rel_candidates:
        try:
            _write_proc(rel, value, stage, follow=True)
            return
        except SyscallError as e:
            last = e
            if e.errno != _errno.ENOENT:
                break
    assert last is not None
    raise last


# ----------------------------------------------------------------------------------------------
# child side, step 1: process attributes
# ----------------------------------------------------------------------------------------------
def apply_sysctl(pp: ProcessPlan) -> None:
    """Child: write linux.sysctl under the container's /proc/sys. Must run before readonlyPaths
    bind /proc/sys read-only (as runc orders it): that bind is a mount point inside /proc, which
    the verified open refuses to cross."""
    for key, value in pp.sysctl:
        _write_proc("sys/" + sysctl_path(key), value, "sysctl")


def apply_attributes(pp: ProcessPlan, *, sysctl: bool = True) -> list[str]:
    """Child, after pivot_root. Applies sysctl (unless sysctl=False because apply_sysctl ran
    already: see there, it must precede the read-only /proc/sys), oom_score_adj, rlimits,
    personality, scheduler, ioprio, mempolicy, umask and the AppArmor/SELinux exec labels.
    Returns warnings; raises SyscallError/StageError."""
    warnings: list[str] = []
    if sysctl:
        apply_sysctl(pp)
    if pp.oom_score_adj is not None:
        _write_proc("self/oom_score_adj", str(pp.oom_score_adj), "oom_score_adj", follow=True)
    for r in pp.rlimits:
        set_rlimit(r)
    if pp.personality is not None:
        try:
            libc.personality(pp.personality.domain | pp.personality.flags)
        except SyscallError as e:
            raise e.with_stage("personality")
    if pp.scheduler is not None:
        set_scheduler(pp.scheduler)
    if pp.io_priority is not None:
        set_io_priority(pp.io_priority)
    if pp.memory_policy is not None:
        set_memory_policy(pp.memory_policy)
    if pp.umask is not None:
        os.umask(pp.umask)
    if pp.apparmor_profile:
        try:
            _lsm_write(("thread-self/attr/apparmor/exec", "thread-self/attr/exec"),
                       "exec " + pp.apparmor_profile, "apparmor")
        except SyscallError as e:
            if e.errno in (_errno.ENOENT, _errno.EINVAL, _errno.EOPNOTSUPP):
                raise StageError("apparmor", APPARMOR_DISABLED_MSG.format(pp.apparmor_profile)) from None
            raise
    if pp.selinux_label:
        try:
            _lsm_write(("thread-self/attr/exec",), pp.selinux_label, "selinux")
        except SyscallError as e:
            if e.errno in (_errno.ENOENT, _errno.EOPNOTSUPP) or (
                    e.errno == _errno.EINVAL and not _selinux_active()):
                raise StageError("selinux", SELINUX_DISABLED_MSG) from None
            raise
    return warnings


def _selinux_active() -> bool:
    try:
        cur = _read_proc("thread-self/attr/current", "selinux")
    except (SyscallError, StageError):
        return False
    return ":" in cur  # an SELinux context is user:role:type[:level]


# ----------------------------------------------------------------------------------------------
# child side, step 2: identity and privileges
# ----------------------------------------------------------------------------------------------
def _bounding_now() -> tuple[int, int]:
    """(last capability the kernel knows, current bounding set), probed with PR_CAPBSET_READ."""
    mask = 0
    n = 0
    while n < 64:
        try:
            if libc.prctl(libc.PR_CAPBSET_READ, n):
                mask |= 1 << n
        except SyscallError:
            break
        n += 1
    return n - 1, mask


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups", "rb") as f:
            return f.read().strip() != b"deny"
    except OSError:
        return True


def _chdir(cwd: str, final: bool) -> bool:
    """True when done; False when it failed for lack of permission and may work as the user.

    CVE-2024-21626 class: cwd is resolved inside the container's root (openat2 RESOLVE_IN_ROOT
    from "/", which refuses magic links such as /proc/self/fd/N: they could name a runtime
    fd that is still open here, e.g. a host directory), entered with fchdir, and the result is
    checked to be reachable from the root (getcwd fails for a directory outside it)."""
    def fail(err: int, detail: str = "") -> StageError:
        return StageError("cwd", f'chdir to cwd ("{cwd}") set in config.json failed: '
                                 f"{os.strerror(err).lower()}{detail}")
    try:
        root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = libc.openat2(root, cwd, os.O_PATH | os.O_DIRECTORY, resolve=libc.RESOLVE_IN_ROOT)
        finally:
            os.close(root)
    except SyscallError as e:
        if not final and e.errno in (_errno.EACCES, _errno.EPERM):
            return False
        if e.errno in (_errno.ELOOP, _errno.EXDEV):
            raise fail(e.errno, " (a magic link or a path that leads out of the container's "
                                "root)") from None
        raise fail(e.errno) from None
    try:
        os.fchdir(fd)
    except OSError as e:
        if not final and e.errno in (_errno.EACCES, _errno.EPERM):
            return False
        raise fail(e.errno) from None
    finally:
        os.close(fd)
    try:
        here = os.getcwd()
    except OSError:
        here = ""
    if not here.startswith("/"):
        raise StageError("cwd", f'cwd ("{cwd}") set in config.json is outside the container\'s root')
    return True


def switch_identity(pp: ProcessPlan) -> list[str]:
    """Child, after apply_attributes. Drops the bounding set (while still fully privileged),
    sets supplementary groups (skipped when setgroups is denied in a user namespace), gid and uid
    keeping capabilities, chdirs to cwd (before the switch, or after it if only the user may
    enter it, as runc does), sets effective/permitted/inheritable, the ambient set, and
    no_new_privs. Capabilities the runtime itself does not hold are dropped with a warning
    (spec#80). Returns warnings."""
    warnings: list[str] = []
    want = pp.capabilities
    last, bnd_now = _bounding_now()
    known = (1 << (last + 1)) - 1
    _eff_now, prm_now, inh_now = libc.capget()

    for n in range(last + 1):
        if (bnd_now >> n) & 1 and not (want.bounding >> n) & 1:
            try:
                libc.prctl(libc.PR_CAPBSET_DROP, n)
            except SyscallError as e:
                raise SyscallError("prctl(PR_CAPBSET_DROP)", e.errno, stage="capabilities",
                                   detail=_caps.cap_name(n)) from None
    bnd_new = bnd_now & want.bounding

    def grant(name: str, asked: int, avail: int) -> int:
        missing = asked & ~avail
        if missing:
            warnings.append(f"capabilities.{name}: {', '.join(_caps.mask_to_names(missing))} cannot be "
                            "granted (not held by the runtime or unknown to the kernel): ignored")
        return asked & avail

    prm = grant("permitted", want.permitted, prm_now & known)
    eff = want.effective & prm
    inh = grant("inheritable", want.inheritable, (bnd_new | inh_now) & known)
    amb = want.ambient & prm & inh

    cwd_done = _chdir(pp.cwd, final=False)
    try:
        libc.prctl(libc.PR_SET_KEEPCAPS, 1)
    except SyscallError as e:
        raise e.with_stage("user")
    if _setgroups_allowed():
        try:
            os.setgroups(list(pp.additional_gids))
        except OSError as e:
            raise SyscallError("setgroups", e.errno, stage="user",
                               detail=f"groups {list(pp.additional_gids)}") from None
    elif pp.additional_gids:
        warnings.append("additionalGids ignored: setgroups is denied in this user namespace")
    for call, fn, v in (("setresgid", os.setresgid, pp.gid), ("setresuid", os.setresuid, pp.uid)):
        try:
            fn(v, v, v)
        except OSError as e:
            raise SyscallError(call, e.errno, stage="user", detail=f"{call[-3:]} {v}") from None
    if not cwd_done:
        _chdir(pp.cwd, final=True)
    try:
        libc.prctl(libc.PR_SET_KEEPCAPS, 0)
        libc.capset(eff, prm, inh)
    except SyscallError as e:
        raise e.with_stage("capabilities")
    try:
        libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    except SyscallError as e:
        if amb:
            raise e.with_stage("capabilities")
    for n in _caps.mask_bits(amb):
        try:
            libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_RAISE, n, 0, 0)
        except SyscallError:
            warnings.append(f"capabilities.ambient: {_caps.cap_name(n)} cannot be raised: ignored")
    if pp.no_new_privileges:
        try:
            libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        except SyscallError as e:
            raise e.with_stage("noNewPrivileges")
    return warnings


# ----------------------------------------------------------------------------------------------
# child side, steps 4 and 5: find and execute the program
# ----------------------------------------------------------------------------------------------
def _quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _env_get(env, key: str) -> str | None:
    prefix = key + "="
    for e in env:
        if e.startswith(prefix):
            return e[len(prefix):]  # first occurrence wins, like getenv(3)
    return None


def _is_exec_file(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return not stat.S_ISDIR(st.st_mode) and bool(st.st_mode & 0o111)


def resolve_executable(pp: ProcessPlan, root: str | None = None) -> str:
    """Find args[0] like execvp (PATH from pp.env, else the default PATH) and return the path to
    execute. Errors are ExecError with runc's exact wording:
      exec: "x": executable file not found in $PATH
      exec: "/x": stat /x: no such file or directory
      exec: "/x": permission denied        (a directory, or no execute bit)
    `root` (tests) resolves everything beneath that directory instead of "/"; relative names
    containing a slash are taken relative to pp.cwd."""
    name = pp.args[0] if pp.args else ""

    def host(p: str) -> str:
        if root is None:
            return p
        if not p.startswith("/"):
            p = os.path.join(pp.cwd, p)
        return os.path.join(root, p.lstrip("/"))

    if "/" in name:
        try:
            st = os.stat(host(name))
        except OSError as e:
            raise ExecError(f"exec: {_quote(name)}: stat {name}: {os.strerror(e.errno).lower()}") from None
        if stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o111:
            raise ExecError(f"exec: {_quote(name)}: permission denied")
        return name
    if name:
        path = _env_get(pp.env, "PATH")
        if path is None:
            path = DEFAULT_EXEC_PATH
        for d in path.split(":") if path else ():
            cand = os.path.join(d or ".", name)
            if _is_exec_file(host(cand)):
                return cand
    raise ExecError(f"exec: {_quote(name)}: executable file not found in $PATH")


def set_initial_cpu_affinity(pp: ProcessPlan, pid: int = 0) -> None:
    """execCPUAffinity.initial (exec only): for the process before it joins the container's
    cgroup. No-op without one."""
    aff = pp.exec_cpu_affinity
    if aff is not None and aff.initial:
        try:
            os.sched_setaffinity(pid, aff.initial)
        except OSError as e:
            raise SyscallError("sched_setaffinity", e.errno, stage="execCPUAffinity",
                               detail=f"initial cpus {list(aff.initial)}") from None


def _cstr_array(items) -> ctypes.Array:
    arr = (ctypes.c_char_p * (len(items) + 1))()
    for i, s in enumerate(items):
        arr[i] = os.fsencode(s)
    arr[len(items)] = None
    return arr


def exec_process(pp: ProcessPlan, path: str) -> NoReturn:
    """Replace the child with the user program: ignored signals (Python ignores SIGPIPE and
    SIGXFSZ) and SIGINT go back to SIG_DFL, all signals are unblocked, the final CPU affinity (exec only) is applied, then execve(path,
    pp.args, pp.env) with exactly pp.env (never Python's own environment). Raises ExecError if
    execve fails."""
    # Python ignores SIGPIPE and SIGXFSZ and the runtime may ignore more; an ignored signal
    # stays ignored across execve, so every one goes back to SIG_DFL (handled ones reset anyway).
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if sig == signal.SIGINT or signal.getsignal(sig) is signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    aff = pp.exec_cpu_affinity
    if aff is not None and aff.final:
        try:
            os.sched_setaffinity(0, aff.final)
        except OSError as e:
            raise SyscallError("sched_setaffinity", e.errno, stage="execCPUAffinity",
                               detail=f"cpus {list(aff.final)}") from None
    argv = _cstr_array(pp.args)
    envp = _cstr_array(pp.env)
    _c.execve(os.fsencode(path), argv, envp)
    err = ctypes.get_errno()
    raise ExecError(f"exec {path}: {os.strerror(err).lower()}")
