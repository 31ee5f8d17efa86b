"""python -m conformance --runtime PATH [--only spec#N,...] [--report FILE] [--json FILE]

Runs the catalogue against a runc-style runtime, black-box, in a private mount and network
namespace with cgroup2 at /sys/fs/cgroup, and prints one row per item and a last line
`N passed, M failed, K skipped`.

Other modes:
  --make-report FILE RESULTS.json...   write the markdown report from saved runs
  --compare-report FILE --runtime PATH [--name NAME]
                                       exit 1 if an item that passes for NAME in FILE fails now
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import report
from .catalogue import ITEMS, load_checks
from .harness import CGROUP_ROOT, Ctx, Fail, Skip, build_probe, build_rootfs_template

NS_ENV = "CONFORMANCE_IN_NS"
CHECK_TIMEOUT = 120


def parse_only(text: str | None) -> list[int] | None:
    if not text:
        return None
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        part = part.removeprefix("spec#")
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi.removeprefix("spec#")) + 1))
        else:
            out.append(int(part))
    bad = [n for n in out if n not in ITEMS]
    if bad:
        raise SystemExit(f"--only: no such item: {', '.join('spec#%d' % b for b in bad)}")
    return out


def _is_cgroup2(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[4] == path and fields[sep + 1] == "cgroup2":
                return True
    return False


def enter_namespace(argv: list[str]) -> None:
    """Re-exec into private mount+net namespaces; mount cgroup2 at /sys/fs/cgroup (never touching v1)."""
    if os.environ.get(NS_ENV) == "1":
        if not _is_cgroup2(CGROUP_ROOT):
            subprocess.run(["mount", "-t", "cgroup2", "none", CGROUP_ROOT], check=True, timeout=30)
        subprocess.run(["ip", "link", "set", "lo", "up"], timeout=30, capture_output=True)
        return
    if os.geteuid() != 0:
        raise SystemExit("conformance: must run as root (it creates containers)")
    env = dict(os.environ, **{NS_ENV: "1"})
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = ["unshare", "--mount", "--net", "--propagation", "private", "--",
           sys.executable, "-m", "conformance", *argv]
    os.execvpe("unshare", cmd, env)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _cgroup_names() -> set[str]:
    """cgroups named like our container ids (cf-*), at the v2 root or one level down (e.g. /pyoci/cf-x)."""
    out = set()
    root = Path(CGROUP_ROOT)
    for d in root.iterdir():
        if not d.is_dir():
            continue
        if d.name.startswith("cf-"):
            out.add(d.name)
        else:
            with contextlib.suppress(OSError):
                out.update(f"{d.name}/{e.name}" for e in d.iterdir() if e.is_dir() and e.name.startswith("cf-"))
    return out


def _sweep_cgroups(before: set[str]) -> list[str]:
    """Remove cf-* cgroups that a runtime left behind during a check (they are named after our ids)."""
    leaked = []
    for name in sorted(_cgroup_names() - before):
        base = Path(CGROUP_ROOT) / name
        for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [base]:
            with contextlib.suppress(OSError):
                d.rmdir()
        leaked.append(name)
    return leaked


@contextlib.contextmanager
def workspace():
    """A private shared tmpfs with the compiled probe and the busybox rootfs template."""
    base = Path(tempfile.mkdtemp(prefix="conformance-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "conformance", str(base)], check=True, timeout=30)
    subprocess.run(["mount", "--make-shared", str(base)], check=True, timeout=30)
    try:
        probe = build_probe(base)
        yield base, build_rootfs_template(base, probe)
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["umount", "-R", "-l", str(base)], timeout=60, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _sweep_processes(work: Path) -> list[int]:
    """Kill processes whose root directory lies in this run's bundles (containers nobody deleted)."""
    killed = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            root = os.readlink(f"/proc/{d}/root")
        except OSError:
            continue
        if root.startswith(str(work) + "/"):
            with contextlib.suppress(OSError):
                os.kill(int(d), signal.SIGKILL)
                killed.append(int(d))
    return killed


def run_items(runtime: str, items: list[int], verbose: bool = False, out=sys.stdout, ws=None) -> dict:
    load_checks()
    if ws is None:
        with workspace() as ws:
            return run_items(runtime, items, verbose, out, ws)
    base, template = ws
    results: dict[str, dict] = {}
    counts = {"pass": 0, "fail": 0, "skip": 0}
    work = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    os.chmod(work, 0o755)  # user-namespace containers must be able to reach their rootfs
    try:
        ctx = Ctx(runtime, work, template)
        version = ctx.rt.version()
        print(f"runtime: {runtime} ({version})", file=out)
        print(f"{'item':<9} {'level':<18} {'result':<6} detail", file=out)
        signal.signal(signal.SIGALRM, _alarm)
        cg_before = _cgroup_names()
        for n in items:
            it = ITEMS[n]
            t0 = time.monotonic()
            if it.check is None:
                res, detail = "skip", f"not checkable here: {it.reason}"
            else:
                signal.alarm(CHECK_TIMEOUT)
                res, detail = "fail", "interrupted"
                try:
                    note = it.check(ctx)
                    res, detail = "pass", note or ""
                except Fail as e:
                    res, detail = "fail", str(e)
                except Skip as e:
                    res, detail = "skip", str(e)
                except _Timeout:
                    res, detail = "fail", f"check did not finish within {CHECK_TIMEOUT}s"
                except Exception as e:  # noqa: BLE001 - a broken check is reported, not fatal
                    res, detail = "fail", f"check error: {type(e).__name__}: {e}"
                    if verbose:
                        traceback.print_exc()
                finally:
                    signal.alarm(0)
                    ctx.run_cleanups()
                    leaked = _sweep_cgroups(cg_before)
                    if leaked:
                        detail += f" [the runtime left cgroups behind, removed by the runner: {leaked}]"
                    left = _sweep_processes(work)
                    if left:
                        detail += f" [processes left running in test bundles, killed by the runner: {left}]"
            counts[res] += 1
            detail = " ".join(detail.split())
            results[str(n)] = {"result": res, "detail": detail[:400]}
            shown = detail if len(detail) <= 110 or verbose else detail[:107] + "..."
            print(f"spec#{n:<4} {it.level[:18]:<18} {res.upper():<6} {shown}"
                  + (f"  [{time.monotonic() - t0:.1f}s]" if verbose else ""), file=out, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped", file=out, flush=True)
    return {"runtime": runtime, "version": version, "date": datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%d %H:%M UTC"), "results": results, "counts": counts}


def run_mutants(a, argv) -> int:
    from .mutant import TARGETS
    names = sorted(TARGETS) if a.mutants == "all" else a.mutants.split(",")
    for n in names:
        if n not in TARGETS:
            raise SystemExit(f"--mutants: no mutant {n!r}")
    enter_namespace(argv)
    wrapper = str(Path(__file__).resolve().parent / "wrappers" / "mutant-runc")
    os.environ["CONFORMANCE_PYTHON"] = sys.executable
    out: dict[str, dict] = {}
    caught = missed = 0
    with workspace() as ws:
        for name in names:
            os.environ["CONFORMANCE_MUTANT"] = name
            buf = io.StringIO()
            run = run_items(wrapper, TARGETS[name], out=buf, ws=ws)
            res = {n: e["result"] for n, e in run["results"].items()}
            out[name] = {"targets": TARGETS[name], "results": res,
                         "details": {n: e["detail"] for n, e in run["results"].items()}}
            failed = [n for n, r in res.items() if r == "fail"]
            passed = [n for n, r in res.items() if r != "fail"]
            caught += len(failed)
            missed += len(passed)
            print(f"{name:<28} caught by: {', '.join('spec#' + n for n in failed) or '-'}"
                  + (f"   NOT caught by: {', '.join('spec#' + n for n in passed)}" if passed else ""), flush=True)
    os.environ.pop("CONFORMANCE_MUTANT", None)
    print(f"{caught} checks failed against their mutant, {missed} did not")
    if a.json:
        Path(a.json).write_text(json.dumps({"runtime": "conformance/wrappers/mutant-runc over /usr/sbin/runc",
                                            "mutants": out}, indent=1, sort_keys=True) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m conformance", description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", help="path of the runtime binary or wrapper script")
    ap.add_argument("--name", help="column name for the report (default: the runtime's basename)")
    ap.add_argument("--only", help="comma-separated items, e.g. spec#13,spec#20-25")
    ap.add_argument("--json", help="write the results as JSON to this file")
    ap.add_argument("--report", help="write a markdown report of this run (plus --with results) to this file")
    ap.add_argument("--with", dest="with_", action="append", default=[],
                    help="another run's JSON results to put in the --report (repeatable)")
    ap.add_argument("--make-report", nargs="+", metavar=("FILE", "RESULTS"),
                    help="write the markdown report FILE from saved JSON results, without running anything")
    ap.add_argument("--compare-report", metavar="FILE",
                    help="fail when an item that passes for --name in FILE does not pass now")
    ap.add_argument("--list", action="store_true", help="print the catalogue and exit")
    ap.add_argument("--mutants", nargs="?", const="all", metavar="NAMES",
                    help="run each check against conformance/wrappers/mutant-runc with the mutants that target "
                         "it (comma-separated names, default all); --json saves which items each mutant broke")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)

    if a.list:
        load_checks()
        for n, it in sorted(ITEMS.items()):
            kind = (f"check {it.check.__name__}; fails on: {it.fails_on}"
                    + (f"; mutants: {', '.join(it.mutants)}" if it.mutants else "")
                    if it.check else f"n/a: {it.reason}")
            print(f"spec#{n:<4} {it.level:<18} {it.text}  [{kind}]")
        return 0
    if a.make_report:
        if len(a.make_report) < 2:
            ap.error("--make-report FILE RESULTS.json...")
        docs = [json.loads(Path(p).read_text()) for p in a.make_report[1:]]
        runs = [d for d in docs if "results" in d]
        mutants = next((d for d in docs if "mutants" in d), None)
        report.write(a.make_report[0], runs, mutants)
        print(f"wrote {a.make_report[0]}")
        return 0
    if a.mutants:
        return run_mutants(a, argv)
    if not a.runtime:
        ap.error("--runtime is required")
    runtime = shutil.which(a.runtime) or a.runtime
    runtime = str(Path(runtime).resolve()) if os.path.exists(runtime) else runtime
    name = a.name or Path(runtime).name
    only = parse_only(a.only)

    baseline = None
    if a.compare_report:
        baseline = report.passing_items(a.compare_report, name)
        if only is None:
            only = sorted(baseline)

    # argument checks done: now move into the private namespaces
    enter_namespace(argv)
    items = only if only is not None else sorted(ITEMS)
    run = run_items(runtime, items, verbose=a.verbose)
    run["name"] = name
    if a.json:
        Path(a.json).write_text(json.dumps(run, indent=1, sort_keys=True) + "\n")
    if a.report:
        docs = [json.loads(Path(p).read_text()) for p in a.with_]
        report.write(a.report, [run] + [d for d in docs if "results" in d], next((d for d in docs if "mutants" in d), None))
    if baseline is not None:
        regressed = [n for n in sorted(baseline) if run["results"].get(str(n), {}).get("result") != "pass"]
        if regressed:
            # one retry, so a single slow moment on a busy CI machine is not reported as a regression
            print(f"retrying once: {', '.join(f'spec#{n}' for n in regressed)}")
            again = run_items(runtime, regressed, verbose=a.verbose)
            regressed = [n for n in regressed if again["results"].get(str(n), {}).get("result") != "pass"]
        if regressed:
            print(f"REGRESSION: {len(regressed)} item(s) pass for {name} in {a.compare_report} but not now: "
                  + ", ".join(f"spec#{n}" for n in regressed))
            return 1
        print(f"no regression against {a.compare_report}: all {len(baseline)} items that passed for {name} pass")
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
