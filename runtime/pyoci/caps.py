"""Linux capability names and numbers (include/uapi/linux/capability.h), CAP_CHOWN..CAP_CHECKPOINT_RESTORE.

Pure data and small helpers: names are the spec's spelling ("CAP_NET_ADMIN"), masks are
ints with bit N set for capability N.
"""
from __future__ import annotations


_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)

#: "CAP_CHOWN" -> 0, ... "CAP_CHECKPOINT_RESTORE" -> 40
CAP_BY_NAME: dict[str, int] = {f"CAP_{n}": i for i, n in enumerate(_NAMES)}
#: 0 -> "CAP_CHOWN", ...
CAP_BY_NUMBER: dict[int, str] = {i: name for name, i in CAP_BY_NAME.items()}
#: the highest capability this table knows
CAP_LAST_KNOWN = len(_NAMES) - 1
#: every capability this table knows, as a mask
ALL_KNOWN_MASK = (1 << (CAP_LAST_KNOWN + 1)) - 1


def cap_number(name: str) -> int | None:
    """The number of capability `name` ("CAP_SYS_ADMIN"), or None if it is unknown.
    Names are matched exactly, as runc does (upper case, with the CAP_ prefix)."""
    return CAP_BY_NAME.get(name) if isinstance(name, str) else None


def cap_name(number: int) -> str:
    """The name of capability `number`; "CAP_<n>" for a number past the table."""
    return CAP_BY_NUMBER.get(number, f"CAP_{number}")


def names_to_mask(names: Iterable[str]) -> tuple[int, list[str]]:
    """(mask, unknown names, in order of appearance and without repeats)."""
    mask = 0
    unknown: list[str] = []
    for n in names:
        num = cap_number(n)
        if num is None:
            if n not in unknown:
                unknown.append(n)
        else:
            mask |= 1 << num
    return mask, unknown


def mask_to_names(mask: int) -> list[str]:
    """Capability names set in `mask`, lowest number first."""
    out = []
    i = 0
    while mask >> i:
        if (mask >> i) & 1:
            out.append(cap_name(i))
        i += 1
    return out


def mask_bits(mask: int) -> list[int]:
    """Capability numbers set in `mask`, lowest first."""
    return [i for i in range(mask.bit_length()) if (mask >> i) & 1]
