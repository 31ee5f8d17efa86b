"""Root filesystem planning (parent side, pure): config → frozen RootfsPlan.

Everything the container init needs to build its root filesystem is decided here, before
any fork: option strings become mount(2) flags, propagation flags, mount_setattr(2)
attributes and a filesystem data string; bind sources become absolute paths; the default
devices are merged with `linux.devices`. rootfs.py (child side) only executes the plan.

Option semantics follow mount(8) and runc (spec#90, spec#91, spec#92):
  * flag options set or clear an MS_* flag, later options win (`ro,rw` is rw);
  * propagation options are applied one by one after the mount, in the order given;
  * the recursive `r*` options become one mount_setattr(AT_RECURSIVE) call;
  * `tmpcopyup`, `idmap` and `ridmap` are extensions handled by rootfs.py;
  * anything else is filesystem data, comma-joined in order (`mode=755,size=64k`).

A mount is a bind mount exactly when its options contain `bind` or `rbind` (spec#89).
"""
from __future__ import annotations

import os
import posixpath
import stat
from pyoci._record import dataclass, field

from pyoci.errors import ConfigError
from pyoci.linux.libc import (
    MOUNT_ATTR__ATIME, MOUNT_ATTR_IDMAP, MOUNT_ATTR_NOATIME, MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NODIRATIME, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NOSYMFOLLOW,
    MOUNT_ATTR_RDONLY, MOUNT_ATTR_RELATIME, MOUNT_ATTR_STRICTATIME, MS_BIND, MS_DIRSYNC,
    MS_LAZYTIME, MS_MANDLOCK, MS_NOATIME, MS_NODEV, MS_NODIRATIME, MS_NOEXEC, MS_NOSUID,
    MS_NOSYMFOLLOW, MS_PRIVATE, MS_RDONLY, MS_REC, MS_RELATIME, MS_REMOUNT, MS_SHARED,
    MS_SILENT, MS_SLAVE, MS_STRICTATIME, MS_SYNCHRONOUS, MS_UNBINDABLE,
)

MS_I_VERSION = 1 << 23

# option -> (clear?, MS_* flag)   (mount(8) semantics; "defaults" is a no-op)
FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "iversion": (False, MS_I_VERSION),
    "lazytime": (False, MS_LAZYTIME),
    "loud": (True, MS_SILENT),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "noiversion": (True, MS_I_VERSION),
    "nolazytime": (True, MS_LAZYTIME),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "nosymfollow": (False, MS_NOSYMFOLLOW),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "silent": (False, MS_SILENT),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "symfollow": (True, MS_NOSYMFOLLOW),
    "sync": (False, MS_SYNCHRONOUS),
}

PROPAGATION_OPTIONS: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}

