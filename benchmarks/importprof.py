"""Import-time profile of a pyoci command, robust to a noisy machine.

Runs `python -X importtime -m pyoci ARGS...` N times and keeps, for every module, the
MINIMUM self time over the runs (the cost without preemption). Prints:

* the total (sum of minimum self times) and the interpreter start-up share;
* every pyoci module with the stdlib/third-party modules it pulled in first (the cost it
  is "responsible" for), so a report can say "plan.py imports dataclasses: N ms".

Usage: benchmarks/importprof.py [-n N] [--json] [--cwd DIR] -- pyoci-args...
(the command must be cheap to repeat: `state x`, `--version`, or a full `run` inside the
benchmark's namespace, see bench.py which calls profile()).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PY = os.path.join(REPO, ".venv", "bin", "python")


def parse_importtime(text: str) -> list[tuple[str, int, int, int]]:
    """-> [(module, self_us, cumulative_us, depth)] in output (post-)order."""
    out = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        try:
            _, rest = line.split(":", 1)
            s, c, name = rest.split("|", 2)
            depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
            out.append((name.strip(), int(s), int(c), depth))
        except ValueError:
            continue
    return out


def attribute(rows: list[tuple[str, int, int, int]]) -> dict[str, str]:
    """module -> nearest pyoci ancestor that imported it (or '<startup>' / '<toplevel>')."""
    # importtime prints children before their parent, parent at depth-1. Rebuild parents.
    parent: dict[str, str | None] = {}
    pending: dict[int, list[str]] = {}
    for name, _s, _c, depth in rows:
        for child in pending.pop(depth + 1, []):
            parent[child] = name
        pending.setdefault(depth, []).append(name)
    for lst in pending.values():
        for child in lst:
            parent.setdefault(child, None)
    owner = {}
    for name in parent:
        p = name
        while p is not None and not p.startswith("pyoci"):
            p = parent.get(p)
        owner[name] = p or "<no pyoci importer>"
    return owner


def _subprocess_runner(cmd: list[str], cwd=None) -> str:
    import tempfile
    with tempfile.TemporaryFile() as err:   # a file, not a pipe: a container may inherit it
        subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        err.seek(0)
        return err.read().decode(errors="replace")


def profile(argv: list[str], n: int = 15, cwd=None, python: str = PY, runner=None) -> dict:
    """Run `python -X importtime -m pyoci argv` n times; return the min-self-time profile.
    `runner(cmd) -> stderr text` runs one command (default: subprocess)."""
    best: dict[str, int] = {}
    order: list[tuple[str, int, int, int]] = []
    for _ in range(n):
        cmd = [python, "-X", "importtime", "-m", "pyoci", *argv]
        err = runner(cmd) if runner else _subprocess_runner(cmd, cwd=cwd)
        rows = parse_importtime(err)
        if not order:
            order = rows
        for name, s, _c, _d in rows:
            best[name] = min(best.get(name, s), s)
    owner = attribute(order)
    startup_mods = set()
    for name, _s, _c, _d in order:   # modules imported before pyoci's first line = interpreter start-up
        if name == "pyoci":
            break
        startup_mods.add(name)
    by_owner: dict[str, list[tuple[str, int]]] = {}
    for name, _s, _c, _d in order:
        key = "<interpreter start-up + runpy>" if name in startup_mods else owner[name]
        by_owner.setdefault(key, []).append((name, best.get(name, 0)))
    return {
        "argv": argv, "runs": n,
        "total_us": sum(best.values()),
        "startup_us": sum(best[m] for m in startup_mods if m in best),
        "modules": [name for name, *_ in order],
        "by_importer": {k: sorted(v, key=lambda x: -x[1]) for k, v in by_owner.items()},
    }


def render(prof: dict, top: int = 8) -> str:
    lines = [f"import profile of `pyoci {' '.join(prof['argv'])}` (min self time over {prof['runs']} runs)",
             f"  all imports: {prof['total_us'] / 1000:.1f} ms, {len(prof['modules'])} modules; "
             f"interpreter start-up imports: {prof['startup_us'] / 1000:.1f} ms"]
    rows = sorted(prof["by_importer"].items(), key=lambda kv: -sum(us for _, us in kv[1]))
    for importer, mods in rows:
        tot = sum(us for _, us in mods)
        own = dict(mods).get(importer, 0)
        lines.append(f"  {importer:34s} {tot / 1000:6.2f} ms  (own code {own / 1000:.2f} ms; "
                     f"{len(mods)} modules)")
        others = [(m, us) for m, us in mods if m != importer][:top]
        if others:
            lines.append("      " + ", ".join(f"{m} {us / 1000:.2f}" for m, us in others))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--cwd")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    prof = profile(a.args or ["state", "x"], n=a.n, cwd=a.cwd)
    print(json.dumps(prof, indent=1) if a.json else render(prof))
    return 0


if __name__ == "__main__":
    sys.exit(main())
