"""Logging the runc way: `--log FILE` (append), `--log-format text|json`, `--debug`.

JSON lines carry `level`, `msg`, `time` (RFC3339, UTC) like runc's logrus output, so
containerd can decode the whole file and podman can read the last error. Without
`--log`, messages go to stderr, but only warnings/errors/debug: a successful
create/start/kill/delete prints nothing (its stdio belongs to the container).

Every stage logs one debug line saying what it did and how long it took; the child
process writes to the same (O_APPEND) file, so its lines interleave correctly.
"""
from __future__ import annotations

import json
import os
import sys
import time

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Logger:
    def __init__(self) -> None:
        self.fd: int | None = None   # None = stderr
        self.json = False
        self.level = _LEVELS["warning"]
        self.prefix = ""
        self._t0 = time.monotonic()

    def configure(self, path: str | None, fmt: str = "text", debug: bool = False) -> None:
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            # keep the low numbers free: fds 3.. belong to the caller (--preserve-fds)
            import fcntl
            self.fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 200)
            os.close(fd)
        self.json = fmt == "json"
        self.level = _LEVELS["debug"] if debug else _LEVELS["info"]

    @property
    def debug_enabled(self) -> bool:
        return self.level <= _LEVELS["debug"]

    def _emit(self, level: str, msg: str, **fields) -> None:
        now = time.time()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        if self.json:
            rec = {"level": level, "msg": msg, "time": ts + "Z"}
            rec.update(fields)
            line = json.dumps(rec, sort_keys=True) + "\n"
        else:
            frac = f"{now % 1:.9f}"[1:]
            extra = "".join(f" {k}={json.dumps(v) if not isinstance(v, (int, float)) else v}"
                            for k, v in fields.items())
            line = f'time="{ts}{frac}Z" level={level} msg={json.dumps(msg)}{extra}\n'
        data = line.encode("utf-8", "replace")
        fd = self.fd if self.fd is not None else 2
        try:
            os.write(fd, data)
        except OSError:
            pass

    def debug(self, msg: str, **fields) -> None:
        if self.level <= 10:
            self._emit("debug", self.prefix + msg, **fields)

    def info(self, msg: str, **fields) -> None:
        if self.level <= 20:
            self._emit("info", self.prefix + msg, **fields)

    def warning(self, msg: str, **fields) -> None:
        self._emit("warning", self.prefix + msg, **fields)

    def error(self, msg: str, **fields) -> None:
        self._emit("error", msg, **fields)

    def fatal(self, msg: str) -> None:
        """A failed command: one error line in the --log file (if any) and the bare message
        on stderr, so people and clients that scrape stderr read it unquoted."""
        if self.fd is not None:
            self._emit("error", msg)
        try:
            os.write(2, (msg + "\n").encode("utf-8", "replace"))
        except OSError:
            pass

    def stage(self, name: str, t_start: float, what: str = "", **fields) -> None:
        """Debug line for a finished stage with its duration in milliseconds."""
        if self.level <= 10:
            ms = (time.monotonic() - t_start) * 1000
            self._emit("debug", f"{self.prefix}stage {name}: {what}".rstrip(": "), ms=round(ms, 2), **fields)


log = Logger()
