"""Run the pyoci CLI as a black box, the way podman and containerd do."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

PYOCI = [sys.executable, "-m", "pyoci"]


class Runtime:
    def __init__(self, root: str, log: str | None = None):
        self.root = root
        self.log = log

    def argv(self, *args: str, global_flags: tuple[str, ...] = ()) -> list[str]:
        g = ["--root", self.root]
        if self.log:
            g += ["--log", self.log, "--log-format", "json"]
        return PYOCI + g + list(global_flags) + [str(a) for a in args]

    def run(self, *args: str, check: bool = False, timeout: float = 60, input: str | None = None,
            stdin=None, global_flags=(), **kw) -> subprocess.CompletedProcess:
        """Run pyoci; stdout/stderr go to files, not pipes: a created container inherits
        them and would keep a pipe open long after pyoci returned (as with runc)."""
        import tempfile
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            if input is not None:
                inp = tempfile.TemporaryFile()
                inp.write(input.encode())
                inp.seek(0)
                stdin = inp
            try:
                p = subprocess.run(self.argv(*args, global_flags=global_flags), timeout=timeout,
                                   stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                   stdout=out, stderr=err, **kw)
            finally:
                if input is not None:
                    inp.close()
            out.seek(0)
            err.seek(0)
            p.stdout = out.read().decode(errors="replace")
            p.stderr = err.read().decode(errors="replace")
        if check and p.returncode != 0:
            raise AssertionError(f"pyoci {' '.join(map(str, args))} exited {p.returncode}\n"
                                 f"stdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def ok(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run(*args, check=True, **kw)

    def state(self, cid: str) -> dict:
        return json.loads(self.ok("state", cid).stdout)

    def wait_status(self, cid: str, status: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.state(cid)
            if st["status"] == status or time.monotonic() > deadline:
                return st
            time.sleep(0.02)

    def ids(self) -> list[str]:
        try:
            return sorted(d for d in os.listdir(self.root) if not d.startswith("."))
        except FileNotFoundError:
            return []

    def cleanup(self) -> None:
        """Force-delete anything a test left, then fail if it did (a test must clean up)."""
        left = self.ids()
        for cid in left:
            self.run("delete", "--force", cid, timeout=30)
        still = self.ids()
        if still:
            raise AssertionError(f"state dirs left in {self.root}: {still}")
