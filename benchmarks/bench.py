"""pyoci vs runc vs crun, side by side, in one run (issue 9).

Run it as `benchmarks/run [--quick] [--json FILE] [--md FILE]` (as root). The process moves
itself into a private mount namespace with cgroup2 at /sys/fs/cgroup (like the tests: the
machine's v1 hierarchies are never touched), becomes a child subreaper (like conmon or a
containerd shim: orphaned container processes come to us and are reaped with their rusage),
uses private --root dirs under a temporary directory, and removes everything at the end.

Every invocation is started with posix_spawn and reaped with wait4, so each has its wall
time, its CPU time (user+sys, including the children it reaped) and its peak RSS
(ru_maxrss) from the kernel. Runtimes are alternated (pyoci runc crun pyoci runc crun ...)
after a warm-up, so a noisy machine hurts all three alike.

Scenarios: (a) run /bin/true; (b) create + start + delete; (c) exec /bin/true into a running
container; (d) state and list with 50 and 500 containers present; (e) 25 and 50 containers
created, started and deleted by 8 concurrent workers, with a leak check; (f) peak RSS of
every pyoci process; plus the per-stage breakdown of pyoci from `--debug` and the import
profile (benchmarks/importprof.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VENV_PY = os.path.join(REPO, ".venv", "bin", "python")
PYOCI = os.path.join(REPO, ".venv", "bin", "pyoci")
RUNC = "/usr/sbin/runc"
CRUN = "/usr/bin/crun"
RUNTIMES = ("pyoci", "runc", "crun")
CRUN_OCI_VERSION = "1.0.2"   # crun 1.8.1 rejects ociVersion 1.3.0 ("unknown version specified")

sys.path.insert(0, HERE)


# ───────────────────────────── namespace set-up ─────────────────────────────

def _is_cgroup2(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[4] == path and fields[sep + 1] == "cgroup2":
                return True
    return False


def enter_private_v2_namespace() -> None:
    """Private mount namespace, cgroup2 at /sys/fs/cgroup (see tests/helpers/v2ns.py)."""
    from pyoci.linux import libc
    libc.unshare(libc.CLONE_NEWNS)
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    if not _is_cgroup2("/sys/fs/cgroup"):
        libc.mount("none", "/sys/fs/cgroup", "cgroup2", 0)
    libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)


# ───────────────────────────── spawning and reaping ─────────────────────────────

class Reaper:
    """The only caller of wait4 in this process: a thread reaps every child (ours and the
    orphans reparented to us as subreaper) and hands each exit with its rusage to whoever
    waits for that pid."""

    def __init__(self):
        self.cv = threading.Condition()
        self.done: dict[int, tuple[int, object, float]] = {}
        self.orphans: dict[int, tuple[int, object]] = {}
        self.expected: set[int] = set()
        self.orphan_rss: list[int] = []   # ru_maxrss (KiB) of every reaped orphan
        self.stop = False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        while not self.stop:
            try:
                pid, status, ru = os.wait4(-1, 0)
            except ChildProcessError:
                time.sleep(0.001)
                continue
            except InterruptedError:
                continue
            now = time.perf_counter()
            with self.cv:
                if pid in self.expected:
                    self.expected.discard(pid)
                    self.done[pid] = (status, ru, now)
                else:
                    self.orphans[pid] = (status, ru)
                    self.orphan_rss.append(ru.ru_maxrss)
                self.cv.notify_all()

    def wait(self, pid: int, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cv:
            while pid not in self.done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"pid {pid} did not exit in {timeout}s")
                self.cv.wait(left)
            return self.done.pop(pid)

    def wait_orphan(self, pid: int, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        with self.cv:
            while pid not in self.orphans:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"orphan {pid} was not reaped in {timeout}s")
                self.cv.wait(left)
            return self.orphans.pop(pid)

    def drop_orphans(self) -> dict:
        with self.cv:
            o, self.orphans = self.orphans, {}
            return o


REAPER: Reaper | None = None
BASE: str | None = None


class Result:
    __slots__ = ("argv", "rc", "wall_ms", "cpu_ms", "maxrss_kib", "err", "out")

    def __init__(self, argv, rc, wall_ms, cpu_ms, maxrss_kib, err):
        self.argv, self.rc, self.wall_ms, self.cpu_ms, self.maxrss_kib, self.err = \
            argv, rc, wall_ms, cpu_ms, maxrss_kib, err
        self.out = ""


_DEVNULL = None


HELPER: str | None = None   # rusage_exec, built by build_helper()


def build_helper(base: str) -> str:
    """Compile rusage_exec.c: every measured command is forked by this small C parent, so its
    ru_maxrss is its own (a process inherits the peak RSS of the memory it was forked or
    vforked with: spawned straight from this Python process every command would show ~16 MiB)."""
    out = os.path.join(base, "rusage_exec")
    subprocess.run(["gcc", "-O2", "-o", out, os.path.join(HERE, "rusage_exec.c")], check=True)
    return out


def spawn(argv: list[str], check: bool = True, timeout: float = 120, stdout: bool = False) -> Result:
    """Run argv under rusage_exec with stdin/stdout on /dev/null (stdout to a file when
    `stdout`), stderr to a file (files, not pipes: a created container inherits them); return
    its wall time (fork to wait4, measured by the helper), CPU time (user+sys, including the
    children it reaped) and peak RSS, as the kernel accounted them."""
    global _DEVNULL
    if _DEVNULL is None:
        _DEVNULL = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    errf = tempfile.TemporaryFile()
    outf = tempfile.TemporaryFile() if stdout else None
    fd, rfile = tempfile.mkstemp(prefix="ru-", dir=BASE)
    os.close(fd)
    fa = [(os.POSIX_SPAWN_DUP2, _DEVNULL, 0),
          (os.POSIX_SPAWN_DUP2, outf.fileno() if outf else _DEVNULL, 1),
          (os.POSIX_SPAWN_DUP2, errf.fileno(), 2)]
    with REAPER.cv:
        pid = os.posix_spawn(HELPER, [HELPER, rfile] + argv, os.environ, file_actions=fa)
        REAPER.expected.add(pid)
    status, _ru, _t1 = REAPER.wait(pid, timeout=timeout)
    with open(rfile) as f:
        fields = f.read().split()
    os.unlink(rfile)
    errf.seek(0)
    err = errf.read().decode(errors="replace")
    errf.close()
    if len(fields) != 5:
        raise RuntimeError(f"rusage_exec {' '.join(argv)} failed (status {status}): {err.strip()[-2000:]}")
    wall_ns, ut, stt, rss, st = (int(x) for x in fields)
    rc = os.waitstatus_to_exitcode(st)
    r = Result(argv, rc, wall_ns / 1e6, (ut + stt) / 1000, rss, err)
    if outf is not None:
        outf.seek(0)
        r.out = outf.read().decode(errors="replace")
        outf.close()
    if check and rc != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {rc}: {err.strip()[-2000:]}")
    return r


# ───────────────────────────── runtimes and bundles ─────────────────────────────

class RT:
    def __init__(self, name: str, base: str):
        self.name = name
        self.root = os.path.join(base, f"root-{name}")
        os.makedirs(self.root, exist_ok=True)
        if name == "pyoci":
            self.cmd = [PYOCI, "--root", self.root]
        elif name == "runc":
            self.cmd = [RUNC, "--root", self.root]
        else:
            self.cmd = [CRUN, "--cgroup-manager=disabled", "--root", self.root]
        self.bundles: dict[str, str] = {}
        self.rss: dict[str, list[int]] = {}   # verb -> ru_maxrss (KiB) of each invocation

    def argv(self, *args) -> list[str]:
        return self.cmd + [str(a) for a in args]

    def __call__(self, *args, check=True, timeout=120) -> Result:
        r = spawn(self.argv(*args), check=check, timeout=timeout)
        verb = next(a for a in args if not str(a).startswith("-"))
        self.rss.setdefault(verb, []).append(r.maxrss_kib)
        return r


def make_bundles(base: str, rts: dict[str, RT]) -> str:
    """One busybox rootfs shared by every bundle (root.path is absolute); per runtime a
    bundle running /bin/true and one running `sleep` (for exec)."""
    from pyoci.specgen import default_config, make_busybox_rootfs
    rootfs = make_busybox_rootfs(os.path.join(base, "rootfs"))
    for name, rt in rts.items():
        for variant, args in (("true", ["/bin/true"]), ("sleep", ["/bin/sleep", "100000"])):
            cfg = default_config(args, terminal=False)
            cfg["root"]["path"] = rootfs
            if name == "crun":
                cfg["ociVersion"] = CRUN_OCI_VERSION
            d = os.path.join(base, f"bundle-{name}-{variant}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
            rt.bundles[variant] = d
    return rootfs


# ───────────────────────────── statistics ─────────────────────────────

def summary(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "median": statistics.median(xs), "min": min(xs), "max": max(xs)}


class Ids:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.n = 0
        self.lock = threading.Lock()

    def __call__(self, tag: str) -> str:
        with self.lock:
            self.n += 1
            return f"{self.prefix}-{tag}-{self.n}"


# ───────────────────────────── scenarios ─────────────────────────────

def wait_init_exit(pidfile: str, timeout: float = 30.0) -> None:
    """The container's init is reparented to us (subreaper): wait until we reaped it."""
    with open(pidfile) as f:
        pid = int(f.read().strip())
    REAPER.wait_orphan(pid, timeout=timeout)


