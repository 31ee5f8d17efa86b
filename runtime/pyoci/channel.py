"""The one message protocol between the runtime (parent) and the container side (child).

A SOCK_SEQPACKET socketpair: one datagram per message, a JSON object with a "type",
optionally carrying file descriptors (SCM_RIGHTS). The conversation during `create`,
in order (the parent checks the order with `Expect`):

  child                         parent
  USERNS_READY {pid}     →      writes uid_map/gid_map      ← ACK
  CGROUP_READY {pid}     →      creates the cgroup, moves pid in ← ACK
  INIT_PID {pid}         →      (intermediate exits; pid is the container init)
  SETUP_DONE             →      network stage, prestart + createRuntime hooks ← ACK
  CONSOLE [fd]           →      sends the pty master to --console-socket (terminal only)
  NOTIFY_FD [fd]         →      sends the seccomp fd to listenerPath (SCMP_ACT_NOTIFY only)
  READY                  →      writes pid file and state ← GO {state}
  ERROR {stage, call, errno, path, message}  at any point → the parent aborts and cleans up
"""
from __future__ import annotations

import json
import os
import _socket  # not socket.py: it imports selectors and builds four IntEnums (~2.5 ms)
import struct
from pyoci._record import dataclass, field

from pyoci.errors import PyociError, StageError, SyscallError

USERNS_READY = "userns-ready"
CGROUP_READY = "cgroup-ready"
INIT_PID = "init-pid"
SETUP_DONE = "setup-done"
CONSOLE = "console"
NOTIFY_FD = "notify-fd"
READY = "ready"
ACK = "ack"
GO = "go"
ERROR = "error"

_MAX = 65536


@dataclass
class Msg:
    type: str
    data: dict = field(default_factory=dict)
    fds: list[int] = field(default_factory=list)


class ChannelClosed(PyociError):
    pass


class Channel:
    def __init__(self, sock: socket.socket):
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple["Channel", "Channel"]:
        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        return cls(a), cls(b)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send(self, type_: str, fds: list[int] | None = None, **data) -> None:
        payload = json.dumps({"type": type_, **data}).encode()
        if fds:
            self.sock.sendmsg([payload], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                           struct.pack(f"{len(fds)}i", *fds))])
        else:
            self.sock.send(payload)

    def recv(self, timeout: float | None = None) -> Msg:
        self.sock.settimeout(timeout)
        try:
            payload, anc, _flags, _addr = self.sock.recvmsg(_MAX, _socket.CMSG_SPACE(4 * 4))
        except TimeoutError:
            raise StageError("channel", f"no message from the container process within {timeout}s") from None
        if not payload:
            raise ChannelClosed("the container process exited during setup")
        fds = []
        for level, kind, data in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                n = len(data) // 4
                fds.extend(struct.unpack(f"{n}i", data[:4 * n]))
        obj = json.loads(payload)
        t = obj.pop("type")
        return Msg(t, obj, list(fds))

    def expect(self, *types: str, timeout: float | None = None) -> Msg:
        """Receive the next message; an ERROR frame becomes the exception it describes."""
        m = self.recv(timeout)
        if m.type == ERROR:
            raise error_from_frame(m.data)
        if m.type not in types:
            raise StageError("channel", f"protocol error: expected {'/'.join(types)}, got {m.type}")
        return m

    def send_error(self, exc: BaseException, stage: str) -> None:
        self.send(ERROR, **error_to_frame(exc, stage))


def error_to_frame(exc: BaseException, stage: str) -> dict:
    if isinstance(exc, SyscallError):
        return {"kind": "syscall", "stage": exc.stage or stage, "call": exc.call, "errno": exc.errno,
                "path": exc.path, "detail": exc.detail}
    if isinstance(exc, StageError):
        return {"kind": "stage", "stage": exc.stage, "message": str(exc)[len(exc.stage) + 2:]}
    if isinstance(exc, PyociError):
        return {"kind": "plain", "stage": stage, "message": str(exc)}
    if isinstance(exc, OSError):
        return {"kind": "syscall", "stage": stage, "call": "os", "errno": exc.errno or 0,
                "path": exc.filename, "detail": exc.strerror}
    return {"kind": "stage", "stage": stage, "message": f"{type(exc).__name__}: {exc}"}


def error_from_frame(f: dict) -> PyociError:
    kind = f.get("kind")
    if kind == "syscall":
        return SyscallError(f.get("call", "?"), int(f.get("errno") or 0), f.get("path"),
                            stage=f.get("stage"), detail=f.get("detail"))
    if kind == "plain":
        return PyociError(f.get("message", "unknown error"))
    return StageError(f.get("stage", "?"), f.get("message", "unknown error"))
