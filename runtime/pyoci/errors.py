"""Error types. Every error is meant to be read by a person: it says what failed and where.

Exit codes follow runc: 1 for any runtime error, 255 when exec of the user process fails
(set by the CLI for `exec`).
"""
from __future__ import annotations

import errno as _errno
import os


class PyociError(Exception):
    """Base class. str(err) is the one-line message shown to the user."""

    exit_code = 1


class ConfigError(PyociError):
    """config.json is unreadable or invalid. `problems` holds one line per problem."""

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class UsageError(PyociError):
    """Bad command line (unknown flag, missing argument, bad id...)."""


class StateError(PyociError):
    """A lifecycle operation that is not allowed in the container's current state."""


class NotFound(StateError):
    def __init__(self, container_id: str):
        self.container_id = container_id
        super().__init__(f"container does not exist")


class AlreadyExists(StateError):
    def __init__(self, container_id: str):
        self.container_id = container_id
        super().__init__(f"container with id exists: {container_id}")


class SyscallError(PyociError):
    """A failed system call: names the stage, the call, the path (if any) and errno."""

    def __init__(self, call: str, err: int, path: str | None = None, stage: str | None = None,
                 detail: str | None = None):
        self.call = call
        self.errno = err
        self.path = path
        self.stage = stage
        self.detail = detail
        super().__init__(self._format())

    def _format(self) -> str:
        parts = []
        if self.stage:
            parts.append(f"{self.stage}: ")
        parts.append(self.call)
        if self.path:
            parts.append(f" {self.path}")
        if self.detail:
            parts.append(f" ({self.detail})")
        parts.append(f": {os.strerror(self.errno).lower() if self.errno else 'failed'}")
        return "".join(parts)

    def with_stage(self, stage: str) -> "SyscallError":
        if self.stage is None:
            self.stage = stage
            self.args = (self._format(),)
        return self

    @property
    def errno_name(self) -> str:
        return _errno.errorcode.get(self.errno, str(self.errno))


class StageError(PyociError):
    """A setup stage failed for a reason that is not a single syscall."""

    def __init__(self, stage: str, message: str):
        self.stage = stage
        super().__init__(f"{stage}: {message}")


class HookError(PyociError):
    pass
