"""Terminals: a pty from the container's own devpts, the console socket, foreground proxying."""
from __future__ import annotations

import array
import fcntl
import os
import struct
import termios

from pyoci.errors import StageError, SyscallError

TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430


def open_pty() -> tuple[int, str]:
    """In the container (after pivot_root): open /dev/ptmx of its devpts; returns (master, slave path)."""
    try:
        master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise SyscallError("open", e.errno, "/dev/ptmx", stage="terminal") from None
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    buf = array.array("i", [0])
    fcntl.ioctl(master, TIOCGPTN, buf, True)
    return master, f"/dev/pts/{buf[0]}"


def attach_slave(slave_path: str, size: tuple[int, int] | None = None) -> None:
    """Make the slave our controlling terminal and stdio (new session)."""
    try:
        slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY)
    except OSError as e:
        raise SyscallError("open", e.errno, slave_path, stage="terminal") from None
    if size:
        set_winsize(slave, int(size[0]), int(size[1]))   # (height, width)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def send_console(socket_path: str, master: int) -> None:
    """Connect once to the client's socket and send the master in one SCM_RIGHTS message."""
    import socket  # the parent only, with --console-socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(socket_path)
        socket.send_fds(s, [b"/dev/ptmx"], [master])
    except OSError as e:
        raise SyscallError("connect", e.errno, socket_path, stage="terminal",
                           detail="console socket") from None
    finally:
        s.close()


def check_console_socket(path: str) -> None:
    import stat
    try:
        st = os.stat(path)
    except OSError as e:
        raise SyscallError("stat", e.errno, path, stage="terminal", detail="console socket") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise StageError("terminal", f"console socket {path} is not a socket")


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def proxy(master: int, pid_alive) -> None:
    """Foreground `run -t` without a console socket: copy between our tty and the master."""
    import select
    import tty
    stdin_tty = os.isatty(0)
    old = None
    if stdin_tty:
        old = termios.tcgetattr(0)
        tty.setraw(0)
        try:
            rows, cols = os.get_terminal_size(0)
            set_winsize(master, rows, cols)
        except OSError:
            pass
    try:
        fds = [master, 0]
        out_ok = True
        while True:
            r, _, _ = select.select(fds, [], [], 0.2)
            if master in r:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                if out_ok:
                    try:
                        _write_all(1, data)
                    except OSError:
                        # our stdout is gone (a closed pipe): keep draining the pty so the
                        # process never blocks on it, and keep waiting for it, as runc does
                        out_ok = False
            if 0 in r:
                try:
                    data = os.read(0, 65536)
                except OSError:
                    data = b""
                if not data:
                    fds.remove(0)
                else:
                    try:
                        _write_all(master, data)
                    except OSError:
                        fds.remove(0)
            if not r and not pid_alive():
                break
    finally:
        if old is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, old)
