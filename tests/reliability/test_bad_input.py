"""Bad input on the command line: every misuse gets runc's exit code and a message that names
what is wrong. Each row runs against pyoci and, where runc can run it, against runc 1.1.5
(/usr/sbin/runc, its own --root, inside the test's private cgroup2 mount namespace), and the
exit codes must agree. Nothing a refused command touched may be left behind."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass

import pytest

from helpers.bundle import Bundle
from helpers.runner import Runtime

from .util import HostCheck, kill_pids, pids_with_cmdline

pytestmark = pytest.mark.root

RUNC = shutil.which("runc") or "/usr/sbin/runc"
LONG_ID = "a" * 300


@dataclass
class Env:
    tmp: str
    rt: Runtime           # pyoci
    runc_root: str
    bundle: str           # /bin/sleep, no terminal
    tty_bundle: str       # terminal: true (needs a console socket when detached)
    runc_bundle: str
    runc_tty_bundle: str
    empty_dir: str
    not_socket: str
    bad_process: str
    not_json: str
    cid: str = "relbad-c"
    runc_cid: str = "relbad-runc"

    def subst(self, args, for_runc: bool):
        m = {"{B}": self.runc_bundle if for_runc else self.bundle,
             "{BT}": self.runc_tty_bundle if for_runc else self.tty_bundle,
             "{C}": self.runc_cid if for_runc else self.cid,
             "{EMPTY}": self.empty_dir, "{NOTSOCK}": self.not_socket,
             "{BADPROC}": self.bad_process, "{NOTJSON}": self.not_json,
             "{MISSING}": os.path.join(self.tmp, "does-not-exist")}
        out = []
        for a in args:
            for k, v in m.items():
                a = a.replace(k, v)
            out.append(a)
        return out


def _run(argv, cwd=None):
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, text=True,
                           timeout=60, cwd=cwd)
        out.seek(0)
        err.seek(0)
        p.stdout, p.stderr = out.read(), err.read()
    return p


def runc(env: Env, *args, cwd=None):
    return _run([RUNC, "--root", env.runc_root, *args], cwd=cwd)


@pytest.fixture(scope="module")
def env(tmp_path_factory, busybox_rootfs):
    tmp = str(tmp_path_factory.mktemp("badinput"))
    check = HostCheck(cgroup_words=["relbad"])

    def bundle(name, terminal=False, cgroups_path=None):
        b = Bundle.make(os.path.join(tmp, name), busybox_rootfs, args=["/bin/sleep", "300"])
        b.process["terminal"] = terminal
        if cgroups_path:
            b.linux["cgroupsPath"] = cgroups_path
        return str(b.save().path)

    os.makedirs(os.path.join(tmp, "empty"))
    not_socket = os.path.join(tmp, "not-a-socket")
    open(not_socket, "w").close()
    bad_process = os.path.join(tmp, "bad-process.json")
    with open(bad_process, "w") as f:
        f.write('{"args": ["true"]}')          # no cwd, no user
    not_json = os.path.join(tmp, "not-json.json")
    with open(not_json, "w") as f:
        f.write("{args")
    e = Env(tmp=tmp, rt=Runtime(root=os.path.join(tmp, "pyoci-root")),
            runc_root=os.path.join(tmp, "runc-root"),
            bundle=bundle("b"), tty_bundle=bundle("bt", terminal=True),
            runc_bundle=bundle("rb", cgroups_path="/relbad-runc-cg"),
            runc_tty_bundle=bundle("rbt", terminal=True, cgroups_path="/relbad-runc-cg2"),
            empty_dir=os.path.join(tmp, "empty"), not_socket=not_socket,
            bad_process=bad_process, not_json=not_json)
    e.rt.ok("create", "--bundle", e.bundle, e.cid)
    have_runc = runc(e, "create", "--bundle", e.runc_bundle, e.runc_cid).returncode == 0
    e.have_runc = have_runc
    yield e
    try:
        # the refused commands did not disturb the container, and left nothing of their own
        assert e.rt.state(e.cid)["status"] == "created"
        assert e.rt.ids() == [e.cid]
    finally:
        e.rt.run("delete", "--force", e.cid)
        if have_runc:
            runc(e, "delete", "--force", e.runc_cid)
        kill_pids(pids_with_cmdline(e.rt.root))
    assert e.rt.ids() == []
    check.assert_clean()


CLI = "cli.py (not owned by the reliability task; see docs/reliability.md)"

# (argv, exit code, what the message must say, compare with runc)
ROWS = [
    pytest.param(["foo"], 3, "No help topic for 'foo'", True, id="unknown-verb"),
    pytest.param(["--bogus", "list"], 1, "flag provided but not defined: -bogus", True, id="unknown-global-flag"),
    pytest.param(["list", "--bogus"], 1, "flag provided but not defined: -bogus", True, id="unknown-verb-flag"),
    pytest.param(["kill", "--bogus", "{C}"], 1, "flag provided but not defined: -bogus", True, id="unknown-kill-flag"),
    pytest.param(["create", "--bundle"], 1, "flag needs an argument: -bundle", True, id="flag-without-value"),
    pytest.param(["state"], 1, '"state" requires exactly 1 argument(s)', True, id="missing-id-state"),
    pytest.param(["start"], 1, '"start" requires exactly 1 argument(s)', True, id="missing-id-start"),
    pytest.param(["delete"], 1, '"delete" requires exactly 1 argument(s)', True, id="missing-id-delete"),
    pytest.param(["kill"], 1, '"kill" requires a minimum of 1 argument(s)', True, id="missing-id-kill"),
    pytest.param(["create", "--bundle", "{B}"], 1, '"create" requires exactly 1 argument(s)', True, id="missing-id-create"),
    pytest.param(["start", "{C}", "extra"], 1, '"start" requires exactly 1 argument(s)', True, id="extra-arg-start"),
    pytest.param(["list", "extra"], 1, '"list" requires exactly 0 argument(s)', True, id="extra-arg-list"),
    pytest.param(["state", "nope"], 1, "container does not exist", True, id="unknown-id-state"),
    pytest.param(["start", "nope"], 1, "container does not exist", True, id="unknown-id-start"),
    pytest.param(["kill", "nope"], 1, "container does not exist", True, id="unknown-id-kill"),
    pytest.param(["delete", "nope"], 1, "container does not exist", True, id="unknown-id-delete"),
    pytest.param(["pause", "nope"], 1, "container does not exist", True, id="unknown-id-pause"),
    pytest.param(["exec", "nope", "true"], 255, "container does not exist", True, id="unknown-id-exec"),
    pytest.param(["state", ""], 1, "container id cannot be empty", True, id="empty-id"),
    pytest.param(["state", "a/b"], 1, "invalid container id format: a/b", True, id="id-with-slash"),
    pytest.param(["create", "--bundle", "{B}", "a/b"], 1, "invalid container id format: a/b", True, id="create-id-with-slash"),
    pytest.param(["state", ".."], 1, "invalid container id format: ..", True, id="id-dotdot"),
    pytest.param(["create", "--bundle", "{B}", ".."], 1, "invalid container id format: ..", True, id="create-id-dotdot"),
    pytest.param(["create", "--bundle", "{B}", LONG_ID], 1, "300 characters, longer than 255", True, id="id-too-long"),
    pytest.param(["state", LONG_ID], 1, "300 characters, longer than 255", True, id="state-id-too-long"),
    pytest.param(["create", "--bundle", "{MISSING}", "relbad-x"], 1, "{MISSING}: no such file or directory", True, id="bundle-missing"),
    pytest.param(["create", "--bundle", "{EMPTY}", "relbad-x"], 1, "{EMPTY}/config.json: no such file or directory", True, id="bundle-without-config"),
    pytest.param(["create", "--bundle", "{B}", "{C}"], 1, "container with id exists: {C}", True, id="id-exists"),
    pytest.param(["kill", "{C}", "BOGUS"], 1, 'unknown signal "BOGUS"', True, id="unknown-signal-name"),
    pytest.param(["kill", "{C}", "SIGRTMAX+1"], 1, 'unknown signal "SIGRTMAX+1"', True, id="unknown-signal-rt"),
    pytest.param(["kill", "{C}", "99"], 1, 'unknown signal "99"', True, id="unknown-signal-number"),
    pytest.param(["kill", "{C}", "-9"], 1, "-9", True, id="negative-signal-number"),
    pytest.param(["kill", "{C}", "0"], 0, "", True, id="signal-0-probes"),
    pytest.param(["create", "--bundle", "{B}", "--preserve-fds", "5", "relbad-x"], 1,
                 "--preserve-fds 5: file descriptor 3 is not open", True, id="preserve-fds-beyond-open"),
    pytest.param(["create", "--bundle", "{B}", "--preserve-fds", "abc", "relbad-x"], 1,
                 "--preserve-fds: abc", True, id="preserve-fds-not-a-number"),
    pytest.param(["exec", "--preserve-fds", "5", "{C}", "true"], 255, "file descriptor 3 is not open", True,
                 id="exec-preserve-fds-beyond-open"),
    pytest.param(["exec", "--process", "{BADPROC}", "{C}"], 255, "cwd", True, id="process-not-a-process"),
    pytest.param(["exec", "--process", "{NOTJSON}", "{C}"], 255, "{NOTJSON}: invalid JSON", True, id="process-not-json"),
    pytest.param(["exec", "--process", "{MISSING}", "{C}"], 255, "{MISSING}: no such file or directory", True, id="process-missing"),
    pytest.param(["exec", "{C}"], 255, "args", True, id="exec-without-command"),
    pytest.param(["create", "--bundle", "{BT}", "--console-socket", "{NOTSOCK}", "relbad-x"], 1,
                 "{NOTSOCK} is not a socket", True, id="console-socket-not-a-socket"),
    pytest.param(["create", "--bundle", "{BT}", "--console-socket", "{MISSING}", "relbad-x"], 1,
                 "{MISSING}", True, id="console-socket-missing"),
    pytest.param(["create", "--bundle", "{BT}", "relbad-x"], 1,
                 "cannot allocate tty if runc will detach without setting console socket", True, id="tty-without-console-socket"),
    pytest.param(["exec", "-t", "--console-socket", "{NOTSOCK}", "{C}", "true"], 255, "{NOTSOCK} is not a socket", True,
                 id="exec-console-socket-not-a-socket"),
    pytest.param(["--log-format", "xml", "list"], 1, "xml", True, id="bad-log-format"),
    pytest.param(["list", "--format", "xml"], 1, "invalid format option", True, id="bad-list-format"),
]


@pytest.mark.parametrize("args,code,message,compare", ROWS)
def test_bad_input(env, args, code, message, compare):
    p = env.rt.run(*env.subst(args, for_runc=False))
    message = env.subst([message], for_runc=False)[0]
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == code, (p.returncode, p.stderr)
    assert message in p.stderr, p.stderr
    if compare and env.have_runc:
        r = runc(env, *env.subst(args, for_runc=True))
        assert r.returncode == code, f"runc exits {r.returncode}: {r.stderr[-300:]}"
    # a refused create left nothing behind
    assert "relbad-x" not in env.rt.ids()


def test_console_socket_that_is_a_socket_is_accepted(env, tmp_path):
    """The other side of the not-a-socket rows: a real listening socket gets the pty."""
    path = str(tmp_path / "console.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(1)
    try:
        env.rt.ok("create", "--bundle", env.tty_bundle, "--console-socket", path, "relbad-tty")
        assert env.rt.state("relbad-tty")["status"] == "created"
    finally:
        s.close()
        env.rt.run("delete", "--force", "relbad-tty")
    assert "relbad-tty" not in env.rt.ids()


def test_relative_root_and_pid_file_are_accepted_like_runc(env, tmp_path):
    """runc 1.1.5 takes a relative --root and --pid-file relative to its working directory."""
    cwd = str(tmp_path)
    for name, argv in (("runc", [RUNC]), ("pyoci", env.rt.argv()[:-2])):
        if name == "runc" and not env.have_runc:
            continue
        b = env.runc_bundle if name == "runc" else env.bundle
        cid = f"relbad-rel-{name}"
        p = _run(argv + ["--root", f"rel/{name}", "create", "--bundle", b, "--pid-file",
                         f"{name}.pid", cid], cwd=cwd)
        try:
            assert p.returncode == 0, (name, p.stderr)
            assert os.path.isdir(os.path.join(cwd, "rel", name, cid)), name
            pid = int(open(os.path.join(cwd, f"{name}.pid")).read())
            assert os.path.exists(f"/proc/{pid}")
            lst = _run(argv + ["--root", f"rel/{name}", "list", "-q"], cwd=cwd)
            assert lst.stdout.split() == [cid], (name, lst.stdout, lst.stderr)
        finally:
            d = _run(argv + ["--root", f"rel/{name}", "delete", "--force", cid], cwd=cwd)
        assert d.returncode == 0, (name, d.stderr)
        assert not os.path.exists(os.path.join(cwd, "rel", name, cid))