def one_run(rt: RT, ids: Ids) -> dict:
    r = rt("run", "--bundle", rt.bundles["true"], ids("a"))
    return {"wall": r.wall_ms, "cpu": r.cpu_ms}


def one_lifecycle(rt: RT, ids: Ids, base: str) -> dict:
    cid = ids("b")
    pidfile = os.path.join(base, f"{cid}.pid")
    c = rt("create", "--bundle", rt.bundles["true"], "--pid-file", pidfile, cid)
    s = rt("start", cid)
    wait_init_exit(pidfile)            # untimed: the container's /bin/true exits
    d = rt("delete", cid)
    os.unlink(pidfile)
    return {"wall": c.wall_ms + s.wall_ms + d.wall_ms, "cpu": c.cpu_ms + s.cpu_ms + d.cpu_ms,
            "create": c.wall_ms, "start": s.wall_ms, "delete": d.wall_ms}


def alternate(rts: dict[str, RT], fn, n: int, warm: int) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {name: {} for name in rts}
    for i in range(warm + n):
        for name, rt in rts.items():
            m = fn(rt)
            if i >= warm:
                for k, v in m.items():
                    out[name].setdefault(k, []).append(v)
    return out


def scenario_exec(rts, ids, base, n, warm):
    cids = {}
    for name, rt in rts.items():
        cid = ids("c")
        pidfile = os.path.join(base, f"{cid}.pid")
        rt("create", "--bundle", rt.bundles["sleep"], "--pid-file", pidfile, cid)
        rt("start", cid)
        with open(pidfile) as f:
            cids[name] = (cid, pidfile, int(f.read()))

    def f(rt):
        r = rt("exec", cids[rt.name][0], "/bin/true")
        return {"wall": r.wall_ms, "cpu": r.cpu_ms}
    try:
        return alternate(rts, f, n, warm)
    finally:
        for name, rt in rts.items():
            cid, pidfile, pid = cids[name]
            rt("kill", cid, "KILL", check=False)
            try:
                REAPER.wait_orphan(pid, timeout=30)
            except TimeoutError:
                pass
            rt("delete", "--force", cid, check=False)
            os.unlink(pidfile)


def _clone_state(rt: RT, real: str, clone: str) -> None:
    """Copy the state dir of a real created container under another id (the clone points at
    the same live init). pyoci: state.json; runc: state.json; crun: status + config.json."""
    src = os.path.join(rt.root, real)
    dst = os.path.join(rt.root, clone)
    os.makedirs(dst)
    for fn in os.listdir(src):
        p = os.path.join(src, fn)
        if not os.path.isfile(p) or fn == "exec.fifo" or fn.startswith(".") and fn.endswith(".lock"):
            continue
        with open(p, "rb") as f:
            data = f.read()
        if fn in ("state.json", "status"):
            data = data.replace(f'"{real}"'.encode(), f'"{clone}"'.encode())
        with open(os.path.join(dst, fn), "wb") as f:
            f.write(data)
    # pyoci and runc report "created" while exec.fifo exists; an empty file is enough to read
    if os.path.exists(os.path.join(src, "exec.fifo")):
        open(os.path.join(dst, "exec.fifo"), "w").close()


def scenario_many(rts, ids, base, counts: list[int], n, warm):
    """(d): one real created container per runtime, plus clones of its state dir."""
    reals = {}
    for name, rt in rts.items():
        cid = ids("d")
        pidfile = os.path.join(base, f"{cid}.pid")
        rt("create", "--bundle", rt.bundles["sleep"], "--pid-file", pidfile, cid)
        with open(pidfile) as f:
            reals[name] = (cid, pidfile, int(f.read()))
    results: dict[int, dict] = {}
    clones: dict[str, list[str]] = {name: [] for name in rts}
    try:
        for count in counts:
            for name, rt in rts.items():
                while len(clones[name]) + 1 < count:
                    c = ids("dclone")
                    _clone_state(rt, reals[name][0], c)
                    clones[name].append(c)

            def f(rt):
                s = rt("state", reals[rt.name][0])
                ls = rt("list")
                return {"state": s.wall_ms, "list": ls.wall_ms, "state_cpu": s.cpu_ms, "list_cpu": ls.cpu_ms}
            res = alternate(rts, f, n, warm)
            results[count] = res
        listed = {}
        for name, rt in rts.items():
            listed[name] = len(spawn(rt.argv("list", "-q"), stdout=True).out.split())
        return results, listed
    finally:
        for name, rt in rts.items():
            for c in clones[name]:
                shutil.rmtree(os.path.join(rt.root, c), ignore_errors=True)
            cid, pidfile, pid = reals[name]
            rt("delete", "--force", cid, check=False)
            try:
                REAPER.wait_orphan(pid, timeout=30)
            except TimeoutError:
                pass
            os.unlink(pidfile)


# ───────────────────────────── (e) concurrency and leaks ─────────────────────────────

def snapshot(base: str, prefix: str) -> dict[str, set[str]]:
    mounts = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if base in fields[4] or base in fields[3]:
                mounts.add(fields[4])
    cgroups = set()
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        for d in dirnames:
            if prefix in d:
                cgroups.add(os.path.join(dirpath, d))
    procs = set()
    me = os.getpid()
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == me:
            continue
        try:
            root = os.readlink(f"/proc/{p}/root")
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        if root.startswith(base) or ppid == me:
            procs.add(f"{p} root={root}")
    states = set()
    for d in os.listdir(base):
        if d.startswith("root-"):
            for c in os.listdir(os.path.join(base, d)):
                if not c.startswith("."):
                    states.add(f"{d}/{c}")
    return {"mounts": mounts, "cgroups": cgroups, "processes": procs, "state dirs": states}


def leaks(before: dict, after: dict) -> list[str]:
    out = []
    for k in after:
        extra = after[k] - before.get(k, set())
        if extra:
            out.append(f"{k}: {sorted(extra)[:10]}{' ...' if len(extra) > 10 else ''}")
    return out


def scenario_concurrent(rt: RT, ids: Ids, base: str, n: int, workers: int) -> dict:
    q: queue.Queue = queue.Queue()
    for _ in range(n):
        q.put(ids("e"))
    errors: list[str] = []
    cpu: list[float] = []

    def worker():
        while True:
            try:
                cid = q.get_nowait()
            except queue.Empty:
                return
            pidfile = os.path.join(base, f"{cid}.pid")
            try:
                cpu.append(rt("create", "--bundle", rt.bundles["true"], "--pid-file", pidfile, cid).cpu_ms)
                cpu.append(rt("start", cid).cpu_ms)
                wait_init_exit(pidfile)
                cpu.append(rt("delete", cid).cpu_ms)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"{cid}: {e}")
                rt("delete", "--force", cid, check=False)
            finally:
                if os.path.exists(pidfile):
                    os.unlink(pidfile)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return {"total_ms": (time.perf_counter() - t0) * 1000, "cpu_ms": sum(cpu), "errors": errors}


# ───────────────────────────── per-stage breakdown ─────────────────────────────

def stage_breakdown(rt: RT, ids: Ids, base: str, n: int) -> dict:
    """pyoci with --debug --log F --log-format json: median ms of every `stage <name>` line,
    for `run` (a) and for create/start/delete (b)."""
    logf = os.path.join(base, "stages.jsonl")
    dbg = ["--debug", "--log", logf, "--log-format", "json"]
    runs: dict[str, list[float]] = {}
    walls: dict[str, list[float]] = {"run": [], "create": [], "start": [], "delete": []}

    def collect(prefix):
        with open(logf) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                msg = rec.get("msg", "")
                if msg.startswith("stage ") and "ms" in rec:
                    name = msg[6:].split(":", 1)[0]
                    runs.setdefault(f"{prefix}:{name}", []).append(rec["ms"])
        os.unlink(logf)

    for _ in range(n):
        r = spawn(rt.cmd + dbg + ["run", "--bundle", rt.bundles["true"], ids("s")])
        walls["run"].append(r.wall_ms)
        collect("run")
        cid = ids("s")
        pidfile = os.path.join(base, f"{cid}.pid")
        for verb, args in (("create", ["--bundle", rt.bundles["true"], "--pid-file", pidfile, cid]),
                           ("start", [cid]), ("delete", [cid])):
            r = spawn(rt.cmd + dbg + [verb] + args)
            walls[verb].append(r.wall_ms)
            if verb == "start":
                wait_init_exit(pidfile)
        os.unlink(pidfile)
        collect("lifecycle")
    return {"stages": {k: summary(v) for k, v in runs.items()},
            "walls": {k: summary(v) for k, v in walls.items()}}


