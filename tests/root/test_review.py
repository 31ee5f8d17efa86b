"""Adversarial review of the core lifecycle: each test reproduces one defect found in review
(through the CLI, as podman, containerd or a person would hit it)."""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import time

import pytest

from helpers.runner import Runtime

pytestmark = pytest.mark.root


def _wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _no_pid_ns(bundle):
    bundle.linux["namespaces"] = [n for n in bundle.linux["namespaces"] if n["type"] != "pid"]


def _console_listener(tmp_path):
    path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    return srv, path


def _recv_master(srv):
    srv.settimeout(10)
    conn, _ = srv.accept()
    _msg, fds, _flags, _ = socket.recv_fds(conn, 4096, 4)
    conn.close()
    return fds


# ───────────────────────── run: exit codes and signals ─────────────────────────

def test_run_tty_exit_code_of_a_signalled_process_is_128_plus_n(runtime, bundle):
    """`run` with a terminal (no console socket: pyoci proxies the pty). The process is killed
    by SIGKILL while a background child keeps the pty slave open, so the proxy notices the
    death through waitpid (not EOF). The exit code must be 128+9, as without a terminal."""
    _no_pid_ns(bundle)                     # the background child survives its parent
    bundle.process["terminal"] = True
    # (HUP ignored: the slave's hangup must not end the background child first)
    bundle.set_args("sh", "-c", "trap '' HUP; sleep 2 & kill -KILL $$")
    p = runtime.run("run", "--bundle", bundle.path, "rt1", timeout=30)
    assert p.returncode == 128 + signal.SIGKILL, (p.returncode, p.stderr)
    assert runtime.ids() == []


def test_run_forwards_other_signals_and_cleans_up(runtime, bundle, tmp_path):
    """runc's foreground `run` forwards every signal it can catch to the container. pyoci
    forwarded a short list only: a SIGALRM (or SIGUSR-like SIGPWR, SIGIO...) killed pyoci and
    left the container running and its state dir behind."""
    bundle.set_args("sh", "-c", "trap 'exit 42' ALRM; touch /ready; while :; do sleep 0.05; done")
    ready = bundle.rootfs / "ready"
    with open(tmp_path / "out", "wb") as out:
        p = subprocess.Popen(runtime.argv("run", "--bundle", bundle.path, "rt2"),
                             stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            assert _wait_for(ready.exists), (tmp_path / "out").read_text()
            p.send_signal(signal.SIGALRM)
            rc = p.wait(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert rc == 42, (rc, (tmp_path / "out").read_text())
    assert runtime.ids() == []


def test_run_tty_with_stdout_a_closed_pipe(runtime, bundle):
    """`run -t` proxying the pty while its stdout is a pipe whose reader went away: pyoci must
    not die with a BrokenPipeError traceback and leave the container behind; it keeps waiting
    for the process and returns its exit code (runc ignores the failed copy)."""
    bundle.process["terminal"] = True
    bundle.set_args("sh", "-c", "echo one; sleep 0.3; echo two; sleep 0.3; exit 3")
    r, w = os.pipe()
    os.close(r)                                 # nobody reads our stdout
    try:
        p = subprocess.run(runtime.argv("run", "--bundle", bundle.path, "rt3"),
                           stdin=subprocess.DEVNULL, stdout=w, stderr=subprocess.PIPE, timeout=30)
    finally:
        os.close(w)
    assert p.returncode == 3, (p.returncode, p.stderr)
    assert b"Traceback" not in p.stderr
    assert runtime.ids() == []
