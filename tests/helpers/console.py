"""The client side of `--console-socket` (as conmon and the containerd shim do it), and
reading a pty master with a time bound."""
from __future__ import annotations

import os
import select
import socket
import time


def console_listener(tmp_path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    return srv, path


def recv_master(srv: socket.socket, timeout: float = 10) -> tuple[bytes, list[int]]:
    """Accept the runtime's one connection: returns (payload, fds)."""
    srv.settimeout(timeout)
    conn, _ = srv.accept()
    msg, fds, _flags, _ = socket.recv_fds(conn, 4096, 4)
    conn.close()
    return msg, fds


def read_until(fd: int, needle: bytes, timeout: float = 10.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf
