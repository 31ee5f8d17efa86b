"""cProfile of `python -m pyoci run` (parent process only), robust to a noisy machine.

    benchmarks/cprofile_run.py [-n 12] [--top 40] [--verb run|create]

Runs the command N times under cProfile in the benchmark's set-up (private mount namespace,
cgroup2, tmpfs, busybox bundle) and prints, per function, the MINIMUM cumulative and own
time over the runs (the cost without preemption), sorted by cumulative time. Root only.
The children (intermediate, init) are forks and are not profiled: see the --debug stage lines
for them (bench.py's per-stage table).
"""
from __future__ import annotations

import argparse
import os
import pstats
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=12)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--verb", choices=("run", "create"), default="run")
    a = ap.parse_args()
    import subprocess
    subprocess.run([bench.VENV_PY, "-m", "compileall", "-q", os.path.join(bench.REPO, "runtime", "pyoci")],
                   check=True, stdout=subprocess.DEVNULL)
    bench.enter_private_v2_namespace()
    base = bench.BASE = tempfile.mkdtemp(prefix="pyoci-cprof-")
    from pyoci.linux import libc
    libc.mount("tmpfs", base, "tmpfs", 0, "mode=0700,size=1g")
    bench.HELPER = bench.build_helper(base)
    bench.REAPER = bench.Reaper()
    rt = bench.RT("pyoci", base)
    best: dict[str, list[float]] = {}
    totals = []
    try:
        bench.make_bundles(base, {"pyoci": rt})
        ids = bench.Ids("cp")
        for i in range(a.n):
            out = os.path.join(base, f"prof{i}.out")
            cid = ids("r")
            bench.spawn([bench.VENV_PY, "-m", "cProfile", "-o", out, "-m", "pyoci", "--root", rt.root,
                         a.verb, "--bundle", rt.bundles["true"], cid])
            if a.verb == "create":
                bench.spawn(rt.argv("delete", "--force", cid))
            st = pstats.Stats(out)
            totals.append(st.total_tt * 1000)
            for (fn, line, name), (_cc, _nc, tt, ct, _callers) in st.stats.items():
                name = re.sub(r" at 0x[0-9a-f]+", "", name)   # the same builtin in every run
                key = f"{os.path.relpath(fn, bench.REPO) if fn.startswith(bench.REPO) else os.path.basename(fn)}:{line}({name})"
                cur = best.get(key)
                if cur is None:
                    best[key] = [ct * 1000, tt * 1000]
                else:
                    cur[0] = min(cur[0], ct * 1000)
                    cur[1] = min(cur[1], tt * 1000)
    finally:
        bench.cleanup({"pyoci": rt}, base, False)
    totals.sort()
    print(f"cProfile of `pyoci {a.verb}` over {a.n} runs: total min {totals[0]:.1f} ms, "
          f"median {totals[len(totals) // 2]:.1f} ms (profiler overhead included)")
    print(f"{'min cum ms':>10} {'min own ms':>10}  function")
    for key, (ct, tt) in sorted(best.items(), key=lambda kv: -kv[1][0])[:a.top]:
        print(f"{ct:10.2f} {tt:10.2f}  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
