"""The runc-compatible command line: flag spellings, signals, usage errors (no root needed)."""
import json
import signal
import subprocess
import sys

import pytest

from pyoci import cli
from pyoci.errors import UsageError


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pyoci", *args], capture_output=True, text=True, **kw)


@pytest.mark.parametrize("argv", [
    ["--log-format=json", "--log", "/tmp/x", "create", "--bundle", "/b", "--pid-file=/p", "c1"],
    ["--log", "/tmp/x", "--log-format", "json", "create", "--bundle=/b", "--pid-file", "/p", "c1"],
])
def test_both_flag_spellings(argv):
    g, rest = cli._parse(argv, cli.GLOBAL_FLAGS, stop_at_first_pos=True)
    assert g.flags["log-format"] == "json" and g.flags["log"] == "/tmp/x"
    a, _ = cli._parse(rest[1:], cli.VERBS["create"][0])
    assert a.flags["bundle"] == "/b" and a.flags["pid-file"] == "/p" and a.pos == ["c1"]


def test_exec_command_keeps_its_flags():
    a, _ = cli._parse(["--detach", "c1", "ls", "-la", "--tty"], cli.VERBS["exec"][0],
                      stop_after_first_pos=True)
    assert a.flags == {"detach": True}
    assert a.pos == ["c1", "ls", "-la", "--tty"]


def test_flags_after_the_id():
    a, _ = cli._parse(["c1", "--force"], cli.VERBS["delete"][0])
    assert a.flags["force"] is True and a.pos == ["c1"]


@pytest.mark.parametrize("text,num", [("0", 0), ("9", 9), ("KILL", 9), ("SIGKILL", 9), ("term", 15),
                                      ("SIGUSR1", 10), ("RTMIN+1", signal.SIGRTMIN + 1)])
def test_signals(text, num):
    assert cli.parse_signal(text) == num


@pytest.mark.parametrize("text", ["SIGBOGUS", "99", "-3"])
def test_bad_signals(text):
    with pytest.raises(UsageError, match="unknown signal"):
        cli.parse_signal(text)


def test_unknown_flag_is_a_clear_error():
    p = run("--root", "/tmp/pyoci-none", "create", "--bogus", "c1")
    assert p.returncode == 1
    assert "flag provided but not defined: -bogus" in p.stderr


def test_unknown_verb():
    p = run("frobnicate")
    assert p.returncode != 0 and "frobnicate" in p.stderr


def test_version_is_runc_shaped():
    p = run("--version")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert lines[0].startswith("pyoci version ")
    assert "spec: 1.3.0" in lines
    assert any(l.startswith("python: ") for l in lines)


def test_state_of_unknown_container(tmp_path):
    p = run("--root", str(tmp_path), "state", "nope")
    assert p.returncode == 1
    assert "container does not exist" in p.stderr
    assert p.stdout == ""


def test_json_log_on_failure(tmp_path):
    logf = tmp_path / "log.json"
    p = run("--root", str(tmp_path), "--log", str(logf), "--log-format", "json", "kill", "nope", "9")
    assert p.returncode == 1
    lines = logf.read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["level"] == "error" and "does not exist" in rec["msg"]
    assert rec["time"].endswith("Z")
    assert "does not exist" in p.stderr


def test_delete_force_of_unknown_id_succeeds(tmp_path):
    p = run("--root", str(tmp_path), "delete", "--force", "nope")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "" and p.stderr == ""


def test_bad_id(tmp_path):
    p = run("--root", str(tmp_path), "state", "../x")
    assert p.returncode == 1 and "invalid container id" in p.stderr


def test_systemd_cgroup_not_supported(tmp_path):
    p = run("--root", str(tmp_path), "--systemd-cgroup", "state", "x")
    assert p.returncode == 1 and "not supported" in p.stderr


def test_spec_writes_a_valid_default(tmp_path):
    p = run("spec", "--bundle", str(tmp_path))
    assert p.returncode == 0, p.stderr
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["process"]["args"] == ["sh"]
    from pyoci import spec
    spec.validate_config(cfg)
    again = run("spec", "--bundle", str(tmp_path))
    assert again.returncode == 1 and "exists" in again.stderr


def test_list_empty(tmp_path):
    p = run("--root", str(tmp_path), "list", "--format", "json")
    assert p.returncode == 0 and json.loads(p.stdout) == []
