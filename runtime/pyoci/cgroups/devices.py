"""Device rules → a BPF_PROG_TYPE_CGROUP_DEVICE program. Pure: builds bytes, loads nothing.

Semantics (spec#123): rules apply in order, so for every access bit the LAST rule that matches
the device (type, major, minor) and names that bit decides it; a bit no rule names is denied.
A request (which may carry several bits, e.g. read+write for O_RDWR) is allowed only when all
its bits are allowed.

The program walks the rules from last to first with the undecided bits in r4: a matching deny
rule that names an undecided bit denies at once; a matching allow rule clears its bits from r4
and allows once r4 is empty. Falling off the end denies.
"""
from __future__ import annotations

import struct

from pyoci.errors import ConfigError

# runc's default allow list (appended after the config's rules, as runc does): mknod of any
# device, the standard character devices, the console and pty devices, and tun (runc >= 1.2.1).
DEFAULT_ALLOWED_DEVICES: list[dict] = [
    {"allow": True, "type": "c", "access": "m"},                               # mknod c *:*
    {"allow": True, "type": "b", "access": "m"},                               # mknod b *:*
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},     # /dev/null
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},     # /dev/random
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},     # /dev/full
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},     # /dev/tty
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},     # /dev/zero
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},     # /dev/urandom
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},     # /dev/console
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},               # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},     # /dev/ptmx
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},  # /dev/net/tun
]

# bpf_cgroup_dev_ctx: access_type = (access << 16) | type; then major, minor (u32 each)
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
_TYPES = {"a": 0, "b": DEV_BLOCK, "c": DEV_CHAR}
_ACCESS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}

# opcodes (linux/bpf_common.h, linux/bpf.h)
_LDX_MEM_W = 0x61       # dst = *(u32 *)(src + off)
_MOV64_X = 0xbf
_MOV64_K = 0xb7
_AND64_K = 0x57
_RSH64_K = 0x77
_JNE_K = 0x55
_JEQ_K = 0x15
_EXIT = 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


class Rule(tuple):
    """(allow, type 0|1|2 (0 = any), major or -1, minor or -1, access bits)."""
    __slots__ = ()

    def __new__(cls, allow, dtype, major, minor, access):
        return super().__new__(cls, (allow, dtype, major, minor, access))

    allow = property(lambda s: s[0])
    type = property(lambda s: s[1])
    major = property(lambda s: s[2])
    minor = property(lambda s: s[3])
    access = property(lambda s: s[4])


def normalize_rules(rules: list[dict], path: str = "linux.resources.devices") -> list[Rule]:
    """OCI device cgroup entries → Rules. Unset type = a, unset major/minor = any (-1),
    unset access = rwm. Raises ConfigError naming every bad entry."""
    out, problems = [], []
    for i, r in enumerate(rules or []):
        where = f"{path}[{i}]"
        if not isinstance(r, dict) or not isinstance(r.get("allow"), bool):
            problems.append(f"{where}.allow: required boolean")
            continue
        t = r.get("type") or "a"
        if t not in _TYPES:
            problems.append(f"{where}.type: must be a, b or c, got {t!r}")
            continue
        nums = []
        for key in ("major", "minor"):
            v = r.get(key)
            if v is None:
                v = -1
            if not isinstance(v, int) or v < -1 or v > 0xFFFFFFFF:
                problems.append(f"{where}.{key}: must be a device number or -1, got {v!r}")
                v = None
            nums.append(v)
        acc = r.get("access")
        if acc is None or acc == "":
            acc = "rwm"
        bits = 0
        if not isinstance(acc, str) or any(c not in _ACCESS for c in acc):
            problems.append(f"{where}.access: must be a subset of rwm, got {acc!r}")
            continue
        for c in acc:
            bits |= _ACCESS[c]
        if None in nums:
            continue
        out.append(Rule(r["allow"], _TYPES[t], nums[0], nums[1], bits))
    if problems:
        raise ConfigError(problems)
    return out


