"""Real-client lanes: podman 4.3 and containerd 1.6 driving a runc-compatible runtime.

The runtime under test is $PYOCI_CLIENT_RUNTIME (default: <repo>/.venv/bin/pyoci, else `pyoci`
on $PATH); `PYOCI_CLIENT_RUNTIME=/usr/sbin/runc` runs the same lanes against runc, the reference.

Everything runs in pytest's private mount namespace (cgroup2 at /sys/fs/cgroup, see
tests/conftest.py) and inside a network namespace the lane makes (a bind mount under the lane's
temp dir), so netavark's bridge and firewall rules never touch the host. All client state
(podman storage/config, containerd root/state/sockets, the runtime's root for containerd) lives in
one temp dir that is unmounted and removed at the end. Every command is bounded by a timeout.

A failing check raises AssertionError with the client's command, exit code, stdout, stderr AND
the runtime's log files (oci-log / log.json): a background thread hard-links every runtime log
file the clients create, so the log survives `--rm` and `task delete`.
"""
from __future__ import annotations

import fcntl
import os
import resource
import select
import shlex
import shutil
import signal
import string
import struct
import subprocess
import tempfile
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TEMPLATES = HERE / "templates"
# podman enables --log-format=json only for runtimes whose basename is in this list (CONTRACT §3.6)
JSON_RUNTIMES = ("crun", "runc", "kata", "runsc", "krun", "pyoci")
IMAGE = "localhost/busybox:latest"
CGROUP_ROOT = "/sys/fs/cgroup"          # the private cgroup2 mount of tests/conftest.py
LOG_TAIL = 6000
# bounds: one client command, and a whole lane (scenarios after the budget is spent fail fast)
CMD_TIMEOUT = float(os.environ.get("PYOCI_CLIENT_TIMEOUT", "30"))
LANE_BUDGET = float(os.environ.get("PYOCI_CLIENT_LANE_BUDGET", "240"))


class LaneError(AssertionError):
    """A lane step failed; the message carries the client's output and the runtime's logs."""


def runtime_under_test() -> str:
    """Absolute path of the runtime the lanes drive."""
    path = os.environ.get("PYOCI_CLIENT_RUNTIME")
    if not path:
        venv = REPO / ".venv" / "bin" / "pyoci"
        path = str(venv) if os.access(venv, os.X_OK) else (shutil.which("pyoci") or "")
    if not path:
        raise LaneError("no runtime: set PYOCI_CLIENT_RUNTIME or install pyoci into <repo>/.venv")
    path = os.path.abspath(path)
    if not os.access(path, os.X_OK):
        raise LaneError(f"runtime {path} is not executable")
    return path


def default_state_root(runtime: str) -> str | None:
    """Where the runtime keeps container state when the client passes no --root (podman)."""
    name = os.path.basename(os.path.realpath(runtime))
    return {"pyoci": "/run/pyoci", "runc": "/run/runc", "crun": "/run/crun"}.get(name)


def doc_code_blocks(doc: Path, heading: str, lang: str) -> list[str]:
    """The ```lang blocks of a markdown file's section `heading` (up to the next heading of the
    same or a higher level)."""
    lines = doc.read_text().splitlines()
    level, start = None, None
    for i, ln in enumerate(lines):
        if ln.lstrip("#") != ln and ln.lstrip("#").strip() == heading:
            level, start = len(ln) - len(ln.lstrip("#")), i + 1
            break
    if start is None:
        raise LaneError(f"{doc}: no heading {heading!r}")
    blocks, cur = [], None
    for ln in lines[start:]:
        if cur is None and ln.startswith("#") and len(ln) - len(ln.lstrip("#")) <= level:
            break
        if cur is None and ln.strip() == "```" + lang:
            cur = []
        elif cur is not None and ln.strip() == "```":
            blocks.append("\n".join(cur) + "\n")
            cur = None
        elif cur is not None:
            cur.append(ln)
    return blocks


def missing_tools(*names: str) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


