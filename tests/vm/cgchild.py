"""A forked child that obeys one-line commands over a pipe, for the cgroup tests.

    with Child() as c:          # forked, waiting; c.pid
        cg.add_pid(c.pid)
        c.ask("open /dev/null r")   # -> "ok" or "errno 1"
        c.ask("ping")               # -> "pong" (None when it does not answer in time)
        c.ask("fork 5")             # -> "forked 5" or "errno 11 after 3"
        c.ask("alloc 64")           # touch 64 MiB (the child may be OOM-killed)
The child always ends in os._exit; the context manager SIGKILLs and reaps it.
"""
from __future__ import annotations

import os
import select
import signal
import time

_FLAGS = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}


def _serve(rfd: int, wfd: int) -> None:
    buf = b""
    kids: list[int] = []
    hog: list[bytearray] = []
    while True:
        while b"\n" not in buf:
            chunk = os.read(rfd, 4096)
            if not chunk:
                return
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        cmd, *args = line.decode().split()
        if cmd == "ping":
            reply = "pong"
        elif cmd == "open":
            try:
                fd = os.open(args[0], _FLAGS[args[1]])
                os.close(fd)
                reply = "ok"
            except OSError as e:
                reply = f"errno {e.errno}"
        elif cmd == "fork":          # fork N sleepers (they die with the cgroup)
            n, made, reply = int(args[0]), 0, None
            for _ in range(n):
                try:
                    pid = os.fork()
                except OSError as e:
                    reply = f"errno {e.errno} after {made}"
                    break
                if pid == 0:
                    os.close(wfd)
                    os.close(rfd)
                    time.sleep(3600)
                    os._exit(0)
                kids.append(pid)
                made += 1
            reply = reply or f"forked {made}"
        elif cmd == "alloc":         # touch N MiB of anonymous memory
            for _ in range(int(args[0])):
                b = bytearray(1 << 20)
                for i in range(0, len(b), 4096):
                    b[i] = 1
                hog.append(b)
            reply = f"allocated {len(hog)}"
        elif cmd == "spin":          # burn CPU for N seconds, reply with loops done
            end, loops = time.monotonic() + float(args[0]), 0
            while time.monotonic() < end:
                loops += 1
            reply = f"spun {loops}"
        elif cmd == "exit":
            return
        else:
            reply = "unknown"
        os.write(wfd, (reply + "\n").encode())


class Child:
    def __init__(self):
        c_r, p_w = os.pipe()
        p_r, c_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(p_w)
                os.close(p_r)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _serve(c_r, c_w)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(c_r)
        os.close(c_w)
        self.pid = pid
        self._w, self._r = p_w, p_r
        self._buf = b""
        self.status: int | None = None

    def ask(self, cmd: str, timeout: float = 10.0) -> str | None:
        """Send a command; the reply, or None if none came in time (or the child died)."""
        try:
            os.write(self._w, (cmd + "\n").encode())
        except BrokenPipeError:
            return None
        return self.reply(timeout)

    def reply(self, timeout: float = 10.0) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                return None
            chunk = os.read(self._r, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def wait(self, timeout: float = 10.0) -> int | None:
        """Reap the child; its wait status, or None if it is still alive after timeout."""
        if self.status is not None:
            return self.status
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                return status
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait(10)
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