def check(rules: list[Rule], dtype: int, major: int, minor: int, access: int) -> bool:
    """Reference semantics of the generated program, in Python (used by the unit tests)."""
    undecided = access
    for r in reversed(rules):
        if r.type and r.type != dtype:
            continue
        if r.major != -1 and r.major != major:
            continue
        if r.minor != -1 and r.minor != minor:
            continue
        if not r.access & undecided:
            continue
        if not r.allow:
            return False
        undecided &= ~r.access
        if not undecided:
            return True
    return False


def build_program(rules: list[Rule]) -> bytes:
    """The BPF program (raw struct bpf_insn array) that enforces `rules`."""
    # r1 = ctx. r2 = type, r3 = major, r4 = undecided access bits, r5 = minor, r6 scratch
    prologue = [
        _insn(_LDX_MEM_W, 2, 1, 0),
        _insn(_MOV64_X, 4, 2),
        _insn(_AND64_K, 2, imm=0xFFFF),
        _insn(_RSH64_K, 4, imm=16),
        _insn(_LDX_MEM_W, 3, 1, 4),
        _insn(_LDX_MEM_W, 5, 1, 8),
    ]
    blocks = []
    for r in reversed(rules):
        # each block is a list of (code, dst, src, off_or_NEXT, imm); NEXT = jump past block
        b = []
        if r.type:
            b.append((_JNE_K, 2, 0, "NEXT", r.type))
        if r.major != -1:
            b.append((_JNE_K, 3, 0, "NEXT", _s32(r.major)))
        if r.minor != -1:
            b.append((_JNE_K, 5, 0, "NEXT", _s32(r.minor)))
        b.append((_MOV64_X, 6, 4, 0, 0))
        b.append((_AND64_K, 6, 0, 0, r.access))
        b.append((_JEQ_K, 6, 0, "NEXT", 0))
        if not r.allow:
            b.append((_MOV64_K, 0, 0, 0, 0))
            b.append((_EXIT, 0, 0, 0, 0))
        else:
            b.append((_AND64_K, 4, 0, 0, _s32(~r.access & 0xFFFFFFFF)))
            b.append((_JNE_K, 4, 0, "NEXT", 0))
            b.append((_MOV64_K, 0, 0, 0, 1))
            b.append((_EXIT, 0, 0, 0, 0))
        blocks.append(b)
    code = list(prologue)
    for b in blocks:
        n = len(b)
        for i, (op, dst, src, off, imm) in enumerate(b):
            if off == "NEXT":
                off = n - i - 1
            code.append(_insn(op, dst, src, off, imm))
    code.append(_insn(_MOV64_K, 0, imm=0))
    code.append(_insn(_EXIT))
    return b"".join(code)


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def emulate(program: bytes, dtype: int, major: int, minor: int, access: int) -> int:
    """A tiny interpreter for exactly the instructions build_program emits, so the unit tests
    can prove the bytes (not only the reference semantics) decide as intended."""
    regs = [0] * 11
    ctx = ((access << 16) | dtype, major, minor)
    n = len(program) // 8
    pc = 0
    mask = (1 << 64) - 1
    while pc < n:
        code, regs_b, off, imm = struct.unpack_from("<BBhi", program, pc * 8)
        dst, src = regs_b & 0xF, regs_b >> 4
        pc += 1
        if code == _LDX_MEM_W:
            regs[dst] = ctx[off // 4]
        elif code == _MOV64_X:
            regs[dst] = regs[src]
        elif code == _MOV64_K:
            regs[dst] = imm & mask
        elif code == _AND64_K:
            regs[dst] &= imm & mask
        elif code == _RSH64_K:
            regs[dst] >>= imm
        elif code == _JNE_K:
            if regs[dst] != imm & mask:
                pc += off
        elif code == _JEQ_K:
            if regs[dst] == imm & mask:
                pc += off
        elif code == _EXIT:
            return regs[0]
        else:
            raise ValueError(f"unknown opcode {code:#x}")
    raise ValueError("program fell off the end")
