"""The cgroup v2 manager: one Cgroup object per container cgroup directory.

The mount point (`root`) is injectable so the whole class runs against a temporary directory
tree in unit tests. Interface files are opened without O_CREAT, as on the real cgroupfs, so a
missing controller file shows up as ENOENT and is reported by controller name.
"""
from __future__ import annotations

import errno
import os
import time

from pyoci.errors import ConfigError, StageError, SyscallError

from .resources import controller_of, convert_resources, required_controllers

STAGE = "cgroup"
SIGKILL = 9          # (the signal module is not imported: it pulls in enum)
U64_MAX = (1 << 64) - 1


def _sleep_steps(deadline: float):
    """Yield until the deadline, sleeping 1 ms, 2 ms, ... up to 20 ms between polls."""
    delay = 0.001
    while True:
        yield
        now = time.monotonic()
        if now >= deadline:
            return
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, 0.02)


class Cgroup:
    """A cgroup v2 directory at `root` + `path` (path relative to the mount, leading "/")."""

    def __init__(self, path: str, root: str | None = None,
                 created_dirs: list[str] | None = None):
        if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
            raise ConfigError(f"cgroup path {path!r} must be absolute (relative to the cgroup2 "
                              "mount) without '..'")
        parts = [p for p in path.split("/") if p and p != "."]
        if not parts:
            raise ConfigError("the root cgroup cannot be used for a container")
        if root is None:
            from . import cgroup_root
            root = cgroup_root()
        self.root = root.rstrip("/") or "/"
        self.path = "/" + "/".join(parts)
        self.dir = os.path.join(self.root, *parts)
        # cgroup paths (relative to the mount) that create() made, top first; a caller that
        # must survive a crash records them and passes them back to a later Cgroup(...)
        self.created_dirs: list[str] = list(created_dirs or [])

    def __repr__(self) -> str:
        return f"Cgroup({self.path!r}, root={self.root!r})"

    # --- file helpers ------------------------------------------------------------------
    def _abs(self, cgpath: str) -> str:
        return os.path.join(self.root, cgpath.lstrip("/")) if cgpath != "/" else self.root

    def _file(self, name: str, d: str | None = None) -> str:
        return os.path.join(d or self.dir, name)

    def _write(self, name: str, value: str, d: str | None = None) -> None:
        """Write each line of value with its own write(2) (newline-terminated, as echo does),
        like runc's WriteFileByLine. Never creates the file."""
        path = self._file(name, d)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        except OSError as e:
            raise SyscallError("open", e.errno, path, stage=STAGE) from None
        try:
            for line in value.split("\n") if value else [value]:
                try:
                    os.write(fd, line.encode() + b"\n")
                except OSError as e:
                    raise SyscallError("write", e.errno, path, stage=STAGE,
                                       detail=f"value {line!r}") from None
        finally:
            os.close(fd)

    def _read(self, name: str, d: str | None = None) -> str:
        with open(self._file(name, d)) as f:
            return f.read()

    def _keyed(self, name: str, d: str | None = None) -> dict[str, int]:
        """A flat-keyed file ("key value" lines) → {key: int}; missing file → {}."""
        out = {}
        try:
            text = self._read(name, d)
        except OSError:
            return out
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2:
                try:
                    out[parts[0]] = int(parts[1])
                except ValueError:
                    pass
        return out

    def _int(self, name: str, default: int = 0) -> int:
        try:
            v = self._read(name).strip()
        except OSError:
            return default
        if v == "max":
            return U64_MAX
        try:
            return int(v)
        except ValueError:
            return default

    def _has(self, name: str) -> bool:
        return os.path.exists(self._file(name))

    def _controllers(self, d: str) -> list[str]:
        try:
            return self._read("cgroup.controllers", d).split()
        except OSError:
            return []

    def controllers(self) -> list[str]:
        """Controllers available in this cgroup (its cgroup.controllers)."""
        return self._controllers(self.dir)

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    # --- create / update ---------------------------------------------------------------------
    def _ancestors(self) -> list[str]:
        """Cgroup paths from the first component down to the leaf, e.g. /a, /a/b, /a/b/c."""
        parts = self.path.strip("/").split("/")
        return ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]

    def _missing(self, controller: str, where: str, why: str) -> StageError:
        avail = self._controllers(where) if os.path.isdir(where) else []
        return StageError(STAGE, f"controller {controller!r} is not available in {where} "
                          f"(available: {' '.join(avail) or 'none'}); it is needed for {why}")

    def _enable(self, needed: list[str]) -> None:
        """Enable the needed controllers (mandatory) and all other available ones (best effort,
        like runc, so stats and later updates work) in every ancestor's subtree_control."""
        chain = [self.root] + [self._abs(p) for p in self._ancestors()[:-1]]
        for d in chain:
            avail = self._controllers(d)
            try:
                enabled = set(self._read("cgroup.subtree_control", d).split())
            except OSError as e:
                if needed:
                    raise SyscallError("open", e.errno, self._file("cgroup.subtree_control", d),
                                       stage=STAGE) from None
                continue
            for c in needed:
                if c not in avail:
                    raise self._missing(c, d, "the requested resources")
            todo = [c for c in needed if c not in enabled]
            if todo:
                try:
                    self._write("cgroup.subtree_control", " ".join("+" + c for c in todo), d)
                except SyscallError as e:
                    raise StageError(STAGE, f"cannot enable controller(s) {', '.join(todo)} in "
                                     f"{d}/cgroup.subtree_control: {os.strerror(e.errno)}"
                                     ) from None
            for c in avail:
                if c not in enabled and c not in needed:
                    try:
                        self._write("cgroup.subtree_control", f"+{c}", d)
                    except SyscallError:
                        pass

    def _check_available(self, needed: list[str]) -> None:
        """Fail before creating anything when the hierarchy does not offer a controller."""
        avail = self._controllers(self.root)
        for c in needed:
            if c not in avail:
                raise self._missing(c, self.root, f"the requested resources ({c}.* files)")

    def _write_files(self, files: dict[str, str]) -> None:
        avail = None
        for name, value in files.items():
            try:
                self._write(name, value)
            except SyscallError as e:
                if e.errno in (errno.ENOENT, errno.EACCES, errno.EPERM):
                    c = controller_of(name)
                    if avail is None:
                        avail = self.controllers()
                    if c and c not in avail:
                        raise self._missing(c, self.dir, name) from None
                raise

    def _convert(self, resources: dict | None):
        resources = resources or {}
        files = convert_resources(resources)           # validates; no file system access
        rules = None
        if resources.get("devices"):
            from .devices import normalize_rules
            rules = normalize_rules(resources["devices"])
        return files, rules

    def create(self, resources: dict | None = None) -> None:
        """Create the cgroup (and missing ancestors), enable the controllers it needs, write
        every resource file and attach the device program. On any error, the directories made
        here are removed again and the error is raised."""
        files, rules = self._convert(resources)
        needed = required_controllers(files)
        self._check_available(needed)
        made: list[str] = []
        try:
            for p in self._ancestors():
                d = self._abs(p)
                for attempt in range(3):
                    try:
                        os.mkdir(d, 0o755)
                        made.append(p)
                        break
                    except FileExistsError:
                        break
                    except FileNotFoundError:
                        # a parent vanished under us (another container's destroy): redo it
                        if attempt == 2:
                            raise SyscallError("mkdir", errno.ENOENT, d, stage=STAGE) from None
                        for q in self._ancestors():
                            if q == p:
                                break
                            try:
                                os.mkdir(self._abs(q), 0o755)
                                made.append(q)
                            except FileExistsError:
                                pass
                    except OSError as e:
                        raise SyscallError("mkdir", e.errno, d, stage=STAGE) from None
            self._enable(needed)
            self._apply(resources or {}, rules)
        except BaseException:
            self._rmdirs(reversed(made))
            raise
        self.created_dirs.extend(p for p in made if p not in self.created_dirs)

    def _apply(self, resources: dict, rules) -> None:
        files = convert_resources(resources, has_file=self._has)
        self._write_files(files)
        if rules:
            from .bpf import replace_device_program
            from .devices import build_program
            replace_device_program(self.dir, build_program(rules))

    def update(self, resources: dict) -> None:
        """Apply new limits to an existing (possibly running) cgroup. Device rules, when given,
        replace the attached program. memory.checkBeforeUpdate rejects a limit at or below the
        current usage (spec#125)."""
        if not self.exists():
            raise StageError(STAGE, f"cgroup {self.dir} does not exist")
        files, rules = self._convert(resources)
        self._enable(required_controllers(files))
        mem = (resources or {}).get("memory") or {}
        if mem.get("checkBeforeUpdate"):
            usage = self._int("memory.current", -1)
            if usage >= 0:
                for key, what in (("swap", "memory+swap limit"), ("limit", "memory limit")):
                    v = mem.get(key) or 0
                    if v > 0 and v <= usage:
                        raise StageError(STAGE, f"rejecting {what} {v} <= usage {usage} "
                                         "(linux.resources.memory.checkBeforeUpdate)")
        self._apply(resources or {}, rules)

    def add_pid(self, pid: int) -> None:
        """Move a process (all its threads) into the cgroup."""
        for attempt in range(5):
            try:
                self._write("cgroup.procs", str(pid))
                return
            except SyscallError as e:
                # EINVAL: the task may still be in TASK_NEW right after fork; retry briefly
                if e.errno != errno.EINVAL or attempt == 4:
                    raise
                time.sleep(0.03)

    # --- freezer ------------------------------------------------------------------------
    def _wait_frozen(self, want: bool, timeout: float) -> bool:
        key = "1" if want else "0"
        for _ in _sleep_steps(time.monotonic() + timeout):
            try:
                text = self._read("cgroup.events")
            except OSError:
                return False
            for line in text.splitlines():
                k, _, v = line.partition(" ")
                if k == "frozen" and v.strip() == key:
                    return True
        return False

    def freeze(self, timeout: float = 10.0) -> None:
        """cgroup.freeze = 1, then wait for cgroup.events to say "frozen 1". On timeout the
        cgroup is thawed again and StageError is raised."""
        self._write("cgroup.freeze", "1")
        if not self._wait_frozen(True, timeout):
            try:
                self._write("cgroup.freeze", "0")
            except SyscallError:
                pass
            raise StageError(STAGE, f"{self.dir} did not freeze within {timeout:g}s")

    def thaw(self, timeout: float = 10.0) -> None:
        self._write("cgroup.freeze", "0")
        if not self._wait_frozen(False, timeout):
            raise StageError(STAGE, f"{self.dir} did not thaw within {timeout:g}s")

    def is_frozen(self) -> bool:
        return self._keyed("cgroup.events").get("frozen") == 1

    # --- processes ------------------------------------------------------------------------
    def pids(self) -> list[int]:
        """Every process in the cgroup and its descendants."""
        out: list[int] = []
        for dirpath, _dirs, _files in os.walk(self.dir):
            try:
                text = self._read("cgroup.procs", dirpath)
            except OSError:
                continue
            out.extend(int(x) for x in text.split())
        return out

    def kill(self, sig: int = SIGKILL) -> None:
        """SIGKILL everything in the cgroup (cgroup.kill; on kernels without it, SIGKILL every
        pid in cgroup.procs until none is left). Other signals are sent pid by pid."""
        if not self.exists():
            return
        if sig == SIGKILL:
            try:
                self._write("cgroup.kill", "1")
                return
            except SyscallError as e:
                if e.errno == errno.ENOENT and not self.exists():
                    return
                if e.errno not in (errno.ENOENT, errno.EINVAL):
                    raise
        for _ in range(10 if sig == SIGKILL else 1):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if sig != SIGKILL:
                return
            time.sleep(0.01)

    # --- stats ------------------------------------------------------------------------------
    def oom_kill_count(self) -> int:
        return self._keyed("memory.events").get("oom_kill", 0)

    def stats(self) -> dict:
        """The `data` of runc's `events --stats` (types.Stats), from the v2 files."""
        cpu = self._keyed("cpu.stat")
        mem = self._keyed("memory.stat")
        mev = self._keyed("memory.events")
        usage = self._int("memory.current")
        limit = self._int("memory.max", U64_MAX)
        swap_usage = self._int("memory.swap.current")
        swap_limit = self._int("memory.swap.max", U64_MAX)
        swap_entry = {"limit": swap_limit if swap_limit == U64_MAX else
                      min(U64_MAX, swap_limit + limit),
                      "usage": swap_usage + usage, "failcnt": 0}
        pids_max = self._int("pids.max", 0)
        stats = {
            "cpu": {
                "usage": {"total": cpu.get("usage_usec", 0) * 1000,
                          "kernel": cpu.get("system_usec", 0) * 1000,
                          "user": cpu.get("user_usec", 0) * 1000},
                "throttling": {"periods": cpu.get("nr_periods", 0),
                               "throttledPeriods": cpu.get("nr_throttled", 0),
                               "throttledTime": cpu.get("throttled_usec", 0) * 1000},
            },
            "memory": {
                "cache": mem.get("file", 0),
                "usage": {"limit": limit, "usage": usage, "max": self._int("memory.peak"),
                          "failcnt": mev.get("max", 0)},
                "swap": swap_entry,
                "kernel": {"limit": 0, "failcnt": 0},
                "kernelTCP": {"limit": 0, "failcnt": 0},
                "raw": mem,
            },
            "pids": {"current": self._int("pids.current"),
                     "limit": 0 if pids_max == U64_MAX else pids_max},
            "blkio": self._io_stats(),
            "hugetlb": self._hugetlb_stats(),
        }
        if self._has("cpuset.cpus.effective"):
            stats["cpuset"] = {"cpus": _parse_list(self._read_or("cpuset.cpus.effective")),
                               "mems": _parse_list(self._read_or("cpuset.mems.effective"))}
        return stats

    def _read_or(self, name: str, default: str = "") -> str:
        try:
            return self._read(name)
        except OSError:
            return default

    def _io_stats(self) -> dict:
        service_bytes, serviced = [], []
        for line in self._read_or("io.stat").splitlines():
            dev, *kvs = line.split()
            try:
                major, minor = (int(x) for x in dev.split(":"))
            except ValueError:
                continue
            kv = dict(x.split("=", 1) for x in kvs if "=" in x)
            for key, op, lst in (("rbytes", "Read", service_bytes), ("wbytes", "Write", service_bytes),
                                 ("rios", "Read", serviced), ("wios", "Write", serviced)):
                if key in kv:
                    lst.append({"major": major, "minor": minor, "op": op, "value": int(kv[key])})
        return {"ioServiceBytesRecursive": service_bytes, "ioServicedRecursive": serviced}

    def _hugetlb_stats(self) -> dict:
        out = {}
        try:
            names = os.listdir(self.dir)
        except OSError:
            return out
        for n in sorted(names):
            parts = n.split(".")
            if len(parts) == 3 and parts[0] == "hugetlb" and parts[2] == "current":
                size = parts[1]
                out[size] = {"usage": self._int(n),
                             "failcnt": self._keyed(f"hugetlb.{size}.events").get("max", 0)}
        return out

    # --- removal ----------------------------------------------------------------------------
    def _rmdirs(self, cgpaths) -> None:
        for p in cgpaths:
            try:
                os.rmdir(self._abs(p))
            except OSError:
                pass

    def destroy(self, timeout: float = 5.0) -> None:
        """Kill whatever is left, wait (bounded) until it is gone, remove the cgroup with any
        sub-cgroups, then the ancestors create() made if they are empty now. Idempotent."""
        from . import DEFAULT_PARENT
        deadline = time.monotonic() + timeout
        if self.exists():
            self.kill()
            for _ in _sleep_steps(deadline):
                if not self.pids():
                    break
            last_err = None
            for _ in _sleep_steps(deadline):
                last_err = None
                for dirpath, _dirs, _files in os.walk(self.dir, topdown=False):
                    try:
                        os.rmdir(dirpath)
                    except FileNotFoundError:
                        pass
                    except OSError as e:
                        last_err = SyscallError("rmdir", e.errno, dirpath, stage=STAGE)
                if last_err is None or not self.exists():
                    break
                self.kill()
            if self.exists() and last_err is not None:
                raise last_err
        extra = []
        if self.path.startswith(DEFAULT_PARENT + "/"):
            extra = [DEFAULT_PARENT]
        others = [p for p in reversed(self.created_dirs) if p != self.path]
        self._rmdirs(others + [p for p in extra if p not in others])


def _parse_list(text: str) -> list[int]:
    out: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out
