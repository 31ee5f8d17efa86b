"""Container state: /run/pyoci/<id>/state.json, an exclusive lock per id, one transition table.

On disk (all in the container's state dir):
  state.json  the persisted record (written to a temp file, fsync'd, renamed: never torn)
  exec.fifo   the exec gate between `create` and `start` (present = not started yet)
  .lock       flock()ed by every operation on the id

The status a user sees is derived, the way runc does it: "creating" while create runs;
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
from pyoci.errors import AlreadyExists, NotFound, StateError, UsageError

DEFAULT_ROOT = "/run/pyoci"
STATE_FILE = "state.json"
FIFO = "exec.fifo"
LOCK = ".lock"

_ID_RE = re.compile(r"^[\w+\-.]+$")
MAX_ID_LEN = 1024

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
        raise UsageError(f"invalid container id: longer than {MAX_ID_LEN} characters")
    if cid in (".", "..") or not _ID_RE.match(cid):
        raise UsageError(f"invalid container id format: {cid}")


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
        fd = os.open(os.path.join(self.dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd
        # the container may have been deleted while we waited for the lock
        if not os.path.exists(os.path.join(self.dir, LOCK)):
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
        os.makedirs(root, mode=0o711, exist_ok=True)
        try:
            os.mkdir(c.dir, 0o711)
        except FileExistsError:
            raise AlreadyExists(cid) from None
        c.lock()
        return c

    @classmethod
    def load(cls, root: str, cid: str, lock: bool = True) -> "Container":
        c = cls(root, cid)
        if not os.path.isdir(c.dir):
            raise NotFound(cid)
        if lock:
            try:
                c.lock()
            except FileNotFoundError:
                raise NotFound(cid) from None
        try:
            with open(os.path.join(c.dir, STATE_FILE), "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            c.data = {}
            return c
        try:
            c.data = json.loads(raw)
            if not isinstance(c.data, dict):
                raise ValueError("not an object")
        except ValueError as e:
            c.data = {"_corrupt": f"state.json is corrupt: {e}"}
        return c

    def save(self) -> None:
        tmp = os.path.join(self.dir, f".{STATE_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(self.data, indent=None, separators=(",", ":")).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(self.dir, STATE_FILE))

    def remove(self) -> None:
        """Remove the state dir (the caller holds the lock; the lock file goes last)."""
        for name in os.listdir(self.dir):
            if name == LOCK:
                continue
            p = os.path.join(self.dir, name)
            try:
                if os.path.isdir(p) and not os.path.islink(p):
                    import shutil
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    os.unlink(p)
            except FileNotFoundError:
                pass
        try:
            os.unlink(os.path.join(self.dir, LOCK))
        except FileNotFoundError:
            pass
        try:
            os.rmdir(self.dir)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise

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

    def status(self) -> str:
        if self.data.get("_corrupt"):
            return "unknown"
        persisted = self.data.get("status", "creating")
        if persisted == "creating":
            return "creating"
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


def list_ids(root: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(root)
                      if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))
    except FileNotFoundError:
        return []
