"""Black-box harness: bundles, the runtime's CLI, the in-container probe.

Nothing here imports pyoci: the same checks judge any runc-style runtime.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CGROUP_ROOT = "/sys/fs/cgroup"


class Fail(Exception):
    """The runtime does not meet the requirement."""


class Skip(Exception):
    """The requirement cannot be judged on this host (the reason says why)."""


def need(cond, msg: str) -> None:
    if not cond:
        raise Fail(msg)


def tail(text: str | None, n: int = 300) -> str:
    text = (text or "").strip().replace("\n", " | ")
    return text[-n:]


# --------------------------------------------------------------------------- host side


def build_probe(workdir: Path) -> Path:
    out = workdir / "probe"
    p = subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(HERE / "probe.c")],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"cannot compile the probe with gcc -static: {p.stderr}")
    return out


def build_rootfs_template(workdir: Path, probe: Path, busybox: str = "/bin/busybox") -> Path:
    root = workdir / "rootfs-template"
    for d in ("bin", "sbin", "etc", "proc", "sys/fs/cgroup", "dev", "tmp", "root", "mnt", "run", "var", "usr/bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(busybox, root / "bin/busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, timeout=30).stdout.split()
    for a in applets:
        if a != "busybox" and "/" not in a:
            os.symlink("busybox", root / "bin" / a)
    shutil.copy2(probe, root / "probe")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nnobody:x:65534:\n")
    return root


def default_config(args: list[str]) -> dict:
    """A config much like `runc spec` (without device cgroup rules, which crun cannot load here)."""
    return {
        # 1.0.2 (what `runc spec` writes): crun 1.8.1 refuses 1.2.0 and later; spec#9 tries 1.3.0 itself
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
                             for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "conformance",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                            "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def ns_inode(pid: int | str, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def parse_mountinfo(text: str) -> list[dict]:
    out = []
    for line in (text or "").splitlines():
        f = line.split()
        if "-" not in f:
            continue
        sep = f.index("-")
        out.append({"id": f[0], "parent": f[1], "root": f[3], "mountpoint": f[4],
                    "opts": set(f[5].split(",")), "optional": f[6:sep], "fstype": f[sep + 1],
                    "source": f[sep + 2], "super": set(f[sep + 3].split(",")) if len(f) > sep + 3 else set()})
    return out


def mount_at(mounts: list[dict], path: str) -> dict | None:
    """The top-most mount at `path` (the last one listed)."""
    found = None
    for m in mounts:
        if m["mountpoint"] == path:
            found = m
    return found


def caps_from_status(status: str) -> dict[str, int]:
    out = {}
    for line in status.splitlines():
        for k, name in (("CapInh", "inheritable"), ("CapPrm", "permitted"), ("CapEff", "effective"),
                        ("CapBnd", "bounding"), ("CapAmb", "ambient")):
            if line.startswith(k + ":"):
                out[name] = int(line.split()[1], 16)
    return out


def status_field(status: str, name: str) -> str | None:
    for line in status.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return None


CAP_NAMES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
             "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
             "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
             "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
             "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
             "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
             "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
             "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"]


def cap_mask(names) -> int:
    m = 0
    for n in names:
        m |= 1 << CAP_NAMES.index(n)
    return m


def cap_names(mask: int) -> list[str]:
    return [n for i, n in enumerate(CAP_NAMES) if mask >> i & 1]


def host_caps() -> dict[str, int]:
    return caps_from_status(Path("/proc/self/status").read_text())


def wait_for(pred, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st.rsplit(")", 1)[1].split()[0] != "Z"


# --------------------------------------------------------------------------- bundles


class Bundle:
    def __init__(self, path: Path, template: Path, args: list[str]):
        self.path = path
        path.mkdir(parents=True)
        shutil.copytree(template, path / "rootfs", symlinks=True)
        self.config = default_config(args)
        self.save()

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    @property
    def process(self) -> dict:
        return self.config["process"]

    @property
    def linux(self) -> dict:
        return self.config["linux"]

    def mount(self, **m) -> "Bundle":
        self.config["mounts"].append(m)
        return self.save()

    def hook(self, kind: str, path: str, args=None, env=None, timeout=None) -> "Bundle":
        h: dict = {"path": path}
        if args is not None:
            h["args"] = args
        if env is not None:
            h["env"] = env
        if timeout is not None:
            h["timeout"] = timeout
        self.config.setdefault("hooks", {}).setdefault(kind, []).append(h)
        return self.save()

    def save(self) -> "Bundle":
        (self.path / "config.json").write_text(json.dumps(self.config, indent=1))
        return self

    def write_raw(self, text: str | bytes) -> None:
        p = self.path / "config.json"
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)


# --------------------------------------------------------------------------- runtime CLI


class Runtime:
    def __init__(self, path: str, root: Path):
        self.path = path
        self.root = root

    def argv(self, *args, log: str | None = None) -> list[str]:
        g = [self.path, "--root", str(self.root)]
        if log:
            g += ["--log", log]
        return g + [str(a) for a in args]

    def cmd(self, *args, timeout: float = 30, log: str | None = None, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=None, pass_fds=(),
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run one runtime command in its own session; on timeout the whole session is killed."""
        argv = self.argv(*args, log=log)
        p = subprocess.Popen(argv, text=True, stdin=subprocess.PIPE if input is not None else stdin,
                             stdout=stdout, stderr=stderr, cwd=cwd, pass_fds=pass_fds, start_new_session=True)
        try:
            out, err = p.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                p.communicate(timeout=5)
            raise Fail(f"`{' '.join(map(str, args))}` did not finish within {timeout}s") from e
        return subprocess.CompletedProcess(argv, p.returncode, out, err)

    def version(self) -> str:
        try:
            p = subprocess.run([self.path, "--version"], capture_output=True, text=True, timeout=20)
            return (p.stdout.strip().splitlines() or ["?"])[0]
        except Exception as e:  # noqa: BLE001
            return f"unknown ({e})"


