"""In-process cost of pyoci's pure-Python steps (min and median over N calls, in ms).

    .venv/bin/python benchmarks/micro.py [BUNDLE]

No root needed, nothing is launched: config loading and validation, the launch plan, the
device BPF program, state saves (on the given dir's filesystem and on /dev/shm), the
--debug plan dump. Used to tell the integrator which stage costs what without the noise
of process start-up (see docs/benchmarks.md).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time


def bench(fn, n=200):
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - t) * 1000)
    return min(xs), statistics.median(xs)


def main() -> int:
    from pyoci import spec, state as st
    from pyoci.plan import Options, build_plan
    from pyoci.specgen import default_config, make_busybox_rootfs
    tmp = tempfile.mkdtemp(prefix="pyoci-micro-")
    try:
        bundle = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tmp, "bundle")
        if len(sys.argv) <= 1:
            os.makedirs(bundle)
            make_busybox_rootfs(os.path.join(bundle, "rootfs"))
            with open(os.path.join(bundle, "config.json"), "w") as f:
                json.dump(default_config(["/bin/true"], terminal=False), f)
        cfg, warnings = spec.load_bundle_config(bundle)
        opts = Options(container_id="m1", bundle=bundle, root_dir=os.path.join(tmp, "root"))
        rows = []
        rows.append(("spec.load_bundle_config (read + validate)", bench(lambda: spec.load_bundle_config(bundle))))
        rows.append(("spec.read_json only", bench(lambda: spec.read_json(os.path.join(bundle, "config.json")))))
        rows.append(("plan.build_plan", bench(lambda: build_plan(cfg, opts, warnings))))
        plan = build_plan(cfg, opts, warnings)
        rows.append(("json.dumps(plan.describe()) (--debug only)",
                     bench(lambda: json.dumps(plan.describe(), default=str))))
        try:
            from pyoci.cgroups import devices
            from pyoci.container import _cgroup_resources
            res = _cgroup_resources(plan, cfg) or {}
            rules = res.get("devices") or []
            parsed = devices.normalize_rules(rules)
            rows.append(("cgroups.devices.build_program", bench(lambda: devices.build_program(parsed))))
        except Exception as e:  # noqa: BLE001 - optional
            rows.append((f"cgroups.devices: {e}", (0, 0)))
        for label, root in (("state dir on the temp dir's fs", os.path.join(tmp, "root")),
                            ("state dir on /dev/shm (tmpfs)", tempfile.mkdtemp(dir="/dev/shm"))):
            c = st.Container.new(root, "s1")
            c.data = {"id": "s1", "status": "created", "bundle": bundle, "pid": 1, "pid_start": 1,
                      "annotations": {}, "cgroup_path": "/pyoci/s1"}
            rows.append((f"Container.save ({label})", bench(c.save, n=50)))
            c.unlock()
            shutil.rmtree(root, ignore_errors=True)
        for label, (mn, med) in rows:
            print(f"{label:55s} min {mn:7.3f} ms  median {med:7.3f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