def launcher_experiment(rt: RT, ids: Ids, n: int, warm: int) -> dict:
    """pyoci's console script vs benchmarks/fast_launcher.py (-I -S, gc off, os._exit),
    alternating, for `run` of /bin/true and `state` of a missing id."""
    fast = [VENV_PY, "-IS", os.path.join(HERE, "fast_launcher.py"), "--root", rt.root]
    out: dict[str, dict[str, list[float]]] = {}
    # both unsealed: the launcher calls pyoci.cli directly (no sealed re-exec), so the console
    # script must not pay for one either for the comparison to be about the entry point only
    os.environ["PYOCI_UNSEALED"] = "1"
    try:
        _launcher_rounds(rt, ids, n, warm, fast, out)
    finally:
        os.environ.pop("PYOCI_UNSEALED", None)
    return out


def _launcher_rounds(rt, ids, n, warm, fast, out):
    for i in range(warm + n):
        for label, cmd in (("console script", rt.cmd), ("fast launcher", fast),
                           ("console script, sealed re-exec (the default)", rt.cmd)):
            if "sealed" in label:
                os.environ.pop("PYOCI_UNSEALED", None)
            r = spawn(cmd + ["run", "--bundle", rt.bundles["true"], ids("x")])
            s = spawn(cmd + ["state", "missing-id"], check=False)
            os.environ["PYOCI_UNSEALED"] = "1"
            if i >= warm:
                d = out.setdefault(label, {})
                d.setdefault("run wall", []).append(r.wall_ms)
                d.setdefault("run cpu", []).append(r.cpu_ms)
                d.setdefault("state wall", []).append(s.wall_ms)
                d.setdefault("state cpu", []).append(s.cpu_ms)


def startup_costs(n: int) -> dict:
    out = {}
    for label, argv in (("python -c pass", [VENV_PY, "-c", "pass"]),
                        ("python -S -c pass", [VENV_PY, "-S", "-c", "pass"]),
                        ("python -I -S -c pass", [VENV_PY, "-I", "-S", "-c", "pass"]),
                        ("pyoci --version", [PYOCI, "--version"]),
                        ("pyoci state (missing id)", [PYOCI, "--root", "/nonexistent-pyoci-bench", "state", "x"]),
                        ("runc state (missing id)", [RUNC, "--root", "/nonexistent-pyoci-bench", "state", "x"])):
        ws, cs, rs = [], [], []
        for _ in range(n):
            r = spawn(argv, check=False)
            ws.append(r.wall_ms)
            cs.append(r.cpu_ms)
            rs.append(r.maxrss_kib)
        out[label] = {"wall": summary(ws), "cpu": summary(cs), "maxrss_kib": max(rs)}
    return out


# ───────────────────────────── report ─────────────────────────────