def render(template: str, dest: Path, **values: str) -> Path:
    text = string.Template((TEMPLATES / template).read_text()).substitute(**values)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return dest


def _tail(text: str, limit: int = LOG_TAIL) -> str:
    return text if len(text) <= limit else "[...]" + text[-limit:]


@dataclass
class Result:
    argv: list[str]
    rc: int | None          # None = timed out
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        rc = "TIMEOUT" if self.rc is None else str(self.rc)
        return (f"$ {shlex.join(self.argv)}\n  exit: {rc} after {self.seconds:.1f}s\n"
                f"  --- stdout ---\n{_indent(_tail(self.stdout))}\n"
                f"  --- stderr ---\n{_indent(_tail(self.stderr))}")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip("\n").splitlines()) or "    (empty)"


def _decode(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode(errors="replace")


class LogKeeper:
    """Polls the clients' state dirs for runtime log files and hard-links each one into a keep
    dir (same inode: later appends show up, and the content survives the client deleting it)."""

    def __init__(self, keep_dir: Path, patterns: list[tuple[Path, int, str]], period: float = 0.004):
        # patterns: (root, depth, file name): look for <root>/<depth dirs>/<name>
        self.keep_dir = keep_dir
        self.patterns = patterns
        self.period = period
        self.kept: dict[str, Path | None] = {}
        self._inodes: set[tuple[int, int]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _scan_dir(self, d: str, depth: int, name: str) -> None:
        """Keeps every file called name at most depth levels below d."""
        try:
            entries = list(os.scandir(d))
        except OSError:
            return
        for e in entries:
            if e.name == name:
                if e.path not in self.kept:
                    self._keep(e.path)
            elif depth > 0 and e.is_dir(follow_symlinks=False):
                self._scan_dir(e.path, depth - 1, name)

    def _keep(self, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) in self._inodes:     # e.g. the shim renames <id> to .<id>
            self.kept[path] = None
            return
        self._inodes.add((st.st_dev, st.st_ino))
        dest = self.keep_dir / f"{len(self.kept):03d}-{path.strip('/').replace('/', '_')[-150:]}"
        try:
            os.link(path, dest)
        except OSError:
            try:
                shutil.copyfile(path, dest)
            except OSError:
                return
        self.kept[path] = dest

    def scan(self) -> None:
        for root, depth, name in self.patterns:
            self._scan_dir(str(root), depth, name)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.scan()

    def start(self) -> None:
        self.keep_dir.mkdir(parents=True, exist_ok=True)
        self._stop.clear()
        self.kept = {}
        self._inodes = set()
        self._thread = threading.Thread(target=self._loop, name="runtime-log-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self.scan()

    def report(self) -> str:
        self.scan()
        if not self.kept:
            return "  (the runtime wrote no log file during this scenario)"
        out = []
        for src, dest in self.kept.items():
            if dest is None:
                continue
            try:
                text = dest.read_text(errors="replace")
            except OSError as e:
                text = f"(unreadable: {e})"
            out.append(f"  {src}:\n{_indent(_tail(text) or '(empty)')}")
        return "\n".join(out)


class Lane:
    """Runs client commands inside the lane's network namespace with a private environment."""

    def __init__(self, base: Path, runtime: str):
        self.base = base
        self.runtime = runtime
        self.netns = base / "netns"
        self.keeper: LogKeeper | None = None
        self.extra_logs: list[Path] = []        # e.g. containerd's own log
        self.history: list[Result] = []          # commands of the current scenario
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "PYTEST_CURRENT_TEST")}
        self.env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        self.env.setdefault("HOME", "/root")
        self.mounts_before = _mountpoints()
        self.started = time.monotonic()

    def budget_left(self) -> float:
        return LANE_BUDGET - (time.monotonic() - self.started)

    # -- network namespace ---------------------------------------------------------------------
    def make_netns(self) -> None:
        self.netns.touch()
        r = self._exec(["unshare", f"--net={self.netns}", "ip", "link", "set", "lo", "up"], timeout=20,
                       in_netns=False)
        if r.rc != 0:
            raise LaneError("cannot make the lane's network namespace\n" + r.describe())

    # -- running commands ----------------------------------------------------------------------
    def _exec(self, argv: list[str], *, timeout: float = CMD_TIMEOUT, input: str | None = None,
              env: dict | None = None, in_netns: bool = True, tty: bool = False) -> Result:
        full = (["nsenter", f"--net={self.netns}", "--"] if in_netns else []) + argv
        if tty:
            r = _run_pty(full, timeout=timeout, env=env or self.env, input=input)
            r.argv = argv
        else:
            t0 = time.monotonic()
            try:
                p = subprocess.run(full, input=(input or "").encode() if input is not None else None,
                                   stdin=None if input is not None else subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=env or self.env, timeout=timeout)
                r = Result(argv, p.returncode, _decode(p.stdout), _decode(p.stderr), time.monotonic() - t0)
            except subprocess.TimeoutExpired as e:
                r = Result(argv, None, _decode(e.stdout), _decode(e.stderr), time.monotonic() - t0)
        self.history.append(r)
        return r

    def run(self, argv: list[str], **kw) -> Result:
        return self._exec(argv, **kw)

    # -- failure reports -----------------------------------------------------------------------
    def failure(self, what: str, result: Result | None = None) -> LaneError:
        parts = [f"{what}  [runtime: {self.runtime}]"]
        if result is not None:
            parts.append(result.describe())
        earlier = [r for r in self.history if r is not result][-6:]
        if earlier:
            parts.append("--- earlier commands of this scenario ---\n" +
                         "\n".join(f"$ {shlex.join(r.argv)} -> {r.rc}" for r in earlier))
        parts.append("--- runtime log ---\n" + (self.keeper.report() if self.keeper else "  (no keeper)"))
        for p in self.extra_logs:
            try:
                text = p.read_text(errors="replace")
            except OSError:
                continue
            parts.append(f"--- {p} (tail) ---\n" + _indent(_tail(text, 3000)))
        return LaneError("\n".join(parts))

    def expect(self, r: Result, *, rc: int | None = 0, out: str | None = None,
               out_re: str | None = None, err: str | None = None, what: str = "") -> Result:
        """Checks exit code and output; raises LaneError with everything needed to debug."""
        __tracebackhide__ = True
        import re
        problems = []
        if r.rc is None:
            problems.append("timed out")
        elif rc is not None and r.rc != rc:
            problems.append(f"exit code {r.rc}, expected {rc}")
        elif rc is None and r.rc == 0:
            problems.append("exit code 0, expected a failure")
        if out is not None and out not in r.stdout:
            problems.append(f"stdout lacks {out!r}")
        if out_re is not None and not re.search(out_re, r.stdout, re.M):
            problems.append(f"stdout does not match /{out_re}/")
        if err is not None and not re.search(err, r.stderr + r.stdout, re.I | re.M):
            problems.append(f"error output does not match /{err}/")
        if problems:
            raise self.failure(f"{what or r.argv[0]}: " + "; ".join(problems), r)
        return r

    def check(self, cond: bool, what: str, result: Result | None = None) -> None:
        __tracebackhide__ = True
        if not cond:
            raise self.failure(what, result)

    # -- scenario bracketing -------------------------------------------------------------------
    def begin(self) -> None:
        self.history = []
        if self.keeper:
            self.keeper.start()

    def end(self) -> None:
        if self.keeper:
            self.keeper.stop()

    # -- teardown ------------------------------------------------------------------------------
    def unmount_leftovers(self) -> list[str]:
        """Unmount what the clients left in our mount namespace: anything under the lane dir and
        /run/netns entries that appeared during the lane. Returns what was unmounted."""
        now = _mountpoints()
        new = [m for m in now - self.mounts_before
               if m.startswith(str(self.base) + "/") or m == str(self.base) or m == "/run/netns" or m.startswith("/run/netns/")]
        done = []
        for m in sorted(new, key=len, reverse=True):
            if subprocess.run(["umount", "-l", m], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=20).returncode == 0:
                done.append(m)
            if m.startswith("/run/netns/"):
                try:
                    os.unlink(m)
                except OSError:
                    pass
        return done


def reclaim_leaks(cgroups: list[str], state_dirs: list[str], grace: float = 5) -> list[str]:
    """For cgroups (paths relative to the cgroup2 root) and runtime state dirs a scenario's
    containers should no longer have: report each one that still exists and remove it (killing
    what is left in a cgroup through cgroup.kill: those processes are this lane's)."""
    leaks = []
    paths = [os.path.join(CGROUP_ROOT, rel.lstrip("/")) for rel in cgroups]
    # grace period: a client's cleanup process may still be running `delete`
    deadline = time.monotonic() + grace
    while any(os.path.exists(p) for p in paths + state_dirs) and time.monotonic() < deadline:
        time.sleep(0.1)
    for path in paths:
        if not os.path.isdir(path):
            continue
        procs = _read(os.path.join(path, "cgroup.procs")).split()
        leaks.append(f"the runtime left cgroup {path}" + (f" with processes {procs}" if procs else ""))
        if procs:
            try:
                with open(os.path.join(path, "cgroup.kill"), "w") as f:
                    f.write("1")
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for sub in sorted((d for d, _, _ in os.walk(path)), key=len, reverse=True):
            while True:
                try:
                    os.rmdir(sub)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        leaks.append(f"cannot remove cgroup {sub}")
                        break
                    time.sleep(0.05)
    for d in state_dirs:
        if os.path.lexists(d):
            leaks.append(f"the runtime left its state dir {d}")
            shutil.rmtree(d, ignore_errors=True)
    return leaks


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


class NetnsListener:
    """A TCP listener inside a network namespace (a thread that setns()es itself there, so the
    socket is bound and listening before anyone connects); collects what one client sends."""

    def __init__(self, netns: Path, timeout: float = 20):
        import socket
        from pyoci.linux import libc
        self.data = b""
        self.error: str | None = None
        self.port = 0
        ready = threading.Event()

        def serve():
            try:
                fd = os.open(netns, os.O_RDONLY)
                try:
                    libc.setns(fd, libc.CLONE_NEWNET, str(netns))   # this thread only
                finally:
                    os.close(fd)
                srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                srv.bind(("0.0.0.0", 0))
                srv.listen(1)
                srv.settimeout(timeout)
                self.port = srv.getsockname()[1]
                ready.set()
                conn, _ = srv.accept()
                conn.settimeout(timeout)
                with conn:
                    while True:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        self.data += chunk
                srv.close()
            except Exception as e:     # reported by the test through .error
                self.error = repr(e)
            finally:
                ready.set()

        self.thread = threading.Thread(target=serve, name="netns-listener", daemon=True)
        self.thread.start()
        ready.wait(timeout)

    def result(self, timeout: float = 20) -> bytes:
        self.thread.join(timeout)
        return self.data


def _mountpoints() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def _run_pty(argv: list[str], *, timeout: float, env: dict, input: str | None = None) -> Result:
    """Runs argv with a new pty as its stdin/stdout/stderr and controlling terminal (like a user
    at a terminal); returns everything written to the terminal as stdout."""
    master, slave = os.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    t0 = time.monotonic()
    # setsid -c: new session with stdin (the pty) as controlling terminal, without preexec_fn
    p = subprocess.Popen(["setsid", "-c"] + argv, stdin=slave, stdout=slave, stderr=slave,
                         env=env, close_fds=True)
    os.close(slave)
    if input is not None:
        os.write(master, input.encode())
    chunks = []
    deadline = t0 + timeout
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            r, _, _ = select.select([master], [], [], min(left, 0.2))
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError:       # EIO: every slave fd is closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif p.poll() is not None:
                # the client exited; drain what is left without waiting for stray slave holders
                while select.select([master], [], [], 0.05)[0]:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    chunks.append(data)
                break
    finally:
        if timed_out and p.poll() is None:
            p.kill()
        try:
            rc = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        os.close(master)
    out = b"".join(chunks).decode(errors="replace").replace("\r", "")
    return Result(argv, None if timed_out else rc, out, "", time.monotonic() - t0)


def build_busybox_rootfs_tar(workdir: Path) -> Path:
    """The busybox image of CONTRACT §2.1, built offline from /bin/busybox."""
    rootfs = workdir / "rootfs"
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "usr/bin", "usr/sbin",
              "var/run", "run"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], stdout=subprocess.PIPE, text=True,
                             check=True, timeout=20).stdout.split()
    for a in applets:
        if a != "busybox":
            link = rootfs / "bin" / a
            if not link.exists():
                os.symlink("/bin/busybox", link)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                           "nobody:x:65534:65534:nobody:/:/bin/false\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nnobody:x:65534:\n")
    tar = workdir / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True, timeout=60)
    shutil.rmtree(rootfs)
    return tar