# recursive options -> (clear?, MOUNT_ATTR_* flag), applied with mount_setattr(AT_RECURSIVE)
REC_ATTR_OPTIONS: dict[str, tuple[bool, int]] = {
    "rro": (False, MOUNT_ATTR_RDONLY),
    "rrw": (True, MOUNT_ATTR_RDONLY),
    "rnosuid": (False, MOUNT_ATTR_NOSUID),
    "rsuid": (True, MOUNT_ATTR_NOSUID),
    "rnodev": (False, MOUNT_ATTR_NODEV),
    "rdev": (True, MOUNT_ATTR_NODEV),
    "rnoexec": (False, MOUNT_ATTR_NOEXEC),
    "rexec": (True, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (False, MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, MOUNT_ATTR_NOSYMFOLLOW),
}
# The access-time setting is an enum in mount_setattr(2): choosing one means clearing the
# whole MOUNT_ATTR__ATIME field. The "clearing" forms fall back to the kernel default
# (relatime), except rnorelatime, which asks for "not relatime" and so gets strictatime.
REC_ATIME_OPTIONS: dict[str, int] = {
    "rnoatime": MOUNT_ATTR_NOATIME,
    "ratime": MOUNT_ATTR_RELATIME,
    "rrelatime": MOUNT_ATTR_RELATIME,
    "rnorelatime": MOUNT_ATTR_STRICTATIME,
    "rstrictatime": MOUNT_ATTR_STRICTATIME,
    "rnostrictatime": MOUNT_ATTR_RELATIME,
}
EXTENSION_OPTIONS = ("tmpcopyup", "idmap", "ridmap")

# every option name this module understands (for features.json `mountOptions`)
KNOWN_OPTIONS = tuple(sorted(set(FLAG_OPTIONS) | set(PROPAGATION_OPTIONS) | set(REC_ATTR_OPTIONS)
                             | set(REC_ATIME_OPTIONS) | set(EXTENSION_OPTIONS)))

_MS_NAMES = [  # for describe(): flag -> option name
    (MS_RDONLY, "ro"), (MS_NOSUID, "nosuid"), (MS_NODEV, "nodev"), (MS_NOEXEC, "noexec"),
    (MS_SYNCHRONOUS, "sync"), (MS_REMOUNT, "remount"), (MS_MANDLOCK, "mand"),
    (MS_DIRSYNC, "dirsync"), (MS_NOSYMFOLLOW, "nosymfollow"), (MS_NOATIME, "noatime"),
    (MS_NODIRATIME, "nodiratime"), (MS_BIND, "bind"), (MS_REC, "rec"), (MS_SILENT, "silent"),
    (MS_RELATIME, "relatime"), (MS_I_VERSION, "iversion"), (MS_STRICTATIME, "strictatime"),
    (MS_LAZYTIME, "lazytime"),
]
_ATTR_NAMES = [
    (MOUNT_ATTR_RDONLY, "rdonly"), (MOUNT_ATTR_NOSUID, "nosuid"), (MOUNT_ATTR_NODEV, "nodev"),
    (MOUNT_ATTR_NOEXEC, "noexec"), (MOUNT_ATTR_NODIRATIME, "nodiratime"),
    (MOUNT_ATTR_NOSYMFOLLOW, "nosymfollow"), (MOUNT_ATTR_IDMAP, "idmap"),
]
_ATIME_NAMES = {MOUNT_ATTR_RELATIME: "relatime", MOUNT_ATTR_NOATIME: "noatime",
                MOUNT_ATTR_STRICTATIME: "strictatime"}


def flag_names(flags: int) -> list[str]:
    """MS_* flags as option-like names (for logs)."""
    out = [name for bit, name in _MS_NAMES if flags & bit]
    rest = flags & ~sum(bit for bit, _ in _MS_NAMES)
    if rest:
        out.append(hex(rest))
    return out


def propagation_name(flag: int) -> str:
    for name, value in PROPAGATION_OPTIONS.items():
        if value == flag:
            return name
    return hex(flag)


def attr_names(attr_set: int, attr_clr: int) -> dict:
    """mount_setattr attributes as {"set": [...], "clear": [...]} (for logs)."""
    out = {"set": [n for b, n in _ATTR_NAMES if attr_set & b],
           "clear": [n for b, n in _ATTR_NAMES if attr_clr & b]}
    if attr_clr & MOUNT_ATTR__ATIME:
        out["atime"] = _ATIME_NAMES.get(attr_set & MOUNT_ATTR__ATIME, "?")
    return out


# --- parsed options --------------------------------------------------------------------------
@dataclass(frozen=True)
class ParsedOptions:
    flags: int = 0                        # MS_* flags after set/clear, in order
    cleared: int = 0                      # MS_* flags explicitly cleared by an option
    propagation: tuple[int, ...] = ()     # MS_{PRIVATE,SHARED,SLAVE,UNBINDABLE}[|MS_REC], in order
    data: str = ""                        # unknown options, comma-joined (fs-specific data)
    attr_set: int = 0                     # mount_setattr(AT_RECURSIVE) attr_set
    attr_clr: int = 0                     # mount_setattr(AT_RECURSIVE) attr_clr
    tmpcopyup: bool = False
    idmap: str = ""                       # "", "idmap" or "ridmap"

    @property
    def bind(self) -> bool:
        return bool(self.flags & MS_BIND)

    @property
    def recursive(self) -> bool:
        return bool(self.flags & MS_REC)

    @property
    def has_rec_attrs(self) -> bool:
        return bool(self.attr_set or self.attr_clr)


def parse_options(options) -> ParsedOptions:
    """Parse a mount's option list (spec#90-92). Never fails: unknown options are data."""
    flags = cleared = attr_set = attr_clr = 0
    atime = None
    prop: list[int] = []
    data: list[str] = []
    tmpcopyup = False
    idmap = ""
    for opt in options or ():
        if opt in FLAG_OPTIONS:
            clear, bit = FLAG_OPTIONS[opt]
            if clear:
                flags &= ~bit
                cleared |= bit
            else:
                flags |= bit
                cleared &= ~bit
        elif opt in PROPAGATION_OPTIONS:
            prop.append(PROPAGATION_OPTIONS[opt])
        elif opt in REC_ATTR_OPTIONS:
            clear, bit = REC_ATTR_OPTIONS[opt]
            if clear:
                attr_clr |= bit
                attr_set &= ~bit
            else:
                attr_set |= bit
                attr_clr &= ~bit
        elif opt in REC_ATIME_OPTIONS:
            atime = REC_ATIME_OPTIONS[opt]
        elif opt == "tmpcopyup":
            tmpcopyup = True
        elif opt in ("idmap", "ridmap"):
            idmap = opt
        else:
            data.append(opt)
    if atime is not None:
        attr_clr |= MOUNT_ATTR__ATIME
        attr_set = (attr_set & ~MOUNT_ATTR__ATIME) | atime
    return ParsedOptions(flags=flags, cleared=cleared, propagation=tuple(prop), data=",".join(data),
                         attr_set=attr_set, attr_clr=attr_clr, tmpcopyup=tmpcopyup, idmap=idmap)


# --- the plan -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class IdMapping:
    container_id: int
    host_id: int
    size: int


@dataclass(frozen=True)
class MountOp:
    """One entry of config `mounts`, ready to execute.

    Bind mounts: mount(source, dest, MS_BIND[|MS_REC]), then, when `remount_flags` is set,
    mount(dest, MS_REMOUNT|MS_BIND|flags) (read-only binds etc.). Other mounts:
    mount(source, dest, fstype, mount_flags, data). Then the propagation flags one by one,
    then mount_setattr(attr_set, attr_clr, AT_RECURSIVE) when either is set."""
    index: int                   # position in config `mounts`
    destination: str             # absolute and lexically clean, inside the container
    type: str                    # as written in the config ("" when absent)
    fstype: str                  # what is passed to mount(2) ("" for bind mounts)
    source: str                  # bind: absolute host path; else as given
    options: tuple[str, ...]
    flags: int                   # all MS_* flags from the options
    mount_flags: int             # flags of the first mount(2) call
    remount_flags: int           # 0, or flags of the MS_REMOUNT call that follows
    propagation: tuple[int, ...]
    data: str
    attr_set: int
    attr_clr: int
    bind: bool
    recursive: bool
    tmpcopyup: bool
    idmap: str = ""                               # "", "idmap" or "ridmap"
    uid_mappings: tuple[IdMapping, ...] = ()
    gid_mappings: tuple[IdMapping, ...] = ()
    fallback_bind: str = ""      # host path to bind instead when the kernel refuses (EPERM)

    @property
    def readonly(self) -> bool:
        return bool(self.flags & MS_RDONLY)

    def describe(self) -> dict:
        d = {"step": "mount", "index": self.index, "destination": self.destination,
             "type": self.type, "source": self.source, "options": list(self.options),
             "flags": flag_names(self.flags)}
        if self.fstype and self.fstype != self.type:
            d["fstype"] = self.fstype
        if self.remount_flags:
            d["remount"] = flag_names(self.remount_flags)
        if self.propagation:
            d["propagation"] = [propagation_name(p) for p in self.propagation]
        if self.data:
            d["data"] = self.data
        if self.attr_set or self.attr_clr:
            d["recursive_attrs"] = attr_names(self.attr_set, self.attr_clr)
        if self.tmpcopyup:
            d["tmpcopyup"] = True
        if self.idmap:
            d["idmap"] = self.idmap
            d["uidMappings"] = [[m.container_id, m.host_id, m.size] for m in self.uid_mappings]
            d["gidMappings"] = [[m.container_id, m.host_id, m.size] for m in self.gid_mappings]
        return d


@dataclass(frozen=True)
class DeviceOp:
    path: str                    # absolute, inside the container
    type: str                    # "c", "b", "u" or "p"
    major: int
    minor: int
    mode: int                    # permission bits
    uid: int
    gid: int
    default: bool = False        # one of the default devices (replaced when an unfit file exists)

    @property
    def file_type(self) -> int:
        return {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[self.type]

    def describe(self) -> dict:
        return {"step": "device", "path": self.path, "type": self.type, "major": self.major,
                "minor": self.minor, "fileMode": oct(self.mode), "uid": self.uid, "gid": self.gid}


DEFAULT_DEVICES = (
    DeviceOp("/dev/null", "c", 1, 3, 0o666, 0, 0, True),
    DeviceOp("/dev/zero", "c", 1, 5, 0o666, 0, 0, True),
    DeviceOp("/dev/full", "c", 1, 7, 0o666, 0, 0, True),
    DeviceOp("/dev/random", "c", 1, 8, 0o666, 0, 0, True),
    DeviceOp("/dev/urandom", "c", 1, 9, 0o666, 0, 0, True),
    DeviceOp("/dev/tty", "c", 5, 0, 0o666, 0, 0, True),
)

# /dev symlinks (spec#115); rootfs.py makes each only when its target exists on the host
DEV_SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
    ("/proc/kcore", "/dev/core"),
)


@dataclass(frozen=True)
class RootfsPlan:
    rootfs: str                          # absolute host path of the container's root
    readonly: bool = False               # root.readonly
    prepare_propagation: int = MS_SLAVE | MS_REC   # applied to "/" before anything else
    root_propagation: int = 0            # rootfsPropagation, re-applied to "/" after pivot (0: none)
    mounts: tuple[MountOp, ...] = ()
    devices: tuple[DeviceOp, ...] = DEFAULT_DEVICES
    setup_dev: bool = True               # False when /dev is a bind mount: use it as it is
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    no_pivot: bool = False
    console: bool = False                # make /dev/console a placeholder for bind_console()
    userns: bool = False                 # the container has a user namespace
    dev_symlinks: tuple[tuple[str, str], ...] = field(default=DEV_SYMLINKS)

    def describe(self) -> list[dict]:
        """Plain data (JSON-able), one dict per step, for --debug logs and `pyoci explain`."""
        out: list[dict] = [{
            "step": "root", "path": self.rootfs, "readonly": self.readonly,
            "propagation": propagation_name(self.prepare_propagation),
            "rootfsPropagation": propagation_name(self.root_propagation) if self.root_propagation else None,
        }]
        out.extend(m.describe() for m in self.mounts)
        if self.setup_dev:
            out.extend(d.describe() for d in self.devices)
            out.append({"step": "symlink", "path": "/dev/ptmx", "target": "pts/ptmx"})
            out.extend({"step": "symlink", "path": link, "target": target, "when": "target exists"}
                       for target, link in self.dev_symlinks)
        else:
            out.append({"step": "dev", "note": "/dev is a bind mount: used as it is"})
        if self.console:
            out.append({"step": "console", "path": "/dev/console"})
        out.append({"step": "chroot" if self.no_pivot else "pivot_root", "path": self.rootfs})
        out.extend({"step": "readonly_path", "path": p} for p in self.readonly_paths)
        out.extend({"step": "masked_path", "path": p} for p in self.masked_paths)
        if self.readonly:
            out.append({"step": "readonly_root", "path": "/"})
        return out


# Mounts inside /proc could hide what maskedPaths/readonlyPaths protect (or redirect the
# runtime's own /proc accesses): like runc, only a proc filesystem (or a bind of one) goes on
# /proc itself, and inside it only the files that lxcfs-style tools emulate.
PROC_MOUNT_ALLOWED = (
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/pressure/cpu", "/proc/pressure/io",
    "/proc/pressure/memory", "/proc/sys/kernel/ns_last_pid", "/proc/net/dev",
)


def proc_destination_problem(dest: str, bind: bool, fstype: str) -> str | None:
    """Why a mount at `dest` (a clean container path, resolved or not) is refused, or None."""
    if dest != "/proc" and not dest.startswith("/proc/"):
        return None
    if dest == "/proc":
        if bind or fstype == "proc":
            return None       # a bind's source must be a procfs: checked by rootfs.py
        return "/proc can only be a proc filesystem"
    if dest in PROC_MOUNT_ALLOWED:
        return None
    return f"{dest} is inside /proc, where only {', '.join(PROC_MOUNT_ALLOWED)} may be mounted"


# --- building the plan ----------------------------------------------------------------------
def clean_container_path(path: str) -> str:
    """Lexically clean a container path: absolute (a relative one is read from "/", spec#88),
    no "." or ".." left. Symlinks are resolved later, inside the rootfs."""
    return posixpath.normpath("/" + path).replace("//", "/")


def host_cgroup2(mountinfo: str = "/proc/self/mountinfo") -> bool:
    """True when /sys/fs/cgroup is a cgroup2 mount in the caller's mount namespace."""
    last = ""
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] == "/sys/fs/cgroup" and "-" in fields:
                    last = fields[fields.index("-") + 1]
    except OSError:
        return False
    return last == "cgroup2"  # the last mount on the path is the visible one


