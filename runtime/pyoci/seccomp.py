"""The seccomp stage: the parent compiles, the child only loads bytes.

Parent side (before any fork):
    prog = compile_filter(config["linux"]["seccomp"])     # -> SeccompProgram (frozen, picklable)
    log.debug(prog.summary())
Child side (as late as possible, right before exec):
    notify_fd = load(prog)                                # raw seccomp(2); None unless NOTIFY is used
Parent side again, when prog.listener_path is set and the child handed back notify_fd:
    send_to_listener(prog.listener_path, fd, state, prog.listener_metadata)

compile_filter translates `linux.seccomp` with libseccomp (through its Python binding, imported
lazily) and exports the BPF program libseccomp generates; nothing here writes BPF by hand.
load() does not use libseccomp at all, so the child needs nothing but ctypes after pivot_root.

Semantics follow runc: a syscall name libseccomp does not know is skipped with a warning; a
rule whose action equals the default action is skipped (libseccomp refuses it); an errnoRet on
an action that takes none is a config error; ERRNO/TRACE without an errno use EPERM; several
conditions on the same argument index become one rule per condition (OR), otherwise all the
conditions of an entry are one rule (AND).

Note for the caller: the raw seccomp(2) call does not set no_new_privs (libseccomp's own loader
would). Without no_new_privs the kernel requires CAP_SYS_ADMIN, so load before dropping
capabilities when process.noNewPrivileges is false, and after setting it when it is true.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import os
from dataclasses import dataclass

from pyoci.errors import ConfigError, StageError, SyscallError
from pyoci.linux import libc

STAGE = "seccomp"
JSON_PATH = "linux.seccomp"

# --- kernel ABI (include/uapi/linux/seccomp.h, filter.h) ------------------------------------
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1 << 0
SECCOMP_FILTER_FLAG_LOG = 1 << 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_TSYNC_ESRCH = 1 << 4
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5

FLAG_NAMES = {
    SECCOMP_FILTER_FLAG_TSYNC: "SECCOMP_FILTER_FLAG_TSYNC",
    SECCOMP_FILTER_FLAG_LOG: "SECCOMP_FILTER_FLAG_LOG",
    SECCOMP_FILTER_FLAG_SPEC_ALLOW: "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    SECCOMP_FILTER_FLAG_NEW_LISTENER: "SECCOMP_FILTER_FLAG_NEW_LISTENER",
    SECCOMP_FILTER_FLAG_TSYNC_ESRCH: "SECCOMP_FILTER_FLAG_TSYNC_ESRCH",
    SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
}
# the flags a config may name (runtime-spec SeccompFlag)
CONFIG_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": SECCOMP_FILTER_FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": SECCOMP_FILTER_FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}

BPF_MAXINSNS = 4096
SOCK_FILTER_SIZE = 8  # struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }

# libseccomp action values (same numbers as the kernel's SECCOMP_RET_*)
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_NOTIFY = 0x7FC00000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000

ACTIONS = {
    "SCMP_ACT_KILL": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": ACT_TRAP,
    "SCMP_ACT_ERRNO": ACT_ERRNO,
    "SCMP_ACT_TRACE": ACT_TRACE,
    "SCMP_ACT_ALLOW": ACT_ALLOW,
    "SCMP_ACT_LOG": ACT_LOG,
    "SCMP_ACT_NOTIFY": ACT_NOTIFY,
}
ACTIONS_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

# Syscalls the runtime itself makes between load() and exec to hand the notify fd back to the
# parent (channel writes). A NOTIFY rule on them would wait for a listener that cannot have the
# fd yet, so it is refused (youki refuses `write` for the same reason).
NOTIFY_FORBIDDEN = ("write", "writev", "sendmsg", "sendto", "sendmmsg")

OPERATORS = {
    "SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7,
}

# AUDIT_ARCH_* tokens (libseccomp's SCMP_ARCH_* values)
_LE = 0x40000000
_64 = 0x80000000
_N32 = 0x20000000
ARCHES = {
    "SCMP_ARCH_X86": 3 | _LE,
    "SCMP_ARCH_X86_64": 62 | _64 | _LE,
    "SCMP_ARCH_X32": 62 | _LE,
    "SCMP_ARCH_ARM": 40 | _LE,
    "SCMP_ARCH_AARCH64": 183 | _64 | _LE,
    "SCMP_ARCH_LOONGARCH64": 258 | _64 | _LE,
    "SCMP_ARCH_M68K": 4,
    "SCMP_ARCH_MIPS": 8,
    "SCMP_ARCH_MIPS64": 8 | _64,
    "SCMP_ARCH_MIPS64N32": 8 | _64 | _N32,
    "SCMP_ARCH_MIPSEL": 8 | _LE,
    "SCMP_ARCH_MIPSEL64": 8 | _64 | _LE,
    "SCMP_ARCH_MIPSEL64N32": 8 | _64 | _LE | _N32,
    "SCMP_ARCH_PPC": 20,
    "SCMP_ARCH_PPC64": 21 | _64,
    "SCMP_ARCH_PPC64LE": 21 | _64 | _LE,
    "SCMP_ARCH_S390": 22,
    "SCMP_ARCH_S390X": 22 | _64,
    "SCMP_ARCH_SH": 42 | _LE,
    "SCMP_ARCH_SHEB": 42,
    "SCMP_ARCH_PARISC": 15,
    "SCMP_ARCH_PARISC64": 15 | _64,
    "SCMP_ARCH_RISCV64": 243 | _64 | _LE,
}

_U64 = (1 << 64) - 1


def flag_names(flags: int) -> list[str]:
    names = [n for bit, n in FLAG_NAMES.items() if flags & bit]
    rest = flags & ~sum(FLAG_NAMES)
    if rest:
        names.append(f"{rest:#x}")
    return names


def action_name(action: str, errno_ret: int | None) -> str:
    return f"{action}({errno_ret})" if errno_ret is not None else action


@dataclass(frozen=True)
class SeccompProgram:
    """A compiled filter: everything the child needs to load it, plus facts for the logs."""

    bpf: bytes                      # array of struct sock_filter, as exported by libseccomp
    flags: int                      # SECCOMP_FILTER_FLAG_* for seccomp(SECCOMP_SET_MODE_FILTER)
    listener_path: str | None       # set only when an SCMP_ACT_NOTIFY rule exists
    listener_metadata: str
    default_action: str             # e.g. "SCMP_ACT_ERRNO(38)"
    rule_count: int                 # rules handed to libseccomp (after skips and OR-splitting)
    warnings: tuple[str, ...] = ()
    arch_count: int = 1             # architectures in the filter (native included)

    @property
    def instructions(self) -> int:
        return len(self.bpf) // SOCK_FILTER_SIZE

    @property
    def uses_notify(self) -> bool:
        return bool(self.flags & SECCOMP_FILTER_FLAG_NEW_LISTENER)

    def summary(self) -> str:
        fl = ",".join(flag_names(self.flags)) or "none"
        s = (f"seccomp filter: {self.rule_count} rules, default {self.default_action}, "
             f"{self.arch_count} arches, flags {fl}, {self.instructions} BPF instructions")
        if self.listener_path:
            s += f", listener {self.listener_path}"
        if self.warnings:
            s += f", {len(self.warnings)} warnings"
        return s


# --- parent side: compile ----------------------------------------------------------------------
_SONAMES = {"seccomp": "libseccomp.so.2", "c": "libc.so.6"}


def _import_pyseccomp():
    """Import pyseccomp without its ctypes.util.find_library() calls, which run `ldconfig -p`
    in a subprocess (a few ms, far more on a loaded host). While importing, find_library answers with the
    soname when the dynamic loader can open it and falls back to the real lookup otherwise."""
    import ctypes.util
    real = ctypes.util.find_library

    def quick(name):
        soname = _SONAMES.get(name)
        if soname:
            try:
                ctypes.CDLL(soname)
                return soname
            except OSError:
                pass
        return real(name)

    ctypes.util.find_library = quick
    try:
        import pyseccomp  # type: ignore[import-not-found]
    finally:
        ctypes.util.find_library = real
    return pyseccomp


def _s32(v: int) -> int:
    """Actions and arch tokens as C ints: the libseccomp project's binding declares them `int`
    (its own constants are negative); pyseccomp's ctypes uint32 arguments take either form."""
    return v - (1 << 32) if v & 0x80000000 else v


