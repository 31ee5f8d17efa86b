"""bpf(2) through ctypes: load a cgroup device program and attach/replace it on a cgroup dir.

No libbpf. Kernels >= 5.11 charge BPF memory to the memory cgroup, so RLIMIT_MEMLOCK (which
cannot be raised here) does not matter.
"""
from __future__ import annotations

import ctypes
import os

from pyoci.errors import StageError, SyscallError
from pyoci.linux import libc

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

_ATTR_SIZE = 128   # larger than every layout used here; the tail stays zero


class _Attr(ctypes.Structure):
    _fields_ = [("raw", ctypes.c_ubyte * _ATTR_SIZE)]


def _attr(**fields) -> _Attr:
    """Build a zeroed bpf_attr and set fields at their (offset, ctype)."""
    a = _Attr()
    base = ctypes.addressof(a)
    for _, (off, ctype, value) in fields.items():
        ctype.from_address(base + off).value = value
    return a


def _bpf(cmd: int, attr: _Attr, what: str, path: str | None) -> int:
    try:
        return libc.syscall("bpf", ctypes.c_int(cmd), ctypes.byref(attr),
                            ctypes.c_uint(_ATTR_SIZE))
    except SyscallError as e:
        raise SyscallError(f"bpf({what})", e.errno, path, stage="cgroup") from None


def load_device_program(insns: bytes, path: str | None = None) -> int:
    """BPF_PROG_LOAD a BPF_PROG_TYPE_CGROUP_DEVICE program; returns its fd (close-on-exec).
    On a verifier rejection the message carries the verifier log."""
    buf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"Apache")
    # note: the device cgroup hook is not GPL-only, any license string works
    u32, u64 = ctypes.c_uint32, ctypes.c_uint64

    def attr(log_buf=None, log_size=0, level=0):
        return _attr(prog_type=(0, u32, BPF_PROG_TYPE_CGROUP_DEVICE),
                     insn_cnt=(4, u32, len(insns) // 8),
                     insns=(8, u64, ctypes.addressof(buf)),
                     license=(16, u64, ctypes.addressof(lic)),
                     log_level=(24, u32, level), log_size=(28, u32, log_size),
                     log_buf=(32, u64, ctypes.addressof(log_buf) if log_buf is not None else 0),
                     expected_attach_type=(68, u32, BPF_CGROUP_DEVICE))
    try:
        return _bpf(BPF_PROG_LOAD, attr(), "BPF_PROG_LOAD", path)
    except SyscallError as e:
        if e.errno not in (22, 13):   # EINVAL / EACCES: ask the verifier why
            raise
        log = ctypes.create_string_buffer(1 << 16)
        try:
            fd = _bpf(BPF_PROG_LOAD, attr(log, len(log), 1), "BPF_PROG_LOAD", path)
        except SyscallError:
            e.detail = "verifier: " + log.value.decode(errors="replace").strip()[-500:]
            e.args = (e._format(),)
            raise e from None
        return fd


def query_device_programs(cgroup_fd: int, path: str | None = None) -> list[int]:
    """IDs of the device programs attached directly to this cgroup."""
    ids = (ctypes.c_uint32 * 64)()
    a = _attr(target_fd=(0, ctypes.c_uint32, cgroup_fd),
              attach_type=(4, ctypes.c_uint32, BPF_CGROUP_DEVICE),
              prog_ids=(16, ctypes.c_uint64, ctypes.addressof(ids)),
              prog_cnt=(24, ctypes.c_uint32, len(ids)))
    _bpf(BPF_PROG_QUERY, a, "BPF_PROG_QUERY", path)
    cnt = ctypes.c_uint32.from_address(ctypes.addressof(a) + 24).value
    return [ids[i] for i in range(min(cnt, len(ids)))]


def prog_fd_by_id(prog_id: int, path: str | None = None) -> int:
    a = _attr(prog_id=(0, ctypes.c_uint32, prog_id))
    return _bpf(BPF_PROG_GET_FD_BY_ID, a, "BPF_PROG_GET_FD_BY_ID", path)


def attach(cgroup_fd: int, prog_fd: int, path: str | None = None) -> None:
    a = _attr(target_fd=(0, ctypes.c_uint32, cgroup_fd),
              attach_bpf_fd=(4, ctypes.c_uint32, prog_fd),
              attach_type=(8, ctypes.c_uint32, BPF_CGROUP_DEVICE),
              attach_flags=(12, ctypes.c_uint32, BPF_F_ALLOW_MULTI))
    _bpf(BPF_PROG_ATTACH, a, "BPF_PROG_ATTACH", path)


def detach(cgroup_fd: int, prog_fd: int, path: str | None = None) -> None:
    a = _attr(target_fd=(0, ctypes.c_uint32, cgroup_fd),
              attach_bpf_fd=(4, ctypes.c_uint32, prog_fd),
              attach_type=(8, ctypes.c_uint32, BPF_CGROUP_DEVICE))
    _bpf(BPF_PROG_DETACH, a, "BPF_PROG_DETACH", path)


def replace_device_program(cgroup_dir: str, insns: bytes | None) -> None:
    """Attach `insns` to the cgroup, then detach every device program that was attached there
    before (so there is never a moment without a filter). insns=None only detaches."""
    try:
        cg = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise SyscallError("open", e.errno, cgroup_dir, stage="cgroup") from None
    try:
        old = query_device_programs(cg, cgroup_dir)
        if insns is not None:
            prog = load_device_program(insns, cgroup_dir)
            try:
                attach(cg, prog, cgroup_dir)
            finally:
                os.close(prog)
            new = set(query_device_programs(cg, cgroup_dir)) - set(old)
            if not new:
                raise StageError("cgroup", f"device program did not attach to {cgroup_dir}")
        for pid in old:
            try:
                fd = prog_fd_by_id(pid, cgroup_dir)
            except SyscallError as e:
                if e.errno == 2:    # gone meanwhile
                    continue
                raise
            try:
                detach(cg, fd, cgroup_dir)
            except SyscallError as e:
                if e.errno != 2:
                    raise
            finally:
                os.close(fd)
    finally:
        os.close(cg)