def _mappings(raw, where: str, problems: list[str]) -> tuple[IdMapping, ...]:
    out = []
    for i, m in enumerate(raw or ()):
        try:
            out.append(IdMapping(int(m["containerID"]), int(m["hostID"]), int(m["size"])))
        except (KeyError, TypeError, ValueError):
            problems.append(f"{where}[{i}]: needs integer containerID, hostID and size")
    return tuple(out)


def _device_ops(linux: dict, problems: list[str]) -> tuple[DeviceOp, ...]:
    devs: list[DeviceOp] = []
    for i, d in enumerate(linux.get("devices") or ()):
        where = f"linux.devices[{i}]"
        path = d.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            problems.append(f"{where}.path: must be an absolute path")
            continue
        typ = d.get("type")
        if typ not in ("c", "b", "u", "p"):
            problems.append(f"{where}.type: {typ!r} is not one of 'c', 'b', 'u', 'p'")
            continue
        if typ != "p" and ("major" not in d or "minor" not in d):
            problems.append(f"{where}: major and minor are required for type {typ!r}")
            continue
        mode = d.get("fileMode")
        devs.append(DeviceOp(clean_container_path(path), typ, int(d.get("major", 0)),
                             int(d.get("minor", 0)), 0o666 if mode is None else int(mode) & 0o7777,
                             int(d.get("uid", 0)), int(d.get("gid", 0))))
    given = {d.path for d in devs}
    return tuple(d for d in DEFAULT_DEVICES if d.path not in given) + tuple(devs)


