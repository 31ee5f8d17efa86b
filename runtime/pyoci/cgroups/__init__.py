"""cgroup v2 (unified hierarchy only; v1 hierarchies are never touched).

    root = cgroup_root()                       # /sys/fs/cgroup or /sys/fs/cgroup/unified
    cg = Cgroup(resolve_path(cfg_path, cid))   # path relative to the mount, e.g. /pyoci/<id>
    cg.create(linux_resources)                 # mkdir, enable controllers, write limits, devices
    cg.add_pid(pid); cg.freeze(); cg.thaw(); cg.update(res); cg.stats(); cg.kill(); cg.destroy()

Import is cheap: ctypes/bpf code loads only when device rules are applied.
"""
from __future__ import annotations

import os

from pyoci.errors import ConfigError, StageError

from .devices import DEFAULT_ALLOWED_DEVICES
from .resources import convert_resources, resources_from_update_flags
from .v2 import Cgroup

__all__ = ["cgroup_root", "resolve_path", "Cgroup", "DEFAULT_ALLOWED_DEVICES",
           "convert_resources", "resources_from_update_flags", "CGROUP2_SUPER_MAGIC",
           "DEFAULT_PARENT"]

CGROUP2_SUPER_MAGIC = 0x63677270
DEFAULT_PARENT = "/pyoci"


def _fs_magic(path: str) -> int | None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(256)    # struct statfs; f_type is the first word
    if libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def is_cgroup2(path: str) -> bool:
    return _fs_magic(path) == CGROUP2_SUPER_MAGIC


def cgroup_root() -> str:
    """The cgroup2 mount point: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a
    hybrid one. Raises StageError when neither is cgroup2."""
    for path in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if is_cgroup2(path):
            return path
    raise StageError("cgroup", "no cgroup2 (unified) hierarchy is mounted at /sys/fs/cgroup or "
                     "/sys/fs/cgroup/unified; pyoci supports cgroup v2 only")


def resolve_path(cgroups_path: str | None, container_id: str) -> str:
    """linux.cgroupsPath → a path relative to the cgroup2 mount, starting with "/".
    Absolute: taken as is (relative to the mount, spec#118); relative: under /pyoci/;
    unset or empty: /pyoci/<id>. The same input always gives the same result (spec#119)."""
    if not cgroups_path:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise ConfigError(f"container id {container_id!r} cannot name a cgroup")
        return f"{DEFAULT_PARENT}/{container_id}"
    if not isinstance(cgroups_path, str):
        raise ConfigError("linux.cgroupsPath: must be a string")
    if "/" not in cgroups_path and cgroups_path.count(":") == 2:
        raise ConfigError(f"linux.cgroupsPath: {cgroups_path!r} is in systemd form "
                          "(slice:prefix:name); the systemd cgroup manager is not supported, "
                          "use a cgroupfs path such as /machine/<name>")
    parts = [p for p in cgroups_path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ConfigError(f"linux.cgroupsPath: {cgroups_path!r} must not contain '..'")
    if "\0" in cgroups_path:
        raise ConfigError("linux.cgroupsPath: must not contain NUL")
    if not parts:
        raise ConfigError(f"linux.cgroupsPath: {cgroups_path!r} names the root cgroup, which a "
                          "container cannot use")
    if cgroups_path.startswith("/"):
        return "/" + "/".join(parts)
    return DEFAULT_PARENT + "/" + "/".join(parts)
