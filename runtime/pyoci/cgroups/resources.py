"""OCI `linux.resources` → cgroup v2 interface files. Pure: no file system access.

`convert_resources(resources, has_file)` returns an ordered {filename: value} map. A value with
several lines (io.max for several devices, per-device weights, multi-line unified values) is
written one line per write(2) by the caller. `has_file(name)` tells whether an optional file
exists in the target cgroup (io.bfq.weight, hugetlb.*.rsvd.max, memory.swap.max); the default
says "yes" to everything, which is what the unit tests of the tables use.

v1-only settings that have no v2 meaning are errors (spec#132), reported as one
`linux.resources.<path>: <rule>` line per problem in a ConfigError.
"""
from __future__ import annotations

import math

from pyoci.errors import ConfigError, UsageError

P = "linux.resources"
# the controller that owns each interface file prefix ("cgroup." files need none)
CONTROLLERS = ("cpu", "cpuset", "io", "memory", "hugetlb", "pids", "rdma", "misc")


def _is_pagesize(s) -> bool:
    """<digits><K|M|G>B, e.g. 2MB, 1GB, 64KB (the hugetlb file name form)."""
    return (isinstance(s, str) and len(s) >= 3 and s.endswith("B") and s[-2] in "KMG"
            and s[:-2].isdigit() and s[:-2].isascii())


def controller_of(filename: str) -> str | None:
    """The controller a cgroup interface file belongs to; None for core (cgroup.*) files."""
    prefix = filename.split(".", 1)[0]
    return None if prefix == "cgroup" else prefix


def required_controllers(files: dict[str, str]) -> list[str]:
    out: list[str] = []
    for name in files:
        c = controller_of(name)
        if c and c not in out:
            out.append(c)
    return out


