"""A/B: pyoci as it is vs pyoci with a patch applied, alternating, same namespace and tmpfs.

    benchmarks/ab.py --patch FILE [-n 20]

The patch is applied to a temporary copy of runtime/ (never to the working tree); both
variants run as `.venv/bin/python -m pyoci` (B with PYTHONPATH pointing at the copy), each
measured by rusage_exec (wall, CPU user+sys, peak RSS): `run` of /bin/true, then `create`,
`state`, `start`, (wait for the exit), `delete`; then `exec /bin/true` into one running
container. Prints median and min per command and the
median difference. Root only (same set-up as bench.py).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patch", required=True, help="a patch against the tree (git diff output)")
    ap.add_argument("-n", type=int, default=20)
    a = ap.parse_args()
    copy = tempfile.mkdtemp(prefix="pyoci-ab-tree-")
    shutil.copytree(os.path.join(bench.REPO, "runtime"), os.path.join(copy, "runtime"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    # spec.py finds oci-schemas/ next to runtime/
    shutil.copytree(os.path.join(bench.REPO, "oci-schemas"), os.path.join(copy, "oci-schemas"))
    subprocess.run(["git", "apply", os.path.abspath(a.patch)], cwd=copy, check=True)
    subprocess.run([bench.VENV_PY, "-m", "compileall", "-q", os.path.join(copy, "runtime", "pyoci")],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([bench.VENV_PY, "-m", "compileall", "-q", os.path.join(bench.REPO, "runtime", "pyoci")],
                   check=True, stdout=subprocess.DEVNULL)
    bench.enter_private_v2_namespace()
    base = bench.BASE = tempfile.mkdtemp(prefix="pyoci-ab-")
    from pyoci.linux import libc
    libc.mount("tmpfs", base, "tmpfs", 0, "mode=0700,size=1g")
    bench.HELPER = bench.build_helper(base)
    bench.REAPER = bench.Reaper()
    rt = bench.RT("pyoci", base)
    res: dict = {}
    try:
        bench.make_bundles(base, {"pyoci": rt})
        ids = bench.Ids("ab")
        for i in range(a.n + 2):
            for variant in ("as is", "patched"):
                if variant == "patched":
                    os.environ["PYTHONPATH"] = os.path.join(copy, "runtime")
                else:
                    os.environ.pop("PYTHONPATH", None)
                cmd = [bench.VENV_PY, "-m", "pyoci", "--root", rt.root]
                m = {"run": bench.spawn(cmd + ["run", "--bundle", rt.bundles["true"], ids("a")])}
                cid = ids("b")
                pf = os.path.join(base, cid + ".pid")
                m["create"] = bench.spawn(cmd + ["create", "--bundle", rt.bundles["true"], "--pid-file", pf, cid])
                m["state"] = bench.spawn(cmd + ["state", cid])
                m["start"] = bench.spawn(cmd + ["start", cid])
                bench.wait_init_exit(pf)
                m["delete"] = bench.spawn(cmd + ["delete", cid])
                os.unlink(pf)
                if i >= 2:
                    for k, r in m.items():
                        res.setdefault((k, "CPU", variant), []).append(r.cpu_ms)
                        res.setdefault((k, "wall", variant), []).append(r.wall_ms)
        # exec into one running container (made by the tree as is; the state format is shared)
        os.environ.pop("PYTHONPATH", None)
        cmd = [bench.VENV_PY, "-m", "pyoci", "--root", rt.root]
        cid = ids("c")
        bench.spawn(cmd + ["run", "-d", "--bundle", rt.bundles["sleep"], cid])
        for i in range(a.n + 2):
            for variant in ("as is", "patched"):
                if variant == "patched":
                    os.environ["PYTHONPATH"] = os.path.join(copy, "runtime")
                else:
                    os.environ.pop("PYTHONPATH", None)
                r = bench.spawn(cmd + ["exec", cid, "/bin/true"])
                if i >= 2:
                    res.setdefault(("exec", "CPU", variant), []).append(r.cpu_ms)
                    res.setdefault(("exec", "wall", variant), []).append(r.wall_ms)
        os.environ.pop("PYTHONPATH", None)
        bench.spawn(cmd + ["delete", "--force", cid])
    finally:
        os.environ.pop("PYTHONPATH", None)
        bench.cleanup({"pyoci": rt}, base, False)
        shutil.rmtree(copy, ignore_errors=True)
    print(f"A/B over {a.n} alternating rounds, patch {os.path.relpath(a.patch)}; ms, median (min)")
    print("| command | measure | as is | patched | difference of medians |")
    print("|---|---|---|---|---|")
    for measure in ("CPU", "wall"):
        for k in ("run", "create", "state", "start", "delete", "exec"):
            o, p = res[(k, measure, "as is")], res[(k, measure, "patched")]
            print(f"| {k} | {measure} | {statistics.median(o):.1f} ({min(o):.1f}) | "
                  f"{statistics.median(p):.1f} ({min(p):.1f}) | {statistics.median(p) - statistics.median(o):+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