def rlimit_defaults() -> tuple[int, int]:
    """nofile/nproc values for podman's default_ulimits that stay within our hard limits."""
    def pick(res: int, want: int) -> int:
        hard = resource.getrlimit(res)[1]
        return want if hard == resource.RLIM_INFINITY else min(want, hard)
    return pick(resource.RLIMIT_NOFILE, 20000), pick(resource.RLIMIT_NPROC, 32768)


# ---------------------------------------------------------------------------------------------
# podman
# ---------------------------------------------------------------------------------------------
class Podman:
    def __init__(self, lane: Lane):
        self.lane = lane
        self.dir = lane.base / "podman"
        rt = lane.runtime
        if os.path.basename(rt) not in JSON_RUNTIMES:
            # the basename decides whether podman passes --log-format=json --log (CONTRACT §3.6)
            link = lane.base / "bin" / "pyoci"
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(rt, link)
            rt = str(link)
        self.runtime = rt
        nofile, nproc = rlimit_defaults()
        render("containers.conf.in", self.dir / "containers.conf", base=str(lane.base), runtime=rt,
               nofile=str(nofile), nproc=str(nproc))
        render("storage.conf.in", self.dir / "storage.conf", base=str(lane.base))
        for d in ("tmp", "volumes", "networks"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        self.env = dict(lane.env, CONTAINERS_CONF=str(self.dir / "containers.conf"),
                        CONTAINERS_STORAGE_CONF=str(self.dir / "storage.conf"))
        self.env.pop("CONTAINER_HOST", None)
        self.run_dir = self.dir / "run" / "overlay-containers"
        lane.keeper = LogKeeper(lane.base / "kept-logs",
                                # <runroot>/overlay-containers/<id>/userdata/oci-log (create) and
                                # <graphroot>/overlay-containers/<id>/userdata/<exec id>/oci-log
                                [(self.run_dir, 3, "oci-log"),
                                 (self.dir / "graph" / "overlay-containers", 3, "oci-log")])
        self.created: list[str] = []
        self.events = self.dir / "events.log"
        self._events_offset = 0

    def mark(self) -> None:
        """Start of a scenario: later container_ids() calls return the ids created since."""
        self._events_offset = self.events.stat().st_size if self.events.exists() else 0

    def container_ids(self) -> set[str]:
        """IDs of containers podman created since mark(), from the lane's own events log."""
        import json
        ids = set()
        try:
            with open(self.events, "rb") as f:
                f.seek(self._events_offset)
                data = f.read()
        except OSError:
            return ids
        for line in data.decode(errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("Type") == "container" and ev.get("ID"):
                ids.add(ev["ID"])
        return ids

    def leaks(self, ids: set[str]) -> list[str]:
        """Runtime leftovers of removed containers: cgroup (cgroupfs: libpod_parent/libpod-<id>)
        and state dir (<default root>/<id>: podman passes no --root)."""
        rt_root = default_state_root(self.lane.runtime)
        return reclaim_leaks([f"libpod_parent/libpod-{i}" for i in sorted(ids)],
                             [f"{rt_root}/{i}" for i in sorted(ids)] if rt_root else [])

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--runtime", self.runtime] + [str(a) for a in args]

    def __call__(self, *args: str, timeout: float = CMD_TIMEOUT, input: str | None = None,
                 tty: bool = False, fd3: str | None = None) -> Result:
        argv = self.argv(*args)
        if fd3 is not None:
            # give podman an fd 3 (for --preserve-fds): open the file in a shell, then exec podman
            argv = ["sh", "-c", 'exec 3<"$0"; exec "$@"', fd3] + argv
        return self.lane.run(argv, timeout=timeout, input=input, env=self.env, tty=tty)

    def ok(self, *args: str, what: str = "", **kw) -> Result:
        return self.lane.expect(self(*args, **kw), rc=0, what=what or f"podman {args[0]}")

    def run_detached(self, *args: str, name: str) -> str:
        """podman run -d --name NAME ARGS...; returns the container id."""
        self.created.append(name)
        r = self.lane.expect(self("run", "-d", "--name", name, *args), rc=0, what="podman run -d")
        return r.stdout.strip().splitlines()[-1]

    def inspect(self, name: str, fmt: str) -> str:
        return self.ok("inspect", "--format", fmt, name).stdout.strip()

    def wait_status(self, name: str, want: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            st = self("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            if st == want or time.monotonic() > deadline:
                return st
            time.sleep(0.1)

    def import_image(self, tar: Path) -> None:
        self.lane.expect(self("import", "--change", 'CMD ["/bin/sh"]', str(tar), IMAGE, timeout=120),
                         what="podman import")

    def save_image(self, dest: Path) -> None:
        self.lane.expect(self("save", "--format", "docker-archive", "-o", str(dest), IMAGE, timeout=120),
                         what="podman save")

    def cleanup(self, names: list[str] | None = None) -> Result | None:
        names = self.created if names is None else names
        if not names:
            return None
        r = self("rm", "-f", "-i", "-t", "0", *names, timeout=60)
        # podman's own transient (CONTRACT.md, host notes 3): unmounting a container's SHM can
        # fail with EBUSY until its conmon has exited; podman's rm is idempotent, so try again
        # a few times (bounded) before calling it a failure
        for _ in range(10):
            if r.rc == 0 or "device or resource busy" not in r.stderr:
                break
            time.sleep(0.5)
            r = self("rm", "-f", "-i", "-t", "0", *names, timeout=60)
        self.created = [n for n in self.created if n not in names]
        return r

    def teardown(self) -> list[str]:
        problems = []
        r = self("rm", "-a", "-f", "-t", "0", timeout=120)
        if r.rc != 0:
            problems.append("podman rm -a -f failed:\n" + r.describe())
        left = self("ps", "-a", "-q", timeout=60)
        if left.stdout.strip():
            problems.append(f"containers left after rm -a -f: {left.stdout.split()}")
        # every container of the lane: leftovers of the runtime (cgroup, state dir)
        self._events_offset = 0
        problems += self.leaks(self.container_ids())
        # conmon exits with its container; kill (by pid) any of this lane's that did not
        is_ours = lambda cmd: "conmon" in cmd and str(self.dir) in cmd  # noqa: E731
        if not _wait_for_no_process(is_ours, 15):
            for pid in _pids_matching(is_ours):
                problems.append(f"conmon {pid} still running after rm -a -f; killed")
                _kill_pid(pid)
        # podman (cgroupfs manager) puts every conmon in /libpod_parent/conmon and never removes
        # it: take those cgroups away once empty (rmdir refuses a cgroup still in use)
        for d in ("/sys/fs/cgroup/libpod_parent/conmon", "/sys/fs/cgroup/libpod_parent"):
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)      # the last conmon may still be leaving it
        return problems


# ---------------------------------------------------------------------------------------------
# containerd
# ---------------------------------------------------------------------------------------------
class Containerd:
    def __init__(self, lane: Lane):
        self.lane = lane
        self.dir = lane.base / "containerd"
        self.config = render("containerd.toml.in", self.dir / "config.toml", base=str(lane.base))
        self.sock = self.dir / "c.sock"
        self.log = self.dir / "containerd.log"
        self.runtime_root = self.dir / "runtime-root"
        self.fifo_dir = self.dir / "fifo"
        # the runc v2 shims' sockets live in /run/containerd/s whatever the config says
        self.host_dirs_before = {d for d in ("/run/containerd", "/run/containerd/s",
                                             "/run/containerd/fifo") if os.path.isdir(d)}
        self.proc: subprocess.Popen | None = None
        self.namespace = f"pyoci-lane-{os.getpid()}"
        self.task_dir = self.dir / "state" / "io.containerd.runtime.v2.task" / self.namespace
        lane.keeper = LogKeeper(lane.base / "kept-logs", [(self.task_dir, 1, "log.json")])  # <id>/log.json
        lane.extra_logs.append(self.log)
        self.created: list[str] = []

    def start(self, timeout: float = 30) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        logf = open(self.log, "ab")
        argv = ["nsenter", f"--net={self.lane.netns}", "--", "containerd", "--config", str(self.config)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                     env=self.lane.env)
        logf.close()
        deadline = time.monotonic() + timeout
        while True:
            r = self("version", timeout=5)
            if r.rc == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise self.lane.failure("containerd did not come up", r)
            time.sleep(0.1)

    def argv(self, *args: str) -> list[str]:
        return ["ctr", "-a", str(self.sock), "-n", self.namespace] + [str(a) for a in args]

    def __call__(self, *args: str, timeout: float = CMD_TIMEOUT, input: str | None = None,
                 tty: bool = False) -> Result:
        return self.lane.run(self.argv(*args), timeout=timeout, input=input, tty=tty)

    def ok(self, *args: str, what: str = "", **kw) -> Result:
        return self.lane.expect(self(*args, **kw), rc=0, what=what or f"ctr {' '.join(args[:2])}")

    def check_config(self, snippet: str, name: str = "cri") -> tuple[Result, Path]:
        """Starts a second, throwaway containerd whose config is `snippet` plus private paths
        and returns (`ctr plugins ls`, its log). Stopped by pid before returning."""
        d = self.lane.base / name
        d.mkdir(parents=True, exist_ok=True)
        config = d / "config.toml"
        config.write_text(f'root = "{d}/root"\nstate = "{d}/state"\n' + snippet + f"""
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
""")
        log = d / "containerd.log"
        with open(log, "ab") as logf:
            proc = subprocess.Popen(["nsenter", f"--net={self.lane.netns}", "--", "containerd",
                                     "--config", str(config)], stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=logf, env=self.lane.env)
        ctr = ["ctr", "-a", f"{d}/c.sock"]
        try:
            deadline = time.monotonic() + 20
            while True:
                r = self.lane.run(ctr + ["version"], timeout=5)
                if r.rc == 0 or proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            if r.rc == 0:
                r = self.lane.run(ctr + ["plugins", "ls"], timeout=15)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        return r, log

    def run_flags(self) -> list[str]:
        # --cpu-shares 0: cgroup v2 here has no cpu controller (CONTRACT §5); --fifo-dir: ctr's
        # default (/run/containerd/fifo) keeps the FIFOs of detached tasks on the host
        return ["--runc-binary", self.lane.runtime, "--runc-root", str(self.runtime_root),
                "--cpu-shares", "0", "--fifo-dir", str(self.fifo_dir)]

    def exec(self, name: str, *args: str, flags: tuple[str, ...] = (), **kw) -> Result:
        """ctr task exec --fifo-dir <lane> FLAGS NAME ARGS..."""
        return self("task", "exec", "--fifo-dir", str(self.fifo_dir), *flags, name, *args, **kw)

    def run(self, name: str, *args: str, flags: tuple[str, ...] = (), rm: bool = True,
            detach: bool = False, timeout: float = CMD_TIMEOUT, input: str | None = None, tty: bool = False) -> Result:
        """ctr run [--rm] [-d] FLAGS <runtime flags> IMAGE NAME ARGS..."""
        self.created.append(name)
        argv = ["run"] + (["--rm"] if rm and not detach else []) + (["-d"] if detach else [])
        argv += list(flags) + self.run_flags() + [IMAGE, name] + list(args)
        return self(*argv, timeout=timeout, input=input, tty=tty)

    def task_status(self, name: str) -> str:
        r = self("task", "ls", timeout=15)
        for line in r.stdout.splitlines()[1:]:
            f = line.split()
            if f and f[0] == name:
                return f[-1]
        return ""

    def wait_task_status(self, name: str, want: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            st = self.task_status(name)
            if st == want or time.monotonic() > deadline:
                return st
            time.sleep(0.1)

    def import_image(self, tar: Path) -> None:
        self.ok("image", "import", str(tar), timeout=120, what="ctr image import")

    def remove(self, name: str) -> list[Result]:
        out = []
        if self.task_status(name):
            out.append(self("task", "kill", "-a", "-s", "SIGKILL", name, timeout=15))
            self.wait_task_status(name, "STOPPED", 5)
            out.append(self("task", "delete", "-f", name, timeout=15))
        out.append(self("container", "delete", name, timeout=15))
        return out

    def cleanup(self) -> list[str]:
        """Removes the scenario's containers; returns the runtime's leftovers (cgroup
        /<namespace>/<id>, state dir <runc-root>/<namespace>/<id>) and reclaims them."""
        names, self.created = self.created, []
        for name in names:
            self.remove(name)
        return reclaim_leaks([f"{self.namespace}/{n}" for n in names],
                             [str(self.runtime_root / self.namespace / n) for n in names] +
                             [str(self.runtime_root / n) for n in names])

    def teardown(self) -> list[str]:
        problems = []
        if self.proc is not None and self.proc.poll() is None:
            r = self("task", "ls", "-q", timeout=20)
            for name in r.stdout.split():
                problems.append(f"task {name} left running; removing it")
                self.remove(name)
            r = self("container", "ls", "-q", timeout=20)
            for name in r.stdout.split():
                self("container", "delete", name, timeout=30)
        # shims exit when their container is gone; wait for ours, then stop containerd by pid
        _wait_for_no_process(lambda cmd: "containerd-shim" in cmd and str(self.sock) in cmd, 15)
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    problems.append("containerd ignored SIGTERM; killed")
                    self.proc.kill()
                    self.proc.wait(10)
        for pid in _pids_matching(lambda cmd: "containerd-shim" in cmd and str(self.sock) in cmd):
            problems.append(f"shim {pid} still running after containerd stopped; killed")
            _kill_pid(pid)
        # host dirs containerd made for this lane's shims (sockets are gone with the shims)
        for d in ("/run/containerd/s", "/run/containerd/fifo", "/run/containerd"):
            if d not in self.host_dirs_before:
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        # the namespace's parent cgroup is made by the runtime (runc leaves it too): remove it
        ns_cg = os.path.join(CGROUP_ROOT, self.namespace)
        if os.path.isdir(ns_cg):
            problems += [p for p in reclaim_leaks([self.namespace], []) if "processes" in p]
        return problems


def _pids_matching(pred) -> list[int]:
    """Our own descendants (pytest is a child subreaper, so the clients' daemonized conmon and
    shims end up as its children) whose command line matches pred."""
    me = os.getpid()
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            if int(fields[1]) != me or fields[0] == "Z":
                continue
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if pred(cmd):
            out.append(int(p))
    return out


def _wait_for_no_process(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pids_matching(pred):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        time.sleep(0.05)


def make_lane_dir() -> Path:
    # short path: conmon and the shims put unix sockets under it (108-byte limit)
    return Path(tempfile.mkdtemp(prefix="pyoci-lane-", dir="/tmp"))


def remove_lane_dir(base: Path) -> None:
    shutil.rmtree(base, ignore_errors=True)
    if base.exists():
        # overlay work dirs can hold d--------- entries; make them removable and retry
        subprocess.run(["chmod", "-R", "u+rwx", str(base)], timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)
