"""Concurrency: many pyoci processes on the same id, or many ids at once."""
from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers.bundle import Bundle

from .util import HostCheck, cgroup_dirs_of, kill_pids, pids_with_cmdline, poll

pytestmark = pytest.mark.root

KNOWN_REFUSALS = ("container not running", "container not paused", "container already paused",
                  "cannot delete container", "container does not exist", "has no cgroup",
                  "did not freeze", "did not thaw")


def _no_crash(p):
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode in (0, 1), (p.returncode, p.stderr)


def test_16_concurrent_creates_of_one_id(runtime, bundle):
    cid = "race-same"
    check = HostCheck(cgroup_words=[cid])
    bundle.set_args("/bin/sleep", "300")
    barrier = threading.Barrier(16)

    def one(_):
        barrier.wait(timeout=30)
        return runtime.run("create", "--bundle", str(bundle.path), cid, timeout=120)
    try:
        with ThreadPoolExecutor(16) as ex:
            results = list(ex.map(one, range(16)))
        for p in results:
            _no_crash(p)
        won = [p for p in results if p.returncode == 0]
        lost = [p for p in results if p.returncode != 0]
        assert len(won) == 1, [p.stderr for p in results]
        for p in lost:
            assert f"container with id exists: {cid}" in p.stderr, p.stderr
        # the losers did not touch the winner: it is intact and starts
        assert runtime.state(cid)["status"] == "created"
        assert len(cgroup_dirs_of(cid)) == 1
        runtime.ok("start", cid)
        assert runtime.state(cid)["status"] == "running"
        runtime.ok("delete", "--force", cid)
    finally:
        kill_pids(pids_with_cmdline(runtime.root))
    assert runtime.ids() == []
    check.assert_clean()


def test_100_lifecycles_on_8_workers(runtime, tmp_path, busybox_rootfs):
    check = HostCheck(cgroup_words=["life-"])
    b = Bundle.make(tmp_path / "b", busybox_rootfs, args=["/bin/sleep", "300"])
    failures = []

    def lifecycle(i):
        cid = f"life-{i}"
        try:
            runtime.ok("create", "--bundle", str(b.path), cid, timeout=120)
            assert runtime.state(cid)["status"] == "created"
            runtime.ok("start", cid, timeout=60)
            assert runtime.state(cid)["status"] == "running"
            runtime.ok("kill", cid, "KILL")
            assert runtime.wait_status(cid, "stopped", timeout=20)["status"] == "stopped"
            runtime.ok("delete", cid, timeout=60)
        except BaseException as e:  # noqa: BLE001 - collected and reported below
            failures.append(f"{cid}: {e}")
    try:
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(lifecycle, range(100)))
        assert failures == []
        assert runtime.ids() == []
        assert not [d for d, _, _ in os.walk("/sys/fs/cgroup") if "/life-" in d]
    finally:
        kill_pids(pids_with_cmdline(runtime.root))
    check.assert_clean()


def test_kill_delete_pause_state_race_never_corrupts_state(runtime, bundle):
    cid = "race-ops"
    check = HostCheck(cgroup_words=[cid])
    bundle.set_args("/bin/sleep", "300")
    runtime.ok("run", "-d", "--bundle", str(bundle.path), cid)
    path = os.path.join(runtime.root, cid, "state.json")
    stop = threading.Event()
    bad = []
    reads = [0]

    def reader():
        while not stop.is_set():
            try:
                with open(path, "rb") as f:
                    raw = f.read()
            except FileNotFoundError:
                continue   # gone once deleted (the dir vanishes as a whole)
            try:
                assert isinstance(json.loads(raw), dict)
                reads[0] += 1
            except (ValueError, AssertionError):
                bad.append(raw)

    ops = [("state", cid), ("pause", cid), ("resume", cid), ("kill", cid, "CONT"),
           ("state", cid), ("delete", cid), ("list", "--format", "json"), ("pause", cid),
           ("kill", "--all", cid, "CONT"), ("resume", cid), ("state", cid), ("ps", cid)]
    t = threading.Thread(target=reader)
    t.start()
    try:
        with ThreadPoolExecutor(12) as ex:
            for _ in range(8):
                for p in ex.map(lambda a: runtime.run(*a, timeout=60), ops):
                    _no_crash(p)
                    if p.returncode:
                        assert any(r in p.stderr for r in KNOWN_REFUSALS), p.stderr
                st = runtime.state(cid)
                assert st["status"] in ("running", "paused")
            # the last round: delete --force races with the rest
            results = list(ex.map(lambda a: runtime.run(*a, timeout=60),
                                  ops + [("delete", "--force", cid)]))
        for p in results:
            _no_crash(p)
        assert results[-1].returncode == 0, results[-1].stderr
    finally:
        stop.set()
        t.join()
        kill_pids(pids_with_cmdline(runtime.root))
    assert bad == [] and reads[0] > 0
    assert runtime.ids() == [] and cgroup_dirs_of(cid) == []
    assert not [n for n in os.listdir(runtime.root) if n.startswith(".trash-")]
    check.assert_clean()