class Container:
    """One container id; `with ctx.container(bundle) as c:` always force-deletes it at the end."""

    def __init__(self, ctx: "Ctx", bundle: Bundle | None, cid: str | None = None):
        self.ctx = ctx
        self.rt = ctx.rt
        self.bundle = bundle
        self.id = cid or f"cf-{secrets.token_hex(4)}"
        self.io = ctx.tmpdir("io")
        self.out_path = self.io / "stdout"
        self.err_path = self.io / "stderr"
        self.log_path = str(self.io / "runtime.log")
        self.pid: int | None = None

    # the container's stdio goes to files, so the runtime's create returns without waiting for EOF
    def create(self, *extra, check: bool = True, timeout: float = 30, cwd=None, bundle_arg=True,
               pass_fds=()) -> subprocess.CompletedProcess:
        args = ["create"]
        if bundle_arg and self.bundle is not None:
            args += ["--bundle", str(self.bundle.path)]
        args += ["--pid-file", str(self.io / "pid"), *extra, self.id]
        with open(self.out_path, "ab") as out, open(self.err_path, "ab") as err:
            p = self.rt.cmd(*args, stdout=out, stderr=err, timeout=timeout, cwd=cwd, log=self.log_path,
                            pass_fds=pass_fds)
        p.stderr = self.err_path.read_text(errors="replace")
        if check and p.returncode != 0:
            raise Fail(f"create failed (exit {p.returncode}): {tail(p.stderr)} {tail(self.log())}")
        if p.returncode == 0:
            with contextlib.suppress(OSError, ValueError):
                self.pid = int((self.io / "pid").read_text().strip())
        return p

    def op(self, *args, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        p = self.rt.cmd(*args, timeout=timeout, log=self.log_path, **kw)
        if check and p.returncode != 0:
            raise Fail(f"{args[0]} failed (exit {p.returncode}): {tail(p.stderr)} {tail(self.log())}")
        return p

    def start(self, check: bool = True, **kw):
        return self.op("start", self.id, check=check, **kw)

    def kill(self, sig: str = "KILL", check: bool = True, **kw):
        return self.op("kill", self.id, sig, check=check, **kw)

    def delete(self, force: bool = False, check: bool = True, **kw):
        return self.op("delete", *(["--force"] if force else []), self.id, check=check, **kw)

    def state(self) -> dict:
        p = self.op("state", self.id)
        try:
            return json.loads(p.stdout)
        except ValueError as e:
            raise Fail(f"state printed no JSON: {tail(p.stdout)}") from e

    def state_or_none(self) -> dict | None:
        p = self.op("state", self.id, check=False)
        if p.returncode != 0:
            return None
        try:
            return json.loads(p.stdout)
        except ValueError:
            return None

    def wait_status(self, status: str, timeout: float = 10) -> dict:
        last: dict = {}

        def ok():
            nonlocal last
            last = self.state_or_none() or {}
            return last.get("status") == status
        if not wait_for(ok, timeout):
            raise Fail(f"status did not become {status!r} within {timeout}s (last: {last.get('status')})")
        return last

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.rt.cmd("delete", "--force", self.id, timeout=30)
        if self.pid and pid_alive(self.pid):
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)