def machine() -> dict:
    def first(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        except OSError as e:
            return f"? ({e})"
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(), "cpu": model, "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": os.uname().release, "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "pyoci": first([PYOCI, "--version"]).replace("\n", "; "),
        "runc": first([RUNC, "--version"]).replace("\n", "; "),
        "crun": first([CRUN, "--version"]).splitlines()[0] if os.path.exists(CRUN) else "missing",
        "python": sys.version.split()[0],
        "git": (first(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
                + (" + uncommitted changes in runtime/" if first(["git", "-C", REPO, "status", "--porcelain",
                                                                   "--", "runtime"]) else "")),
    }


def fmt_row(label, res, key="wall", target=None):
    cells = [label]
    meds = {}
    for name in RUNTIMES:
        xs = res.get(name, {}).get(key, [])
        s = summary(xs)
        if s["n"]:
            meds[name] = s["median"]
            cells.append(f"{s['median']:.1f} ({s['min']:.1f}–{s['max']:.1f})")
        else:
            cells.append("–")
    ratio = meds["pyoci"] / meds["runc"] if meds.get("runc") else float("nan")
    cells.append(f"{ratio:.2f}")
    cpu_key = "cpu" if key == "wall" else f"{key}_cpu"
    cpu = {name: summary(res.get(name, {}).get(cpu_key, [])) for name in RUNTIMES}
    if cpu["pyoci"]["n"] and cpu["runc"]["n"]:
        cells.append(f"{cpu['pyoci']['median']:.1f} / {cpu['runc']['median']:.1f} / "
                     f"{cpu['crun']['median']:.1f}" if cpu["crun"]["n"] else "")
    else:
        cells.append("")
    if target is not None:
        cells.append(("met" if ratio <= target else "NOT met") + f" (≤ {target:.1f})")
    else:
        cells.append("")
    return "| " + " | ".join(cells) + " |", ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions (a smoke run)")
    ap.add_argument("-n", type=int, help="repetitions for (a)-(c) (default 30; quick 5)")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--md", help="write the results table (markdown) here")
    ap.add_argument("--doc", help="replace the generated section of this markdown file "
                    "(between <!-- results:begin --> and <!-- results:end -->), e.g. docs/benchmarks.md")
    ap.add_argument("--keep-tmp", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/run must run as root", file=sys.stderr)
        return 2
    n = a.n or (5 if a.quick else 30)
    warm = 1 if a.quick else 3
    many_counts = [50, 500]
    many_n = 3 if a.quick else 10
    conc = [25, 50]
    stage_n = 3 if a.quick else 10

    info = machine()
    enter_private_v2_namespace()
    global BASE, HELPER, REAPER
    base = BASE = tempfile.mkdtemp(prefix="pyoci-bench-")
    # state roots, bundles and rootfs on a tmpfs, like /run on a systemd host (this VM's /run
    # and /tmp are ext4, where every fsync and rename-over of a state file costs milliseconds)
    from pyoci.linux import libc
    libc.mount("tmpfs", base, "tmpfs", 0, "mode=0700,size=2g")
    HELPER = build_helper(base)   # before the reaper thread: subprocess must reap its own child
    REAPER = Reaper()
    prefix = f"pb{os.getpid()}"
    ids = Ids(prefix)
    rts = {name: RT(name, base) for name in RUNTIMES}
    log = print
    raw: dict = {"machine": info, "n": n, "warmup": warm}
    t_start = time.monotonic()
    try:
        make_bundles(base, rts)
        before = snapshot(base, prefix)

        log(f"# startup costs ({n} runs)")
        raw["startup"] = startup_costs(n)

        log(f"# (a) run /bin/true: {warm} warm-up + {n} alternating runs")
        raw["a"] = alternate(rts, lambda rt: one_run(rt, ids), n, warm)
        log(f"# (b) create + start + delete: {warm} + {n}")
        raw["b"] = alternate(rts, lambda rt: one_lifecycle(rt, ids, base), n, warm)
        log(f"# (c) exec /bin/true: {warm} + {n}")
        raw["c"] = scenario_exec(rts, ids, base, n, warm)
        log(f"# (d) state and list with {many_counts} containers: {warm} + {many_n}")
        raw["d"], raw["d_listed"] = scenario_many(rts, ids, base, many_counts, many_n, warm)
        raw["e"] = {}
        for count in conc:
            for name, rt in rts.items():
                log(f"# (e) {count} containers, 8 workers: {name}")
                r = scenario_concurrent(rt, ids, base, count, 8)
                time.sleep(0.2)
                r["leaks"] = leaks(before, snapshot(base, prefix))
                raw["e"].setdefault(count, {})[name] = r
        log(f"# launcher experiment: {warm} + {n}")
        raw["launcher"] = launcher_experiment(rts["pyoci"], ids, n, warm)
        log(f"# per-stage breakdown of pyoci: {stage_n} runs")
        raw["stages"] = stage_breakdown(rts["pyoci"], ids, base, stage_n)
        log("# import profile")
        import importprof
        # PYOCI_UNSEALED=1: create/run/exec re-execute from a sealed copy of the interpreter,
        # and `-X importtime` does not survive that re-exec; the modules are the same
        os.environ["PYOCI_UNSEALED"] = "1"
        runner = lambda argv: spawn(argv, check=False).err  # noqa: E731
        prof_run = importprof.profile(["--root", rts["pyoci"].root, "run", "--bundle",
                                       rts["pyoci"].bundles["true"], f"{prefix}-imp"],
                                      n=3 if a.quick else 10, runner=runner)
        prof_state = importprof.profile(["--root", rts["pyoci"].root, "state", "x"],
                                        n=3 if a.quick else 10, runner=runner)
        os.environ.pop("PYOCI_UNSEALED", None)
        raw["imports"] = {"run": prof_run, "state": prof_state}
        raw["rss"] = {name: rt.rss for name, rt in rts.items()}
        raw["orphan_rss_kib"] = list(REAPER.orphan_rss)
        raw["final_leaks"] = leaks(before, snapshot(base, prefix))
    finally:
        cleanup(rts, base, a.keep_tmp)
    raw["elapsed_s"] = round(time.monotonic() - t_start, 1)
    raw["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    md = render(raw)
    print(md)
    if a.md:
        with open(a.md, "w") as f:
            f.write(md + "\n")
    if a.doc:
        with open(a.doc) as f:
            doc = f.read()
        b, e = "<!-- results:begin -->", "<!-- results:end -->"
        if b in doc and e in doc:
            doc = doc[:doc.index(b) + len(b)] + "\n" + md + "\n" + doc[doc.index(e):]
            with open(a.doc, "w") as f:
                f.write(doc)
        else:
            print(f"{a.doc}: no {b} ... {e} markers; not changed", file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(raw, f, indent=1, default=str)
    return 0


def cleanup(rts, base, keep):
    for name, rt in rts.items():
        try:
            left = [c for c in os.listdir(rt.root) if not c.startswith(".")]
        except OSError:
            left = []
        for c in left:
            spawn(rt.argv("delete", "--force", c), check=False)
    # unmount anything left under base (nothing should be), then remove it
    with open("/proc/self/mountinfo") as f:
        mps = [line.split()[4] for line in f if base in line.split()[4]]
    from pyoci.linux import libc
    for mp in reversed(mps):
        try:
            libc.umount2(mp, libc.MNT_DETACH)
        except Exception as e:  # noqa: BLE001
            print(f"cleanup: umount {mp}: {e}", file=sys.stderr)
    if not keep:
        shutil.rmtree(base, ignore_errors=True)


def _med(xs):
    return statistics.median(xs) if xs else float("nan")


def targets(raw: dict) -> list[str]:
    """The targets of issue 9, each with its figure from this run and whether it is met.
    Linear: growing the count k times grows the time at most 1.5 k times (no worse than
    linear, allowing for noise); `state` of one container should not grow at all."""
    out = ["| target (issue 9) | this run | met? |", "|---|---|---|"]

    def ratio(res, key="wall"):
        return _med(res["pyoci"][key]) / _med(res["runc"][key])
    for label, key in (("(a) run: pyoci median ≤ runc median", "a"), ("(b) create+start+delete: ≤ runc", "b"),
                       ("(c) exec: ≤ runc", "c")):
        r = ratio(raw[key])
        rc = ratio(raw[key], "cpu")
        out.append(f"| {label} | ratio {r:.2f} (CPU ratio {rc:.2f}) | {'yes' if r <= 1.0 else 'NO'} |")
    allmax = max(max(v) for v in raw["rss"]["pyoci"].values())
    out.append(f"| (f) every pyoci process ≤ 30 MiB peak RSS | max {allmax / 1024:.1f} MiB | "
               f"{'yes' if allmax <= 30 * 1024 else 'NO'} |")
    counts = sorted(raw["d"], key=int)
    if len(counts) == 2:
        lo, hi = counts
        k = int(hi) / int(lo)
        g = _med(raw["d"][hi]["pyoci"]["list"]) / _med(raw["d"][lo]["pyoci"]["list"])
        gs = _med(raw["d"][hi]["pyoci"]["state"]) / _med(raw["d"][lo]["pyoci"]["state"])
        out.append(f"| (d) `list` linear in the number of containers ({lo}→{hi}, x{k:.0f}) | x{g:.2f} | "
                   f"{'yes' if g <= 1.5 * k else 'NO'} |")
        out.append(f"| (d) `state` of one container independent of their number | x{gs:.2f} | "
                   f"{'yes' if gs <= 1.5 else 'NO'} |")
    ec = sorted(raw["e"], key=int)
    if len(ec) == 2:
        lo, hi = ec
        k = int(hi) / int(lo)
        g = raw["e"][hi]["pyoci"]["total_ms"] / raw["e"][lo]["pyoci"]["total_ms"]
        gc_ = raw["e"][hi]["pyoci"]["cpu_ms"] / raw["e"][lo]["pyoci"]["cpu_ms"]
        leaks_ = [x for res in raw["e"].values() for x in res["pyoci"]["leaks"]]
        out.append(f"| (e) concurrent lifecycles linear ({lo}→{hi}, x{k:.0f}), judged on CPU time "
                   f"(wall time depends on the other tenants) | CPU x{gc_:.2f}, wall x{g:.2f} | "
                   f"{'yes' if gc_ <= 1.5 * k else 'NO'}{'' if g <= 1.5 * k else ' (wall: no)'} |")
        out.append(f"| (e) nothing leaked (state dirs, cgroups, mounts, processes) | "
                   f"{'; '.join(leaks_) or 'nothing'} | {'yes' if not leaks_ else 'NO'} |")
    return out


def summary_table(raw: dict) -> list[str]:
    """The compact table for README.md: medians, ratio pyoci/runc, target met or not."""
    def med(res, name, key="wall"):
        return _med(res[name].get(key, []))
    out = ["Summary (medians; ratio = pyoci / runc; the issue-9 target in the last column):", "",
           "| scenario | pyoci ms | runc ms | crun ms | pyoci/runc | pyoci/runc CPU | target |",
           "|---|---|---|---|---|---|---|"]
    for label, key in (("(a) run /bin/true", "a"), ("(b) create+start+delete", "b"), ("(c) exec /bin/true", "c")):
        r = raw[key]
        ratio = med(r, "pyoci") / med(r, "runc")
        rc = med(r, "pyoci", "cpu") / med(r, "runc", "cpu")
        out.append(f"| {label} | {med(r, 'pyoci'):.0f} | {med(r, 'runc'):.0f} | {med(r, 'crun'):.0f} | "
                   f"{ratio:.2f} | {rc:.2f} | ≤ 1.0: {'met' if ratio <= 1.0 else 'not met'} |")
    counts = sorted(raw["d"])
    hi = counts[-1]
    for verb in ("state", "list"):
        r = raw["d"][hi]
        ratio = med(r, "pyoci", verb) / med(r, "runc", verb)
        rc = med(r, "pyoci", f"{verb}_cpu") / med(r, "runc", f"{verb}_cpu")
        lin = ""
        if len(counts) == 2:
            g = med(raw["d"][hi], "pyoci", verb) / med(raw["d"][counts[0]], "pyoci", verb)
            k = hi / counts[0]
            lin = (f"time x{g:.2f} from {counts[0]} to {hi} containers: "
                   + ("independent of the count" if verb == "state" else f"linear or better (≤ x{k:.0f})")
                   if (g <= 1.5 if verb == "state" else g <= 1.5 * k) else
                   f"time x{g:.2f} from {counts[0]} to {hi}: NOT linear")
        out.append(f"| (d) {verb} with {hi} containers | {med(r, 'pyoci', verb):.0f} | {med(r, 'runc', verb):.0f} | "
                   f"{med(r, 'crun', verb):.0f} | {ratio:.2f} | {rc:.2f} | {lin} |")
    ec = sorted(raw["e"])
    e = raw["e"][ec[-1]]
    lk = [x for res in raw["e"].values() for x in res["pyoci"]["leaks"]]
    gcpu = (e["pyoci"]["cpu_ms"] / raw["e"][ec[0]]["pyoci"]["cpu_ms"]) if len(ec) == 2 else float("nan")
    out.append(f"| (e) {ec[-1]} lifecycles, 8 workers (total) | {e['pyoci']['total_ms']:.0f} | "
               f"{e['runc']['total_ms']:.0f} | {e['crun']['total_ms']:.0f} | "
               f"{e['pyoci']['total_ms'] / e['runc']['total_ms']:.2f} | "
               f"{e['pyoci']['cpu_ms'] / e['runc']['cpu_ms']:.2f} | linear (CPU x{gcpu:.2f} for x{ec[-1] / ec[0]:.0f}); "
               f"leaks: {'none' if not lk else '; '.join(lk)} |")
    allmax = max(max(v) for v in raw["rss"]["pyoci"].values())
    rmax = max(max(v) for v in raw["rss"]["runc"].values())
    cmax = max(max(v) for v in raw["rss"]["crun"].values())
    out.append(f"| (f) peak RSS, max of every invocation | {allmax / 1024:.1f} MiB | {rmax / 1024:.1f} MiB | "
               f"{cmax / 1024:.1f} MiB | | | ≤ 30 MiB: {'met' if allmax <= 30 * 1024 else 'not met'} |")
    return out


def render(raw: dict) -> str:
    """Markdown for docs/benchmarks.md (also works on a --json file read back: int keys)."""
    raw = dict(raw, d={int(k): v for k, v in raw["d"].items()}, e={int(k): v for k, v in raw["e"].items()})
    m = raw["machine"]
    L = []
    L.append(f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB RAM, kernel {m['kernel']}, "
             f"Python {m['python']}; load average {' '.join(m['loadavg_start'])} at start, "
             f"{' '.join(m.get('loadavg_end', []))} at end (the machine is shared).")
    L.append(f"Date: {m['date']}; {raw['n']} alternating runs per scenario after {raw['warmup']} warm-up, "
             f"whole run {raw.get('elapsed_s', '?')} s.")
    L.append(f"Versions: {m['pyoci']} (tree: git {m.get('git', '?')}) | {m['runc']} | {m['crun']}")
    L.append("")
    L.extend(summary_table(raw))
    L.append("")
    L.append("Wall time in ms: median (min–max). Ratio = pyoci median / runc median. "
             "CPU = median user+sys ms of the invocation(s) incl. reaped children, pyoci / runc / crun.")
    L.append("")
    L.append("| scenario | pyoci | runc | crun | ratio pyoci/runc | CPU ms | target (ratio) |")
    L.append("|---|---|---|---|---|---|---|")
    row, ra = fmt_row("(a) run /bin/true", raw["a"], target=1.0)
    L.append(row)
    row, rb = fmt_row("(b) create+start+delete", raw["b"], target=1.0)
    L.append(row)
    for part in ("create", "start", "delete"):
        row, _ = fmt_row(f"  (b) {part} alone", {k: {"wall": v[part]} for k, v in raw["b"].items()})
        L.append(row)
    row, rc = fmt_row("(c) exec /bin/true", raw["c"], target=1.0)
    L.append(row)
    for count, res in raw["d"].items():
        row, _ = fmt_row(f"(d) state, {count} containers", res, key="state")
        L.append(row)
        row, _ = fmt_row(f"(d) list, {count} containers", res, key="list")
        L.append(row)
    L.append("")
    # (d) linearity
    counts = sorted(raw["d"])
    if len(counts) == 2:
        lo, hi = counts
        L.append(f"(d) scaling from {lo} to {hi} containers (x{hi / lo:.0f}); `list` median grows by: " + ", ".join(
            f"{name} x{statistics.median(raw['d'][hi][name]['list']) / statistics.median(raw['d'][lo][name]['list']):.2f}"
            for name in RUNTIMES) + "; `state` of one container by: " + ", ".join(
            f"{name} x{statistics.median(raw['d'][hi][name]['state']) / statistics.median(raw['d'][lo][name]['state']):.2f}"
            for name in RUNTIMES) + f". Containers listed at the end: {raw['d_listed']}.")
        L.append("")
    L.extend(targets(raw))
    L.append("")
    L.append("| (e) concurrent create+start+delete, 8 workers | pyoci | runc | crun | ratio pyoci/runc | CPU s pyoci / runc / crun | leaks |")
    L.append("|---|---|---|---|---|---|---|")
    for count, res in raw["e"].items():
        cells = [f"{count} containers, total ms"]
        for name in RUNTIMES:
            r = res[name]
            cells.append(f"{r['total_ms']:.0f}" + (f" ({len(r['errors'])} errors)" if r["errors"] else ""))
        cells.append(f"{res['pyoci']['total_ms'] / res['runc']['total_ms']:.2f}")
        cells.append(" / ".join(f"{res[name].get('cpu_ms', 0) / 1000:.2f}" for name in RUNTIMES))
        lk = "; ".join(f"{name}: {', '.join(res[name]['leaks'])}" for name in RUNTIMES if res[name]["leaks"])
        cells.append(lk or "none (state dirs, cgroups, mounts, processes)")
        L.append("| " + " | ".join(cells) + " |")
    ec = sorted(raw["e"])
    if len(ec) == 2:
        lo, hi = ec
        L.append("")
        L.append(f"(e) scaling from {lo} to {hi} containers (x{hi / lo:.0f}): " + ", ".join(
            f"{name} x{raw['e'][hi][name]['total_ms'] / raw['e'][lo][name]['total_ms']:.2f}" for name in RUNTIMES) + ".")
    errs = [e for res in raw["e"].values() for r in res.values() for e in r["errors"]]
    if errs:
        L.append("")
        L.append("(e) errors: " + "; ".join(errs[:5]))
    L.append("")
    # (f) RSS
    L.append("| (f) peak RSS (ru_maxrss, MiB) per verb | pyoci median | pyoci max | runc max | crun max |")
    L.append("|---|---|---|---|---|")
    allmax = 0
    for verb in sorted(raw["rss"]["pyoci"]):
        xs = raw["rss"]["pyoci"][verb]
        allmax = max(allmax, max(xs))
        cells = [verb, f"{statistics.median(xs) / 1024:.1f}", f"{max(xs) / 1024:.1f}"]
        for name in ("runc", "crun"):
            ys = raw["rss"][name].get(verb)
            cells.append(f"{max(ys) / 1024:.1f}" if ys else "–")
        L.append("| " + " | ".join(cells) + " |")
    orph = raw["orphan_rss_kib"]
    L.append("")
    L.append(f"Every pyoci invocation ({sum(len(v) for v in raw['rss']['pyoci'].values())} of them): peak RSS max "
             f"{allmax / 1024:.1f} MiB — target ≤ 30 MiB: {'met' if allmax <= 30 * 1024 else 'NOT met'}. "
             f"wait4 of an invocation covers the processes it reaped (pyoci's intermediate child); the container "
             f"init is reaped by this benchmark (subreaper) and its ru_maxrss includes its pre-exec (Python) life: "
             f"max over all {len(orph)} reaped inits (all runtimes) {max(orph) / 1024 if orph else 0:.1f} MiB.")
    L.append("")
    # startup
    L.append("| start-up (no container work) | wall median (min) ms | CPU median ms | peak RSS MiB |")
    L.append("|---|---|---|---|")
    for label, r in raw["startup"].items():
        L.append(f"| {label} | {r['wall']['median']:.1f} ({r['wall']['min']:.1f}) | {r['cpu']['median']:.1f} | "
                 f"{r['maxrss_kib'] / 1024:.1f} |")
    L.append("")
    # launcher experiment
    if raw.get("launcher"):
        L.append("Experiment, same run: pyoci's console script vs `benchmarks/fast_launcher.py` (same pyoci code; "
                 "`python -I -S`, gc disabled during the call, os._exit at the end), alternating, both with "
                 "PYOCI_UNSEALED=1 (no sealed re-exec, see R12), and the console script with its default "
                 "sealed re-exec of create/run/exec for comparison; median ms:")
        L.append("")
        L.append("| entry point | run wall | run CPU | state (missing id) wall | state CPU |")
        L.append("|---|---|---|---|---|")
        for label, d in raw["launcher"].items():
            L.append(f"| {label} | " + " | ".join(f"{statistics.median(d[k]):.1f}" for k in
                                                 ("run wall", "run cpu", "state wall", "state cpu")) + " |")
        L.append("")
    # stages
    st = raw["stages"]
    L.append(f"Per-stage timings of pyoci (`--debug --log F --log-format json`; median (min) ms over "
             f"{st['walls']['run']['n']} runs; nested stages are indented under the stage that contains them; "
             f"stages of the intermediate/init children run while the parent waits):")
    L.append("")
    L.append("| stage | run (a) | create/start (b) |")
    L.append("|---|---|---|")
    order = ["validate", "plan", "fork", "namespaces", "cgroup", "rootfs.prepare", "parent-setup",
             "rootfs.pivot", "process", "create", "create.total", "start"]
    names = sorted({k.split(":", 1)[1] for k in st["stages"]}, key=lambda x: order.index(x) if x in order else 99)
    for name in names:
        cells = [name if name in ("create.total", "start", "validate", "plan", "create") else f"  {name}"]
        for pre in ("run", "lifecycle"):
            s = st["stages"].get(f"{pre}:{name}")
            cells.append(f"{s['median']:.2f} ({s['min']:.2f})" if s and s["n"] else "–")
        L.append("| " + " | ".join(cells) + " |")
    w = st["walls"]
    L.append(f"| whole invocation (wall, with --debug) | {w['run']['median']:.1f} | create {w['create']['median']:.1f}, "
             f"start {w['start']['median']:.1f}, delete {w['delete']['median']:.1f} |")
    L.append("")
    # composition of (a)
    try:
        whole = w["run"]["median"]
        py = raw["startup"]["python -c pass"]["wall"]["median"]
        imp = (raw["imports"]["run"]["total_us"] - raw["imports"]["run"]["startup_us"]) / 1000
        ct = st["stages"]["run:create.total"]["median"]
        sta = st["stages"]["run:start"]["median"]
        sealed = 0.0
        lx = raw.get("launcher") or {}
        if "console script, sealed re-exec (the default)" in lx and "console script" in lx:
            sealed = max(0.0, statistics.median(lx["console script, sealed re-exec (the default)"]["run wall"])
                         - statistics.median(lx["console script"]["run wall"]))
        rest = whole - py - imp - ct - sta - sealed
        L.append("Where the time of one `pyoci run` (a) goes (medians of the --debug runs; imports: sum of min "
                 "self times, so the split is approximate):")
        L.append("")
        L.append("| part | ms | share |")
        L.append("|---|---|---|")
        for label, v in (("interpreter start-up (`python -c pass`)", py),
                         ("the sealed re-exec: a second interpreter start-up (launcher experiment: sealed − "
                          "unsealed `run`)", sealed),
                         ("imports of pyoci and the stdlib modules it needs", imp),
                         ("create: validate, plan, fork, namespaces, cgroup, rootfs, process, exec gate "
                          "(`create.total`)", ct),
                         ("start: release the exec gate (`start`)", sta),
                         ("the rest: /bin/true runs and exits, reaping, delete (cgroup kill + rmdir, state "
                          "removal), interpreter exit", rest)):
            L.append(f"| {label} | {v:.1f} | {100 * v / whole:.0f}% |")
        L.append(f"| whole `run` with --debug | {whole:.1f} | 100% |")
        L.append("")
    except (KeyError, ZeroDivisionError, TypeError):
        pass
    # imports
    for key in ("run", "state"):
        p = raw["imports"][key]
        L.append(f"Imports of `pyoci {key}` (min self time over {p['runs']} runs of `-X importtime`): "
                 f"{p['total_us'] / 1000:.1f} ms in {len(p['modules'])} modules, of which interpreter start-up "
                 f"{p['startup_us'] / 1000:.1f} ms. Largest importers (ms, what they pull in):")
        L.append("")
        rows = sorted(p["by_importer"].items(), key=lambda kv: -sum(us for _, us in kv[1]))[:10]
        for importer, mods in rows:
            tot = sum(us for _, us in mods)
            others = [(m_, us) for m_, us in mods if m_ != importer][:6]
            L.append(f"- `{importer}` {tot / 1000:.1f} ms" + (": " + ", ".join(
                f"{m_} {us / 1000:.1f}" for m_, us in others) if others else ""))
        L.append("")
    if raw.get("final_leaks"):
        L.append("LEAKS at the end: " + "; ".join(raw["final_leaks"]))
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
