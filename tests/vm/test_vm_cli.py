"""CLI level, in the VM lane: a container's memory hog is OOM-killed and `pyoci events`
reports it; `events --stats` shows the limit; `update` changes a running container's limit."""
from __future__ import annotations

import json
import os
import select
import subprocess
import time
import uuid

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.root]
MiB = 1 << 20


def _lines(proc: subprocess.Popen, timeout: float):
    """Yield stdout lines of proc until timeout."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode()


def test_oom_kill_is_reported_by_events(runtime, bundle):
    cid = f"vm-oom-{uuid.uuid4().hex[:6]}"
    bundle.config["linux"]["resources"] = dict(bundle.config["linux"].get("resources") or {},
                                               memory={"limit": 16 * MiB, "swap": 16 * MiB},
                                               pids={"limit": 50})
    # the hog starts once /go exists, i.e. after `events` has read the initial OOM count
    bundle.set_args("sh", "-c", "while [ ! -e /go ]; do sleep 0.1; done; "
                    "dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 600")
    runtime.ok("run", "--detach", "--bundle", bundle.path, cid, timeout=120)
    try:
        stats = json.loads(runtime.ok("events", "--stats", cid).stdout)
        assert stats["type"] == "stats" and stats["id"] == cid
        assert stats["data"]["memory"]["usage"]["limit"] == 16 * MiB
        assert stats["data"]["pids"]["limit"] == 50
        ev = subprocess.Popen(runtime.argv("events", "--interval", "100ms", cid),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            seen = []
            for line in _lines(ev, 120):
                seen.append(json.loads(line)["type"])
                if seen == ["stats"]:
                    (bundle.rootfs / "go").write_text("")
                if "oom" in seen:
                    break
            assert "oom" in seen, seen
        finally:
            ev.kill()
            ev.wait()
        assert runtime.state(cid)["status"] == "running"   # only the hog died
        # update a running container's limit through the CLI flags
        runtime.ok("update", "--memory", "32m", "--pids-limit", "20", cid)
        data = json.loads(runtime.ok("events", "--stats", cid).stdout)["data"]
        assert data["memory"]["usage"]["limit"] == 32 * MiB
        assert data["pids"]["limit"] == 20
    finally:
        runtime.run("delete", "--force", cid, timeout=60)