class Ctx:
    def __init__(self, runtime: str, workdir: Path, template: Path):
        self.workdir = workdir
        # the root sits two levels down, so an id like ".." or "../x" can only reach an empty directory
        self.state_parent = workdir / "state"
        self.rt = Runtime(runtime, self.state_parent / "root")
        self.template = template
        self._cleanups: list = []
        self.host_pid = os.getpid()

    def tmpdir(self, prefix: str = "t") -> Path:
        d = self.workdir / f"{prefix}-{secrets.token_hex(4)}"
        d.mkdir(parents=True)
        return d

    def bundle(self, args=("/probe",)) -> Bundle:
        return Bundle(self.workdir / f"bundle-{secrets.token_hex(4)}", self.template, list(args))

    @contextlib.contextmanager
    def container(self, bundle: Bundle | None, cid: str | None = None):
        c = Container(self, bundle, cid)
        try:
            yield c
        finally:
            c.cleanup()

    def on_cleanup(self, fn) -> None:
        self._cleanups.append(fn)

    def run_cleanups(self) -> None:
        while self._cleanups:
            fn = self._cleanups.pop()
            with contextlib.suppress(Exception):
                fn()

    # ----------------------------------------------------------- foreground runs

    def run(self, bundle: Bundle, timeout: float = 30, extra=(), cid: str | None = None,
            pass_fds=()) -> tuple[int, str, str, "Container"]:
        """`runtime run` in the foreground; returns (exit code, stdout, stderr+log, container)."""
        with self.container(bundle, cid) as c:
            p = self.rt.cmd("run", "--bundle", str(bundle.path), *extra, c.id, timeout=timeout,
                            log=c.log_path, pass_fds=pass_fds)
            return p.returncode, p.stdout, (p.stderr or "") + c.log(), c

    def probe(self, bundle: Bundle | None = None, mutate=None, args=None, timeout: float = 30) -> dict:
        b = bundle or self.bundle(args or ["/probe"])
        if args is not None:
            b.process["args"] = list(args)
        if mutate:
            mutate(b)
        b.save()
        rc, out, err, _ = self.run(b, timeout=timeout)
        if rc != 0:
            raise Fail(f"probe container failed (exit {rc}): {tail(err)}")
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    break
        raise Fail(f"probe printed no JSON: {tail(out)} {tail(err)}")

    def expect_error(self, bundle: Bundle, what: str, timeout: float = 30) -> str:
        """create must fail, and leave no container behind (spec#3)."""
        with self.container(bundle) as c:
            p = c.create(check=False, timeout=timeout)
            if p.returncode == 0:
                raise Fail(f"create accepted {what}")
            if c.state_or_none() is not None:
                raise Fail(f"create rejected {what} but left a container that `state` still reports")
            return p.stderr + c.log()

    def cgroup_path(self, name: str) -> str:
        """An absolute cgroupsPath under a private parent, removed at the end of the check."""
        parent = f"/conformance-{secrets.token_hex(3)}"

        def rm():
            base = Path(CGROUP_ROOT + parent)

            def attempt():
                if not base.exists():
                    return True
                for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(str(p))) + [base]:
                    with contextlib.suppress(OSError):
                        d.rmdir()
                return not base.exists()
            # a cgroup stays busy for a moment while its last processes are reaped
            wait_for(attempt, timeout=5, interval=0.1)
        self.on_cleanup(rm)
        return f"{parent}/{name}"


def clone_config(cfg: dict) -> dict:
    return copy.deepcopy(cfg)
