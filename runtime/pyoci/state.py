"""Container state: /run/pyoci/<id>/state.json, an exclusive lock per id, one transition table.

On disk (all in the container's state dir):
  state.json    the persisted record (written to a temp file, then renamed: never torn)
  cleanup.json  a second, small record of what exists (creator, cgroup, init pid + start
                time, network, image), rewritten only when one of those changes: when
                state.json is lost or damaged, `delete --force` still finds everything
  exec.fifo     the exec gate between `create` and `start` (present = not started yet)
  .lock         flock()ed by every operation on the id

A state dir disappears atomically: remove() first renames it to a hidden `.trash-*` name (so
a concurrent operation sees either the whole container or none), then deletes it.

The status a user sees is derived, the way runc does it: "creating" while create runs
(its creator process, pid + start time, is alive); a create that died half-way is "stopped"
(pid 0): it can never be started, only deleted, and deleting it removes whatever it made;
else, if the init process (pid + its start time, so a reused pid is never mistaken for
the container) is alive: "created" while exec.fifo exists, "paused" when its cgroup is
frozen, else "running"; otherwise "stopped".
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time

from pyoci import OCI_VERSION
from pyoci.errors import AlreadyExists, NotFound, StateError, SyscallError, UsageError

DEFAULT_ROOT = "/run/pyoci"
STATE_FILE = "state.json"
FIFO = "exec.fifo"
LOCK = ".lock"
CLEANUP_FILE = "cleanup.json"
TRASH_PREFIX = ".trash-"
# what a cleanup needs, kept twice (state.json and cleanup.json)
CLEANUP_KEYS = ("id", "bundle", "creator_pid", "creator_start", "cgroup_path", "cgroup_root",
                "cgroup_dir", "cgroup_created", "pid", "pid_start", "network", "image",
                "intermediate_pid", "intermediate_start")

_ID_RE = re.compile(r"^[\w+\-.]+$")
MAX_ID_LEN = 255   # NAME_MAX: the id names the state directory and the cgroup

# operation -> statuses it is allowed from (the one transition table)
TRANSITIONS = {
    "start": {"created"},
    "kill": {"created", "running", "paused"},
    "pause": {"running"},
    "resume": {"paused"},
    "delete": {"stopped"},
    "exec": {"created", "running"},
    "update": {"created", "running", "paused"},
}

_REFUSALS = {
    "start": "cannot start a container that has stopped",
    "kill": "container not running",
    "pause": "container not running",
    "resume": "container not paused",
    "exec": "cannot exec in a stopped container",
    "update": "container not running",
}


def check_transition(op: str, status: str, cid: str) -> None:
    if status in TRANSITIONS[op]:
        return
    if op == "start":
        if status == "running" or status == "paused":
            raise StateError("cannot start an already running container")
        if status == "creating":
            raise StateError("cannot start a container that is still being created")
        raise StateError("cannot start a container that has stopped")
    if op == "delete":
        raise StateError(f"cannot delete container {cid} that is not stopped: {status}")
    if op == "pause" and status == "paused":
        raise StateError("container already paused")
    if op == "exec" and status == "paused":
        raise StateError("cannot exec in a paused container")
    raise StateError(_REFUSALS.get(op, f"cannot {op} a container that is {status}"))


def validate_id(cid: str) -> None:
    if not cid:
        raise UsageError("container id cannot be empty")
    if len(cid) > MAX_ID_LEN:
        raise UsageError(f"invalid container id: {len(cid)} characters, longer than {MAX_ID_LEN} "
                         "(it names the state directory and the cgroup)")
    if cid in (".", "..") or not _ID_RE.match(cid):
        raise UsageError(f"invalid container id format: {cid}")
    if cid.startswith("."):
        # runc allows it, but pyoci keeps its own stores (.ipam, .images) beside the state dirs
        raise UsageError(f"invalid container id format: {cid} (ids may not start with '.')")


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


class Container:
    """A handle on one container's state dir. Use `with c.locked():` around operations."""

    def __init__(self, root: str, cid: str):
        validate_id(cid)
        self.root = root
        self.id = cid
        self.dir = os.path.join(root, cid)
        self.data: dict = {}
        self._lock_fd: int | None = None

    # --- locking ---------------------------------------------------------------
    def lock(self) -> None:
        path = os.path.join(self.dir, LOCK)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd
        # the container may have been deleted while we waited for the lock (its dir was
        # renamed away), and maybe created again: then the lock we hold is not its lock
        mine = os.fstat(fd)
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            self.unlock()
            raise NotFound(self.id)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc) -> None:
        self.unlock()

    # --- creation / loading --------------------------------------------------------
    @classmethod
    def new(cls, root: str, cid: str) -> "Container":
        """Make the state dir (exclusive: a second create of the same id fails) and lock it."""
        c = cls(root, cid)
        try:
            os.makedirs(root, mode=0o711, exist_ok=True)
        except OSError as e:
            raise SyscallError("mkdir", e.errno or 0, root, stage="state") from None
        try:
            os.mkdir(c.dir, 0o711)
        except FileExistsError:
            raise AlreadyExists(cid) from None
        except OSError as e:
            raise SyscallError("mkdir", e.errno or 0, c.dir, stage="state") from None
        c.lock()
        return c

    @classmethod
    def load(cls, root: str, cid: str, lock: bool = True) -> "Container":
        """Load the state. A state.json that is missing or does not parse is not an error
        here: `data` then holds what cleanup.json recorded, plus `_corrupt` (the reason), so
        `state` can explain and `delete --force` can still clean up."""
        c = cls(root, cid)
        if not os.path.isdir(c.dir):
            raise NotFound(cid)
        if lock:
            try:
                c.lock()
            except FileNotFoundError:
                raise NotFound(cid) from None
        path = os.path.join(c.dir, STATE_FILE)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            if not os.path.isdir(c.dir):       # removed while we looked
                c.unlock()
                raise NotFound(cid) from None
            if not lock and c.busy():
                # create has made the dir and holds the lock but has not saved yet
                c.data = {"id": cid, "status": "creating", "_busy": True}
                return c
            c._recover(f"{path} is missing")
            return c
        except OSError as e:
            c._recover(f"{path} cannot be read: {os.strerror(e.errno or 0)}")
            return c
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            what = "empty" if not raw.strip() else f"corrupt ({e})"
            c._recover(f"{path} is {what}")
            return c
        c.data = data
        return c

    def _recover(self, why: str) -> None:
        data = {}
        try:
            with open(os.path.join(self.dir, CLEANUP_FILE), "rb") as f:
                rec = json.loads(f.read())
            if isinstance(rec, dict):
                data = {k: rec[k] for k in CLEANUP_KEYS if k in rec}
        except (OSError, ValueError):
            why += f"; {CLEANUP_FILE} is unusable too"
        data["_corrupt"] = why
        self.data = data

    def busy(self) -> bool:
        """True when another process holds this container's lock right now."""
        try:
            fd = os.open(os.path.join(self.dir, LOCK), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def save(self) -> None:
        self._write(STATE_FILE, self.data)
        rec = {k: self.data[k] for k in CLEANUP_KEYS if k in self.data}
        if rec != getattr(self, "_cleanup_saved", None):
            self._write(CLEANUP_FILE, rec)
            self._cleanup_saved = rec

    def _write(self, name: str, data: dict) -> None:
        tmp = os.path.join(self.dir, f".{name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(data, indent=None, separators=(",", ":")).encode())
            # no fsync: rename is atomic against a crashed or killed pyoci, which is what
            # matters; after a power loss no container survives anyway (and fsync costs
            # 10-30 ms per write on a disk-backed /run)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self.dir, name))

    def remove(self) -> None:
        """Remove the state dir (the caller holds the lock). The dir is first renamed to a
        hidden trash name, so other processes see the container vanish at once (a waiter on
        the lock then finds it gone), and a new create of the same id can proceed."""
        trash = os.path.join(self.root, f"{TRASH_PREFIX}{os.getpid()}.{time.monotonic_ns()}")
        try:
            os.rename(self.dir, trash)
        except FileNotFoundError:
            return
        _rmtree(trash)
        sweep_trash(self.root)

    # --- derived status -----------------------------------------------------------
    @property
    def pid(self) -> int:
        return int(self.data.get("pid") or 0)

    def init_alive(self) -> bool:
        pid = self.pid
        if pid <= 0:
            return False
        st = proc_start_time(pid)
        return st is not None and st == self.data.get("pid_start")

    @property
    def fifo_path(self) -> str:
        return os.path.join(self.dir, FIFO)

    def creator_alive(self) -> bool:
        """The process running `create` for this container (never this process) is alive."""
        pid = self.data.get("creator_pid")
        if not pid or pid == os.getpid():
            return pid == os.getpid()
        return proc_start_time(pid) == self.data.get("creator_start")

    def status(self) -> str:
        if self.data.get("_corrupt"):
            return "unknown"
        persisted = self.data.get("status", "creating")
        if persisted == "creating":
            # a create killed half-way never finishes: nothing of it may run any more
            return "creating" if self.data.get("_busy") or self.creator_alive() else "stopped"
        if not self.init_alive():
            return "stopped"
        if os.path.exists(self.fifo_path):
            return "created"
        if self._frozen():
            return "paused"
        return "running"

    def _frozen(self) -> bool:
        cg = self.data.get("cgroup_dir")
        if not cg:
            return False
        try:
            with open(os.path.join(cg, "cgroup.events")) as f:
                for line in f:
                    if line.startswith("frozen "):
                        return line.split()[1] == "1"
        except OSError:
            pass
        return False

    def oci_state(self) -> dict:
        """The runtime-spec state object, shaped like runc's `state` output."""
        status = self.status()
        d = self.data
        out = {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "pid": self.pid if status not in ("stopped",) else 0,
            "status": status,
            "bundle": d.get("bundle", ""),
            "rootfs": d.get("rootfs", ""),
            "created": d.get("created", ""),
            "owner": d.get("owner", ""),
        }
        if d.get("annotations"):
            out["annotations"] = d["annotations"]
        return out


def _rmtree(path: str) -> None:
    """Remove a state dir (files only, in practice) without shutil: its import pulls
    bz2, lzma, zlib and fnmatch (~2.4 ms on every delete)."""
    try:
        with os.scandir(path) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    _rmtree(e.path)
                else:
                    try:
                        os.unlink(e.path)
                    except OSError:
                        pass
        os.rmdir(path)
    except OSError:
        pass


def sweep_trash(root: str) -> None:
    """Remove trash dirs that a delete killed half-way left behind."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for n in names:
        if n.startswith(TRASH_PREFIX):
            _rmtree(os.path.join(root, n))


def list_ids(root: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(root)
                      if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))
    except FileNotFoundError:
        return []