# --- runc's conversion formulas -----------------------------------------------------------
def cpu_shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares [2..262144] → v2 cpu.weight [1..10000]: the quadratic (in log2)
    curve runc and crun use, which maps the defaults onto each other (1024 → 100)."""
    if shares == 0:
        return 0
    if shares <= 2:
        return 1
    if shares >= 262144:
        return 10000
    lg = math.log2(shares)
    exponent = (lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0
    return int(math.ceil(10 ** exponent))


def blkio_weight_to_io_weight(weight: int) -> int:
    """blkio.weight [10..1000] → io.weight [1..10000], linearly (runc's formula)."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def memory_swap_to_v2(swap: int, memory: int) -> int:
    """OCI swap is memory+swap; v2 memory.swap.max is swap alone. -1 = max, 0 = unset.
    Raises ValueError with the reason when the pair makes no sense."""
    if memory == -1 and swap == 0:
        return -1          # unlimited memory and no swap given: unlimited swap too
    if swap in (-1, 0):
        return swap
    if memory == -1:
        return swap
    if memory == 0:
        raise ValueError("a swap limit needs a memory limit")
    if memory < 0:
        raise ValueError(f"invalid memory value {memory}")
    if swap < memory:
        raise ValueError(f"memory+swap limit {swap} is below the memory limit {memory}")
    return swap - memory


def _num(v: int) -> str:
    """-1 → "max"; 0 → "" (unset); else the number."""
    if v == -1:
        return "max"
    if v == 0:
        return ""
    return str(v)


# --- the table --------------------------------------------------------------------------
def convert_resources(resources: dict | None,
                      has_file: "Callable[[str], bool] | None" = None) -> dict[str, str]:
    """OCI linux.resources → ordered {cgroup v2 file: value}. `devices` is not handled here
    (see cgroups.devices). Raises ConfigError listing every setting that cannot be converted."""
    if not resources:
        return {}
    has = has_file or (lambda name: True)
    out: dict[str, str] = {}
    problems: list[str] = []

    _pids(resources.get("pids"), out, problems)
    _memory(resources.get("memory"), out, problems, has)
    _blockio(resources.get("blockIO"), out, problems, has)
    _cpu(resources.get("cpu"), out, problems)
    _hugetlb(resources.get("hugepageLimits"), out, problems, has)
    _rdma(resources.get("rdma"), out, problems)
    net = resources.get("network")
    if net and (net.get("classID") is not None or net.get("priorities")):
        problems.append(f"{P}.network: net_cls/net_prio exist only in cgroup v1 and cannot be "
                        "converted to cgroup v2")
    _unified(resources.get("unified"), out, problems)
    if problems:
        raise ConfigError(problems)
    return out


def _pids(pids, out, problems):
    if not pids or pids.get("limit") is None:
        return
    limit = pids["limit"]
    if not isinstance(limit, int) or limit < -1:
        problems.append(f"{P}.pids.limit: must be an integer >= -1, got {limit!r}")
        return
    # spec#129: 0 is a real limit of 0; -1 (or any negative) means no limit
    out["pids.max"] = "max" if limit < 0 else str(limit)


def _memory(mem, out, problems, has):
    if not mem:
        return
    path = f"{P}.memory"
    for key, why in (("kernel", "kernel memory accounting cannot be limited separately"),
                     ("kernelTCP", "kernel TCP memory cannot be limited separately"),
                     ("swappiness", "there is no per-cgroup swappiness")):
        if mem.get(key) is not None:
            problems.append(f"{path}.{key}: not supported on cgroup v2 ({why})")
    if mem.get("disableOOMKiller"):
        problems.append(f"{path}.disableOOMKiller: not supported on cgroup v2 (the OOM killer "
                        "cannot be disabled per cgroup)")
    if mem.get("useHierarchy") is False:
        problems.append(f"{path}.useHierarchy: cgroup v2 is always hierarchical; false cannot "
                        "be honoured")
    limit = mem.get("limit") or 0
    reservation = mem.get("reservation") or 0
    swap = mem.get("swap") or 0
    for key, v in (("limit", limit), ("reservation", reservation), ("swap", swap)):
        if not isinstance(v, int) or v < -1:
            problems.append(f"{path}.{key}: must be -1 (unlimited) or a byte count, got {v!r}")
            return
    if limit == 0 and reservation == 0 and swap == 0:
        return
    try:
        v2swap = memory_swap_to_v2(swap, limit)
    except ValueError as e:
        problems.append(f"{path}.swap: {e}")
        return
    swap_str = _num(v2swap)
    if swap_str == "" and v2swap == 0 and swap > 0:
        swap_str = "0"     # swap == limit: no swap at all
    if swap_str:
        # without swap accounting the file is missing: "max" and "0" then mean nothing to do
        if has("memory.swap.max") or swap_str not in ("max", "0"):
            out["memory.swap.max"] = swap_str
    if _num(limit):
        out["memory.max"] = _num(limit)
    if _num(reservation):
        out["memory.low"] = _num(reservation)


def _dev(entry, where, problems) -> str | None:
    try:
        major, minor = entry["major"], entry["minor"]
    except (KeyError, TypeError):
        problems.append(f"{where}: needs major and minor")
        return None
    if not isinstance(major, int) or not isinstance(minor, int) or major < 0 or minor < 0:
        problems.append(f"{where}: major and minor must be non-negative integers")
        return None
    return f"{major}:{minor}"


def _blockio(bio, out, problems, has):
    if not bio:
        return
    path = f"{P}.blockIO"
    bfq = has("io.bfq.weight")
    if bio.get("leafWeight") is not None:
        problems.append(f"{path}.leafWeight: not supported on cgroup v2 (no leaf weights)")
    weights: list[str] = []
    weight = bio.get("weight")
    if weight:
        if not isinstance(weight, int) or not 10 <= weight <= 1000:
            problems.append(f"{path}.weight: must be 10..1000, got {weight!r}")
        elif bfq:
            out["io.bfq.weight"] = str(weight)
        else:
            out["io.weight"] = str(blkio_weight_to_io_weight(weight))
    for i, wd in enumerate(bio.get("weightDevice") or []):
        where = f"{path}.weightDevice[{i}]"
        dev = _dev(wd, where, problems)
        if dev is None:
            continue
        if wd.get("weight") is None and wd.get("leafWeight") is None:
            problems.append(f"{where}: needs weight or leafWeight")
            continue
        if wd.get("leafWeight") is not None:
            problems.append(f"{where}.leafWeight: not supported on cgroup v2 (no leaf weights)")
            continue
        w = wd["weight"]
        if not isinstance(w, int) or not 10 <= w <= 1000:
            problems.append(f"{where}.weight: must be 10..1000, got {w!r}")
            continue
        weights.append(f"{dev} {w if bfq else blkio_weight_to_io_weight(w)}")
    if weights:
        key = "io.bfq.weight" if bfq else "io.weight"
        out[key] = "\n".join(([out[key]] if key in out else []) + weights)
    limits: dict[str, list[str]] = {}
    for field, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                        ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for i, td in enumerate(bio.get(field) or []):
            where = f"{path}.{field}[{i}]"
            dev = _dev(td, where, problems)
            rate = td.get("rate") if isinstance(td, dict) else None
            if dev is None:
                continue
            if not isinstance(rate, int) or rate < 0:
                problems.append(f"{where}.rate: must be a non-negative integer, got {rate!r}")
                continue
            limits.setdefault(dev, []).append(f"{name}={rate}")
    if limits:
        out["io.max"] = "\n".join(f"{dev} {' '.join(kv)}" for dev, kv in limits.items())


def _cpu(cpu, out, problems):
    if not cpu:
        return
    path = f"{P}.cpu"
    for key in ("realtimeRuntime", "realtimePeriod"):
        if cpu.get(key):
            problems.append(f"{path}.{key}: not supported on cgroup v2 (no real-time group "
                            "scheduling)")
    shares = cpu.get("shares")
    if shares:
        if not isinstance(shares, int) or shares < 0:
            problems.append(f"{path}.shares: must be a positive integer, got {shares!r}")
        else:
            out["cpu.weight"] = str(cpu_shares_to_weight(shares))
    quota = cpu.get("quota") or 0
    period = cpu.get("period") or 0
    if quota or period:
        if not isinstance(quota, int) or not isinstance(period, int) or period < 0:
            problems.append(f"{path}: quota and period must be integers (period >= 0)")
        else:
            value = str(quota) if quota > 0 else "max"
            if period:
                value += f" {period}"
            out["cpu.max"] = value
    burst = cpu.get("burst")
    if burst is not None:
        if not isinstance(burst, int) or burst < 0:
            problems.append(f"{path}.burst: must be a non-negative integer, got {burst!r}")
        elif quota > 0 and burst > quota:
            problems.append(f"{path}.burst: {burst} is larger than quota {quota} (spec: a "
                            "positive quota must be >= burst)")
        else:
            out["cpu.max.burst"] = str(burst)
    idle = cpu.get("idle")
    if idle is not None:
        if idle not in (0, 1):
            problems.append(f"{path}.idle: must be 0 or 1, got {idle!r}")
        else:
            out["cpu.idle"] = str(idle)
    if cpu.get("cpus"):
        out["cpuset.cpus"] = str(cpu["cpus"])
    if cpu.get("mems"):
        out["cpuset.mems"] = str(cpu["mems"])


def _hugetlb(limits, out, problems, has):
    for i, hp in enumerate(limits or []):
        where = f"{P}.hugepageLimits[{i}]"
        size = hp.get("pageSize") if isinstance(hp, dict) else None
        limit = hp.get("limit") if isinstance(hp, dict) else None
        if not _is_pagesize(size):
            problems.append(f"{where}.pageSize: must look like 2MB or 1GB, got {size!r}")
            continue
        if not isinstance(limit, int) or limit < 0:
            problems.append(f"{where}.limit: must be a non-negative byte count, got {limit!r}")
            continue
        out[f"hugetlb.{size}.max"] = str(limit)
        # spec: reservation limits are used when the kernel has them
        rsvd = f"hugetlb.{size}.rsvd.max"
        if has(rsvd):
            out[rsvd] = str(limit)


def _rdma(rdma, out, problems):
    lines = []
    for dev, lim in (rdma or {}).items():
        where = f"{P}.rdma.{dev}"
        if not isinstance(lim, dict) or (lim.get("hcaHandles") is None
                                         and lim.get("hcaObjects") is None):
            problems.append(f"{where}: needs hcaHandles or hcaObjects")
            continue
        parts = [dev]
        if lim.get("hcaHandles") is not None:
            parts.append(f"hca_handle={lim['hcaHandles']}")
        if lim.get("hcaObjects") is not None:
            parts.append(f"hca_object={lim['hcaObjects']}")
        lines.append(" ".join(parts))
    if lines:
        out["rdma.max"] = "\n".join(lines)


def _unified(unified, out, problems):
    for key, value in (unified or {}).items():
        where = f"{P}.unified.{key}"
        if "/" in key or key in (".", "..") or "." not in key.strip("."):
            problems.append(f"{where}: must be a file name of the form CONTROLLER.PARAMETER")
            continue
        if not isinstance(value, str):
            problems.append(f"{where}: value must be a string")
            continue
        out.pop(key, None)       # unified wins over a converted value for the same file
        out[key] = value


# --- runc update flags ------------------------------------------------------------------------
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_bytes(value, flag: str) -> int:
    """"64m", "1g", "1024", -1 → bytes (docker/runc RAMInBytes: binary units)."""
    if isinstance(value, int):
        return value
    s = str(value).strip()
    if s == "-1":
        return -1
    import re
    m = re.match(r"^([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?)(?:i?b)?$", s, re.I)
    if not m:
        raise UsageError(f"invalid value {value!r} for {flag}: expected a size like 64m or 1g")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _int(value, flag: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"invalid value {value!r} for {flag}: expected an integer") from None


def resources_from_update_flags(*, blkio_weight=None, cpu_period=None, cpu_quota=None,
                                cpu_shares=None, cpu_rt_period=None, cpu_rt_runtime=None,
                                cpu_burst=None, cpu_idle=None, cpuset_cpus=None,
                                cpuset_mems=None, memory=None, memory_reservation=None,
                                memory_swap=None, kernel_memory=None, kernel_memory_tcp=None,
                                pids_limit=None, cpu_share=None, l3_cache_schema=None,
                                mem_bw_schema=None, **unknown) -> dict:
    """runc `update` flags (None = not given) → an OCI linux.resources dict.
    Memory flags take sizes with units (64m, 1g) or -1. `cpu_share` is runc's spelling of
    --cpu-share; the Intel RDT flags are rejected (no resctrl support)."""
    if unknown:
        raise UsageError("unknown update flag(s): " + ", ".join(
            "--" + k.replace("_", "-") for k in sorted(unknown)))
    for name, val in (("--l3-cache-schema", l3_cache_schema), ("--mem-bw-schema", mem_bw_schema)):
        if val is not None:
            raise UsageError(f"{name}: Intel RDT (resctrl) is not supported by pyoci")
    if cpu_shares is None:
        cpu_shares = cpu_share
    r: dict = {}
    if blkio_weight is not None:
        r.setdefault("blockIO", {})["weight"] = _int(blkio_weight, "--blkio-weight")
    cpu = {}
    for key, val, flag in (("period", cpu_period, "--cpu-period"),
                           ("quota", cpu_quota, "--cpu-quota"),
                           ("shares", cpu_shares, "--cpu-share"),
                           ("realtimePeriod", cpu_rt_period, "--cpu-rt-period"),
                           ("realtimeRuntime", cpu_rt_runtime, "--cpu-rt-runtime"),
                           ("burst", cpu_burst, "--cpu-burst"),
                           ("idle", cpu_idle, "--cpu-idle")):
        if val is not None:
            cpu[key] = _int(val, flag)
    if cpuset_cpus is not None:
        cpu["cpus"] = str(cpuset_cpus)
    if cpuset_mems is not None:
        cpu["mems"] = str(cpuset_mems)
    if cpu:
        r["cpu"] = cpu
    mem = {}
    for key, val, flag in (("limit", memory, "--memory"),
                           ("reservation", memory_reservation, "--memory-reservation"),
                           ("swap", memory_swap, "--memory-swap"),
                           ("kernel", kernel_memory, "--kernel-memory"),
                           ("kernelTCP", kernel_memory_tcp, "--kernel-memory-tcp")):
        if val is not None:
            mem[key] = parse_bytes(val, flag)
    if mem:
        r["memory"] = mem
    if pids_limit is not None:
        r["pids"] = {"limit": _int(pids_limit, "--pids-limit")}
    return r
