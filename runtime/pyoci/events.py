"""`pyoci events ID [--stats] [--interval 5s]`: runc-style JSON events from the cgroup."""
from __future__ import annotations

import json
import sys
import time

from pyoci import state as st
from pyoci.errors import StateError, UsageError


def _interval(s: str) -> float:
    s = str(s).strip()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for u in ("ms", "s", "m", "h"):
        if s.endswith(u):
            try:
                return float(s[: -len(u)]) * units[u]
            except ValueError:
                break
    try:
        return float(s)
    except ValueError:
        raise UsageError(f"invalid interval {s!r}") from None


def events(root: str, cid: str, stats: bool = False, interval: str = "5s") -> int:
    from pyoci.container import _cgroup
    ctr = st.Container.load(root, cid, lock=False)
    cg = _cgroup(ctr)
    if cg is None or not cg.exists():
        raise StateError(f"container {cid} has no cgroup")
    if stats:
        _emit({"type": "stats", "id": cid, "data": cg.stats()})
        return 0
    period = _interval(interval)
    ooms = cg.oom_kill_count()
    while ctr.init_alive():
        _emit({"type": "stats", "id": cid, "data": cg.stats()})
        n = cg.oom_kill_count()
        if n > ooms:
            _emit({"type": "oom", "id": cid})
            ooms = n
        time.sleep(period)
    return 0


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
