"""State: ids, the transition table, atomic save, derived status (no root needed)."""
import json
import os

import pytest

from pyoci import state as st
from pyoci.errors import AlreadyExists, NotFound, StateError, UsageError


@pytest.mark.parametrize("cid", ["a", "abc-123", "x.y_z+w", "f" * 64])
def test_valid_ids(cid):
    st.validate_id(cid)


@pytest.mark.parametrize("cid", ["", "a/b", "..", ".", "a b", "x" * 1025, "a\nb"])
def test_invalid_ids(cid):
    with pytest.raises(UsageError):
        st.validate_id(cid)


@pytest.mark.parametrize("op,status,ok", [
    ("start", "created", True), ("start", "running", False), ("start", "stopped", False),
    ("kill", "running", True), ("kill", "stopped", False), ("kill", "created", True),
    ("delete", "stopped", True), ("delete", "running", False), ("delete", "created", False),
    ("pause", "running", True), ("pause", "created", False), ("resume", "paused", True),
    ("resume", "running", False), ("exec", "running", True), ("exec", "stopped", False),
])
def test_transition_table(op, status, ok):
    if ok:
        st.check_transition(op, status, "c1")
    else:
        with pytest.raises(StateError):
            st.check_transition(op, status, "c1")


def test_runc_wording():
    with pytest.raises(StateError, match="cannot start an already running container"):
        st.check_transition("start", "running", "c1")
    with pytest.raises(StateError, match="cannot delete container c1 that is not stopped: running"):
        st.check_transition("delete", "running", "c1")
    with pytest.raises(StateError, match="container not running"):
        st.check_transition("kill", "stopped", "c1")


def test_new_is_exclusive_and_save_is_atomic(tmp_path):
    c = st.Container.new(str(tmp_path), "c1")
    c.data = {"status": "created", "pid": 0, "bundle": "/b"}
    c.save()
    assert json.loads((tmp_path / "c1" / "state.json").read_text())["bundle"] == "/b"
    assert [n for n in os.listdir(tmp_path / "c1") if n.startswith(".state")] == []
    with pytest.raises(AlreadyExists):
        st.Container.new(str(tmp_path), "c1")
    c.unlock()
    loaded = st.Container.load(str(tmp_path), "c1")
    assert loaded.status() == "stopped"          # no live init
    loaded.remove()
    loaded.unlock()
    assert not (tmp_path / "c1").exists()
    with pytest.raises(NotFound):
        st.Container.load(str(tmp_path), "c1")


def test_reused_pid_is_not_the_container(tmp_path):
    c = st.Container.new(str(tmp_path), "c2")
    me = os.getpid()
    c.data = {"status": "created", "pid": me, "pid_start": st.proc_start_time(me)}
    assert c.init_alive()
    c.data["pid_start"] = st.proc_start_time(me) + 1   # same pid, another process
    assert not c.init_alive()
    assert c.status() == "stopped"
    c.remove()
    c.unlock()


def test_corrupt_state_is_reported(tmp_path):
    c = st.Container.new(str(tmp_path), "c3")
    (tmp_path / "c3" / "state.json").write_text("{garbage")
    c.unlock()
    loaded = st.Container.load(str(tmp_path), "c3")
    assert loaded.status() == "unknown"
    assert "corrupt" in loaded.data["_corrupt"]
    loaded.remove()
    loaded.unlock()