def build_rootfs_plan(config: dict, bundle: str, no_pivot: bool = False, console: bool = False,
                      cgroup2: bool | None = None) -> RootfsPlan:
    """Build the root filesystem plan from a (validated) config. Pure but for reading
    /proc/self/mountinfo when `cgroup2` is None (is the host's /sys/fs/cgroup cgroup2?).
    Raises ConfigError with one `json.path: rule` line per problem."""
    problems: list[str] = []
    bundle = os.path.abspath(bundle)
    root = config.get("root") or {}
    root_path = root.get("path")
    if not isinstance(root_path, str) or not root_path:
        problems.append("root.path: is required")
        root_path = "rootfs"
    rootfs = os.path.normpath(os.path.join(bundle, root_path))
    linux = config.get("linux") or {}
    ns_types = {n.get("type") for n in linux.get("namespaces") or () if isinstance(n, dict)}
    userns = "user" in ns_types

    prop_name = linux.get("rootfsPropagation") or ""
    if prop_name and prop_name not in PROPAGATION_OPTIONS:
        problems.append(f"linux.rootfsPropagation: {prop_name!r} is not one of "
                        "'shared', 'slave', 'private', 'unbindable' (or their r* forms)")
        prop_name = ""
    root_prop = PROPAGATION_OPTIONS.get(prop_name, 0)

    if cgroup2 is None and any((m.get("type") == "cgroup") for m in config.get("mounts") or ()):
        cgroup2 = host_cgroup2()

    ops: list[MountOp] = []
    setup_dev = True
    for i, m in enumerate(config.get("mounts") or ()):
        where = f"mounts[{i}]"
        dest = m.get("destination")
        if not isinstance(dest, str) or not dest:
            problems.append(f"{where}.destination: is required")
            continue
        dest = clean_container_path(dest)
        options = tuple(m.get("options") or ())
        p = parse_options(options)
        typ = m.get("type") or ""
        source = m.get("source") or ""
        uidm = _mappings(m.get("uidMappings"), f"{where}.uidMappings", problems)
        gidm = _mappings(m.get("gidMappings"), f"{where}.gidMappings", problems)
        if bool(m.get("uidMappings") is not None) != bool(m.get("gidMappings") is not None):
            problems.append(f"{where}: uidMappings and gidMappings must be given together")
        if (uidm or gidm) and not p.idmap:
            problems.append(f"{where}: uidMappings/gidMappings need the 'idmap' or 'ridmap' option")
        if p.idmap and not (uidm or gidm) and not userns:
            problems.append(f"{where}.options: {p.idmap!r} needs uidMappings/gidMappings "
                            "or a user namespace")
        if p.idmap and not p.bind:
            problems.append(f"{where}.options: {p.idmap!r} is only supported on bind mounts")
        fallback = ""
        bind, recursive, attr_set = p.bind, p.recursive, p.attr_set
        v1_cgroup = typ == "cgroup" and not p.bind and not cgroup2
        if v1_cgroup:
            # cgroup v1 host: pyoci never mounts v1 hierarchies; bind the host's view instead,
            # read-only all the way down when "ro" is asked
            source, bind, recursive = "/sys/fs/cgroup", True, True
            if p.flags & MS_RDONLY:
                attr_set |= MOUNT_ATTR_RDONLY
        if bind:
            if not source:
                problems.append(f"{where}.source: is required for a bind mount")
                continue
            source = os.path.normpath(os.path.join(bundle, source))
            fstype = ""
            mount_flags = MS_BIND | (MS_REC if recursive else 0)
            extra = p.flags & ~(MS_REC | MS_REMOUNT | MS_BIND)
            remount_flags = (p.flags | MS_REMOUNT | MS_BIND) if extra else 0
            if dest == "/dev":
                setup_dev = False
        else:
            if not typ or typ == "none":
                problems.append(f"{where}.type: is required unless the options contain "
                                "'bind' or 'rbind'")
                continue
            fstype = "cgroup2" if typ == "cgroup" else typ
            # where the kernel may refuse (user namespace without its own net/ipc/cgroup ns),
            # rootfs.py binds the host's view instead, as runc does
            fallback = {"cgroup": "/sys/fs/cgroup", "cgroup2": "/sys/fs/cgroup", "sysfs": "/sys",
                        "mqueue": "/dev/mqueue"}.get(typ, "")
            mount_flags = p.flags & ~MS_REC
            remount_flags = 0
            if p.tmpcopyup and p.flags & MS_RDONLY:
                # copy into a writable tmpfs first, then make it read-only
                mount_flags &= ~MS_RDONLY
                remount_flags = p.flags | MS_REMOUNT
        problem = proc_destination_problem(dest, bind, fstype)
        if problem:
            problems.append(f"{where}.destination: {problem}")
            continue
        ops.append(MountOp(
            index=i, destination=dest, type=typ, fstype=fstype, source=source, options=options,
            flags=p.flags, mount_flags=mount_flags, remount_flags=remount_flags,
            propagation=p.propagation, data=p.data, attr_set=attr_set, attr_clr=p.attr_clr,
            bind=bind, recursive=recursive, tmpcopyup=p.tmpcopyup, idmap=p.idmap,
            uid_mappings=uidm, gid_mappings=gidm, fallback_bind=fallback))

    devices = _device_ops(linux, problems)
    masked, ro_paths = [], []
    for key, out in (("maskedPaths", masked), ("readonlyPaths", ro_paths)):
        for i, path in enumerate(linux.get(key) or ()):
            if not isinstance(path, str) or not path.startswith("/"):
                problems.append(f"linux.{key}[{i}]: {path!r} is not an absolute path")
                continue
            out.append(clean_container_path(path))
    if problems:
        raise ConfigError(problems)
    return RootfsPlan(
        rootfs=rootfs, readonly=bool(root.get("readonly", False)),
        prepare_propagation=root_prop or (MS_SLAVE | MS_REC), root_propagation=root_prop,
        mounts=tuple(ops), devices=devices, setup_dev=setup_dev, masked_paths=tuple(masked),
        readonly_paths=tuple(ro_paths), no_pivot=bool(no_pivot), console=bool(console),
        userns=userns)

