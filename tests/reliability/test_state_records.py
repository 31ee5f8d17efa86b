"""The state records that cleanup relies on (no root needed): the half-made status, the
second record (cleanup.json), recovery from a damaged state.json, and atomic removal."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pyoci import state as st
from pyoci.errors import NotFound


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_creating_with_a_live_creator_then_stopped_once_it_is_dead(tmp_path):
    c = st.Container.new(str(tmp_path), "c1")
    c.data = {"id": "c1", "status": "creating", "creator_pid": os.getpid(),
              "creator_start": st.proc_start_time(os.getpid())}
    c.save()
    c.unlock()
    assert st.Container.load(str(tmp_path), "c1", lock=False).status() == "creating"
    # the same record, read by another process while this one lives: still creating
    code = ("from pyoci import state as st; import sys; "
            f"print(st.Container.load({str(tmp_path)!r}, 'c1', lock=False).status())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "creating", out.stderr
    c = st.Container.load(str(tmp_path), "c1")
    c.data["creator_pid"] = _dead_pid()
    c.save()
    assert c.status() == "stopped"
    assert c.oci_state()["pid"] == 0
    c.remove()
    c.unlock()


def test_cleanup_record_follows_what_exists_and_survives_a_lost_state(tmp_path):
    c = st.Container.new(str(tmp_path), "c2")
    c.data = {"id": "c2", "status": "creating", "bundle": "/b", "creator_pid": 1}
    c.save()
    c.data.update(cgroup_path="/pyoci/c2", cgroup_root="/sys/fs/cgroup", pid=123, pid_start=9,
                  network={"veth": "pyv1"}, annotations={"big": "x" * 100})
    c.save()
    rec = json.loads((tmp_path / "c2" / "cleanup.json").read_text())
    assert rec == {"id": "c2", "bundle": "/b", "creator_pid": 1, "cgroup_path": "/pyoci/c2",
                   "cgroup_root": "/sys/fs/cgroup", "pid": 123, "pid_start": 9,
                   "network": {"veth": "pyv1"}}
    c.unlock()
    (tmp_path / "c2" / "state.json").write_text('{"id": "c2", "sta')
    loaded = st.Container.load(str(tmp_path), "c2")
    assert loaded.status() == "unknown"
    assert "state.json is corrupt" in loaded.data["_corrupt"]
    assert loaded.data["cgroup_path"] == "/pyoci/c2" and loaded.data["pid"] == 123
    loaded.unlock()
    (tmp_path / "c2" / "state.json").unlink()
    (tmp_path / "c2" / "cleanup.json").write_text("")
    loaded = st.Container.load(str(tmp_path), "c2")
    assert "state.json is missing" in loaded.data["_corrupt"]
    assert "cleanup.json is unusable too" in loaded.data["_corrupt"]
    loaded.remove()
    loaded.unlock()


@pytest.mark.parametrize("raw,word", [(b"", "empty"), (b"  \n", "empty"), (b"[]", "corrupt"),
                                      (b"\xff\xfe", "corrupt"), (b'{"a": 1', "corrupt")])
def test_damaged_state_is_named(tmp_path, raw, word):
    c = st.Container.new(str(tmp_path), "c3")
    c.unlock()
    (tmp_path / "c3" / "state.json").write_bytes(raw)
    loaded = st.Container.load(str(tmp_path), "c3", lock=False)
    assert f"{tmp_path}/c3/state.json is {word}" in loaded.data["_corrupt"]


def test_remove_is_atomic_and_leaves_no_trash(tmp_path):
    c = st.Container.new(str(tmp_path), "c4")
    c.data = {"id": "c4", "status": "created"}
    c.save()
    c.remove()
    assert not (tmp_path / "c4").exists()
    assert [n for n in os.listdir(tmp_path) if n.startswith(st.TRASH_PREFIX)] == []
    c.unlock()
    with pytest.raises(NotFound):
        st.Container.load(str(tmp_path), "c4")
    # the id is free again at once
    st.Container.new(str(tmp_path), "c4").unlock()


def test_stale_trash_is_swept(tmp_path):
    (tmp_path / (st.TRASH_PREFIX + "1.2") / "sub").mkdir(parents=True)
    c = st.Container.new(str(tmp_path), "c5")
    c.remove()
    c.unlock()
    assert os.listdir(tmp_path) == []


def test_over_long_id_is_refused_before_anything_is_made(tmp_path):
    from pyoci.errors import UsageError
    with pytest.raises(UsageError, match="300 characters, longer than 255"):
        st.Container.new(str(tmp_path), "a" * 300)
    st.Container.new(str(tmp_path), "a" * 255).unlock()


def test_a_waiter_never_takes_a_recreated_container_for_the_one_it_waited_for(tmp_path):
    """B waits for the lock of c6 while A deletes c6 and creates a new c6: B must not believe
    it holds the new container's lock (it holds the old, unlinked one)."""
    import threading
    a = st.Container.new(str(tmp_path), "c6")
    a.data = {"id": "c6", "status": "created"}
    a.save()
    result = {}

    def waiter():
        try:
            result["c"] = st.Container.load(str(tmp_path), "c6")
        except NotFound as e:
            result["err"] = e
    t = threading.Thread(target=waiter)
    t.start()
    # wait (bounded) until the waiter is blocked on the old lock: /proc/locks shows "->"
    import time
    for _ in range(500):
        if "->" in open("/proc/locks").read():
            break
        time.sleep(0.01)
    a.remove()
    b = st.Container.new(str(tmp_path), "c6")      # a new container with the same id, locked
    a.unlock()                                       # the old lock is released
    t.join(timeout=10)
    assert not t.is_alive()
    assert "err" in result, "the waiter proceeded with the lock of a container that is gone"
    b.unlock()