def _binding():
    try:
        import seccomp as binding  # type: ignore[import-not-found]  # the libseccomp project's own
    except ImportError:
        try:
            binding = _import_pyseccomp()
        except (ImportError, RuntimeError) as e:  # pragma: no cover - depends on the host
            raise StageError(STAGE, "linux.seccomp is set but no libseccomp Python binding is "
                                    f"installed (seccomp or pyseccomp): {e}") from None
    return binding


def _resolve(binding, name: str) -> int | None:
    """The syscall number libseccomp gives `name` (maybe a negative pseudo number), or None."""
    try:
        nr = binding.resolve_syscall(0, name)  # 0 = SCMP_ARCH_NATIVE
    except (ValueError, RuntimeError, OSError):
        return None
    if nr is None or nr == -1:  # __NR_SCMP_ERROR
        return None
    return int(nr)


def _is_uint(v, bits: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < (1 << bits)


def _action(where: str, action, errno_ret, problems: list[str], errno_key: str) -> int | None:
    if action not in ACTIONS:
        problems.append(f"{where}: unknown action {action!r} (one of {', '.join(ACTIONS)})")
        return None
    value = ACTIONS[action]
    if errno_ret is not None:
        if action not in ACTIONS_WITH_ERRNO:
            problems.append(f"{where.rsplit('.', 1)[0]}.{errno_key}: {action} takes no errno "
                            f"(only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)")
            return None
        if not _is_uint(errno_ret, 16):
            problems.append(f"{where.rsplit('.', 1)[0]}.{errno_key}: must be an integer "
                            f"0..65535, got {errno_ret!r}")
            return None
    if action in ACTIONS_WITH_ERRNO:
        value |= (_errno.EPERM if errno_ret is None else errno_ret) & 0xFFFF
    return value


def compile_filter(seccomp: dict) -> SeccompProgram:
    """Translate `linux.seccomp` into a BPF program exported by libseccomp.

    Raises ConfigError (one `linux.seccomp...: rule` line per problem) for a profile that
    cannot be honoured, StageError when libseccomp itself fails.
    """
    P = JSON_PATH
    problems: list[str] = []
    warnings: list[str] = []
    if not isinstance(seccomp, dict):
        raise ConfigError(f"{P}: must be an object")

    # default action
    if "defaultAction" not in seccomp:
        problems.append(f"{P}.defaultAction: required")
    default_name = seccomp.get("defaultAction")
    default_errno = seccomp.get("defaultErrnoRet")
    default = None
    if default_name is not None:
        default = _action(f"{P}.defaultAction", default_name, default_errno, problems,
                          "defaultErrnoRet")
        if default_name == "SCMP_ACT_NOTIFY":
            problems.append(f"{P}.defaultAction: SCMP_ACT_NOTIFY cannot be the default action "
                            f"(the runtime's own syscalls would wait for the listener)")

    # flags
    flags = 0
    raw_flags = seccomp.get("flags") or []
    if not isinstance(raw_flags, list):
        problems.append(f"{P}.flags: must be an array")
        raw_flags = []
    for i, f in enumerate(raw_flags):
        if f not in CONFIG_FLAGS:
            problems.append(f"{P}.flags[{i}]: unknown flag {f!r} (one of {', '.join(CONFIG_FLAGS)})")
        else:
            flags |= CONFIG_FLAGS[f]

    # architectures
    arches: list[tuple[str, int]] = []
    raw_arches = seccomp.get("architectures") or []
    if not isinstance(raw_arches, list):
        problems.append(f"{P}.architectures: must be an array")
        raw_arches = []
    for i, a in enumerate(raw_arches):
        if a not in ARCHES:
            problems.append(f"{P}.architectures[{i}]: unknown architecture {a!r}")
        else:
            arches.append((f"{P}.architectures[{i}]", ARCHES[a]))

    # rules (validated before libseccomp sees them)
    rules: list[tuple[str, str, int, list[list[tuple[int, int, int, int]]]]] = []
    raw_rules = seccomp.get("syscalls") or []
    if not isinstance(raw_rules, list):
        problems.append(f"{P}.syscalls: must be an array")
        raw_rules = []
    uses_notify = False
    for i, r in enumerate(raw_rules):
        w = f"{P}.syscalls[{i}]"
        if not isinstance(r, dict):
            problems.append(f"{w}: must be an object")
            continue
        names = r.get("names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            problems.append(f"{w}.names: must be a non-empty array of syscall names")
            names = []
        if "action" not in r:
            problems.append(f"{w}.action: required")
            continue
        act = _action(f"{w}.action", r["action"], r.get("errnoRet"), problems, "errnoRet")
        if act is None:
            continue
        if r["action"] == "SCMP_ACT_NOTIFY":
            uses_notify = True
            bad = [n for n in names if n in NOTIFY_FORBIDDEN]
            if bad:
                problems.append(f"{w}: SCMP_ACT_NOTIFY cannot be used for {', '.join(bad)} "
                                f"(the runtime needs it to hand the notify fd to the listener)")
        conds: list[tuple[int, int, int, int]] = []
        per_index: dict[int, int] = {}
        raw_args = r.get("args") or []
        if not isinstance(raw_args, list):
            problems.append(f"{w}.args: must be an array")
            raw_args = []
        for j, a in enumerate(raw_args):
            aw = f"{w}.args[{j}]"
            if not isinstance(a, dict):
                problems.append(f"{aw}: must be an object")
                continue
            idx, op, v1, v2 = a.get("index"), a.get("op"), a.get("value"), a.get("valueTwo", 0)
            ok = True
            if not (isinstance(idx, int) and not isinstance(idx, bool) and 0 <= idx <= 5):
                problems.append(f"{aw}.index: must be an argument index 0..5, got {idx!r}")
                ok = False
            if op not in OPERATORS:
                problems.append(f"{aw}.op: unknown operator {op!r} (one of {', '.join(OPERATORS)})")
                ok = False
            if not _is_uint(v1, 64):
                problems.append(f"{aw}.value: required, an unsigned 64-bit integer, got {v1!r}")
                ok = False
            if not _is_uint(v2, 64):
                problems.append(f"{aw}.valueTwo: must be an unsigned 64-bit integer, got {v2!r}")
                ok = False
            if ok:
                conds.append((idx, OPERATORS[op], v1, v2))
                per_index[idx] = per_index.get(idx, 0) + 1
        # Several conditions on one argument: one rule per condition (runc does the same).
        cond_sets = [[c] for c in conds] if any(n > 1 for n in per_index.values()) else [conds]
        for n in names:
            rules.append((f"{w}.names", n, act, cond_sets))

    listener_path = seccomp.get("listenerPath")
    metadata = seccomp.get("listenerMetadata", "")
    if listener_path is not None and not isinstance(listener_path, str):
        problems.append(f"{P}.listenerPath: must be a string")
    if not isinstance(metadata, str):
        problems.append(f"{P}.listenerMetadata: must be a string")
        metadata = ""
    if metadata and not listener_path:
        warnings.append(f"{P}.listenerMetadata: set without listenerPath, ignored")
    if uses_notify:
        if not listener_path:
            problems.append(f"{P}.listenerPath: required when SCMP_ACT_NOTIFY is used "
                            f"(nobody would answer the notifications)")
        elif not os.path.isabs(listener_path):
            problems.append(f"{P}.listenerPath: must be an absolute path, got {listener_path!r}")
        flags |= SECCOMP_FILTER_FLAG_NEW_LISTENER
        if flags & SECCOMP_FILTER_FLAG_TSYNC:
            flags |= SECCOMP_FILTER_FLAG_TSYNC_ESRCH  # TSYNC and a listener need it (as libseccomp)
    else:
        if listener_path:
            warnings.append(f"{P}.listenerPath: ignored, no rule uses SCMP_ACT_NOTIFY")
        listener_path = None
        if flags & SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV:
            warnings.append(f"{P}.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV ignored, "
                            f"no rule uses SCMP_ACT_NOTIFY")
            flags &= ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV

    if problems:
        raise ConfigError(problems)

    binding = _binding()
    try:
        filt = binding.SyscallFilter(_s32(default))
    except (OSError, RuntimeError, ValueError) as e:
        raise StageError(STAGE, f"seccomp_init({default_name}) failed: {e}") from None

    arch_count = 1  # the native arch is always in a new filter
    for where, token in arches:
        try:
            # seccomp_arch_exist: True when already in the filter (the native arch, a repeat)
            if filt.exist_arch(_s32(token)):
                continue
            filt.add_arch(_s32(token))
            arch_count += 1
        except (OSError, RuntimeError, ValueError) as e:
            # a spec arch this libseccomp does not know: its syscalls hit the bad-arch action (kill)
            warnings.append(f"{where}: architecture not supported by this libseccomp, skipped ({e})")

    rule_count = 0
    for where, name, act, cond_sets in rules:
        if act == default:
            continue  # same as the default action: libseccomp refuses it, and it changes nothing
        nr = _resolve(binding, name)
        if nr is None:
            warnings.append(f"{where}: unknown syscall {name!r} skipped")
            continue
        for conds in cond_sets:
            args = [binding.Arg(i, op, a, b) for i, op, a, b in conds]
            try:
                filt.add_rule(_s32(act), nr, *args)
            except (OSError, RuntimeError, ValueError) as e:
                problems.append(f"{where}: libseccomp refused the rule for {name!r}: {e}")
                continue
            rule_count += 1
    if problems:
        raise ConfigError(problems)

    bpf = _export_bpf(filt)
    if len(bpf) % SOCK_FILTER_SIZE or not bpf:
        raise StageError(STAGE, f"libseccomp exported a malformed BPF program ({len(bpf)} bytes)")
    if len(bpf) // SOCK_FILTER_SIZE > BPF_MAXINSNS:
        raise StageError(STAGE, f"the seccomp filter has {len(bpf) // SOCK_FILTER_SIZE} BPF "
                                f"instructions, more than the kernel's limit of {BPF_MAXINSNS}")
    return SeccompProgram(
        bpf=bpf, flags=flags, listener_path=listener_path, listener_metadata=metadata,
        default_action=action_name(default_name, (default & 0xFFFF) if default_name in
                                   ACTIONS_WITH_ERRNO else None),
        rule_count=rule_count, warnings=tuple(warnings), arch_count=arch_count)


def _export_bpf(filt) -> bytes:
    fd = os.memfd_create("pyoci-seccomp-bpf", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as f:
            try:
                filt.export_bpf(f)
            except (OSError, RuntimeError, ValueError) as e:
                raise StageError(STAGE, f"seccomp_export_bpf failed: {e}") from None
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


# --- child side: load ----------------------------------------------------------------------
class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _raw_seccomp(flags: int, prog_ptr) -> int:
    return libc._libc.syscall(ctypes.c_long(libc.NR["seccomp"]), ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                              ctypes.c_uint(flags), prog_ptr)


def unsupported_flags(flags: int) -> list[str]:
    """The flags in `flags` this kernel rejects (probing as libseccomp does: a NULL program
    gives EFAULT when the flags are accepted, EINVAL when not)."""
    bad = []
    for bit in sorted(FLAG_NAMES):
        if not flags & bit:
            continue
        probe = bit
        if bit in (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, SECCOMP_FILTER_FLAG_TSYNC_ESRCH):
            probe |= SECCOMP_FILTER_FLAG_NEW_LISTENER  # only valid together with a listener
        if _raw_seccomp(probe, None) < 0 and ctypes.get_errno() == _errno.EINVAL:
            bad.append(FLAG_NAMES[bit])
    rest = flags & ~sum(FLAG_NAMES)
    if rest:
        bad.append(f"{rest:#x}")
    return bad


def load(prog: SeccompProgram) -> int | None:
    """Install the filter in the calling process (child side, right before exec).

    Returns the seccomp notify fd when the program uses SCMP_ACT_NOTIFY, else None. Uses the raw
    seccomp(2) call, not libseccomp: no_new_privs must already be set or the caller must hold
    CAP_SYS_ADMIN.
    """
    n = len(prog.bpf) // SOCK_FILTER_SIZE
    buf = ctypes.create_string_buffer(prog.bpf, len(prog.bpf))
    fprog = _SockFprog(n, ctypes.cast(buf, ctypes.c_void_p))
    ret = _raw_seccomp(prog.flags, ctypes.byref(fprog))
    if ret < 0:
        err = ctypes.get_errno()
        fl = ",".join(flag_names(prog.flags)) or "0"
        detail = f"SECCOMP_SET_MODE_FILTER, flags {fl}, {n} instructions"
        if err == _errno.EINVAL:
            bad = unsupported_flags(prog.flags)
            if bad:
                detail += f"; this kernel does not support {', '.join(bad)}"
        elif err == _errno.EACCES:
            detail += "; needs no_new_privs or CAP_SYS_ADMIN"
        elif err == _errno.ENOMEM:
            detail += "; the filters of this process exceed the kernel's instruction limit"
        raise SyscallError("seccomp", err, stage=STAGE, detail=detail)
    return ret if prog.flags & SECCOMP_FILTER_FLAG_NEW_LISTENER else None


# --- parent side: hand the notify fd to the listener -------------------------------------------
def container_process_state(state: dict, metadata: str) -> dict:
    """The runtime-spec "container process state" sent to a seccomp listener."""
    from pyoci import OCI_VERSION
    return {
        "ociVersion": OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": state.get("pid"),
        "metadata": metadata or "",
        "state": state,
    }


def send_to_listener(listener_path: str, notify_fd: int, state: dict, metadata: str,
                     timeout: float = 10.0) -> None:
    """Connect to the AF_UNIX SOCK_STREAM socket at `listener_path` and send one container
    process state (JSON) with `notify_fd` in SCM_RIGHTS, then close the connection.

    `state` is the container's state (status "creating" at this point; its "pid" is the pid as
    the runtime sees it). `notify_fd` stays open: the caller closes it.
    """
    import json
    import socket

    payload = json.dumps(container_process_state(state, metadata)).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    call = "connect"
    try:
        sock.settimeout(timeout)
        sock.connect(listener_path)
        call = "sendmsg"
        sent = socket.send_fds(sock, [payload], [notify_fd])
        if sent < len(payload):
            sock.sendall(payload[sent:])  # fds went with the first part only (spec#139)
    except socket.timeout:
        raise SyscallError(call, _errno.ETIMEDOUT, listener_path, stage=STAGE,
                           detail="seccomp listener") from None
    except OSError as e:
        raise SyscallError(call, e.errno or _errno.EIO, listener_path, stage=STAGE,
                           detail="seccomp listener") from None
    finally:
        sock.close()
