#!/usr/bin/env python3
"""Generate pyoci's own JSON Schemas (draft-04) for OCI runtime-spec v1.3.0 into oci-schemas/.

The types below are a compact transcription of the spec prose (config.md, config-linux.md,
config-{windows,solaris,vm,zos,freebsd}.md, runtime.md §State, features*.md). Each JSON file in
oci-schemas/ is generated from this file; run it after editing:

    .venv/bin/python tools/gen_schemas.py          # rewrite oci-schemas/*.json
    .venv/bin/python tools/gen_schemas.py --check  # exit 1 if the committed files are stale

Afterwards regenerate the fast validator: tools/gen_validators.py.

The schemas give the same verdict as the upstream v1.3.0 schemas except where the prose (and the
Go types) say otherwise; tests/unit/test_schemas.py lists these deviations:
  * `linux.resources.pids.limit` is OPTIONAL (runtime-spec 1.3.0 prose and Go made it optional).
  * `linux.devices[].fileMode` is a uint32 as the prose says (upstream: 0..511); podman sends the
    file-type bits too (8612 = S_IFCHR|0644).
  * `windows.resources.cpu.affinity` is an array of {mask, group} as the prose says (upstream:
    an object).
  * `vm.hwConfig.iomems` items are all checked (upstream v1.3.0 has a tuple `items` there).
Where the prose is stricter than upstream's schema but upstream chose not to encode it
(`ioPriority.priority`, throttle `rate`, `process.user`, ...) the schema matches upstream and
runtime/pyoci/spec.py reports the problem as a semantic check.
  * Rules a schema cannot express (duplicates, absolute paths, cross-field rules) live in
    runtime/pyoci/spec.py as semantic checks.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "oci-schemas"
DRAFT4 = "http://json-schema.org/draft-04/schema#"

# ---------------------------------------------------------------- DSL


def ref(name: str, file: str | None = None) -> dict:
    """A $ref to definitions/<name> in `file` (None: the current file)."""
    return {"$ref": f"{file or ''}#/definitions/{name}"}


def D(name: str) -> dict:
    return ref(name, "defs.json")


def L(name: str) -> dict:
    return ref(name, "defs-linux.json")


STR = {"type": "string"}
BOOL = {"type": "boolean"}
INT = {"type": "integer"}
OBJ = {"type": "object"}


def obj(props: dict, required: tuple = (), **extra) -> dict:
    s: dict = {"type": "object", "properties": props}
    if required:
        s["required"] = list(required)
    s.update(extra)
    return s


def arr(items: dict, **extra) -> dict:
    return {"type": "array", "items": items, **extra}


def enum(*values: str) -> dict:
    return {"type": "string", "enum": list(values)}


def smap(value: dict) -> dict:
    """A JSON object used as a map with free-form keys."""
    return {"type": "object", "additionalProperties": value}


def intrange(lo: int, hi: int) -> dict:
    return {"type": "integer", "minimum": lo, "maximum": hi}


def doc(title: str, body: dict) -> dict:
    return {"$schema": DRAFT4, "description": title, **body}


# ---------------------------------------------------------------- shared enums

NAMESPACES = ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"]
SECCOMP_ACTIONS = ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
                   "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",
                   "SCMP_ACT_NOTIFY"]
SECCOMP_OPS = ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
               "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"]
SECCOMP_ARCHS = ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM",
                 "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32",
                 "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC",
                 "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
                 "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
                 "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K", "SCMP_ARCH_SH", "SCMP_ARCH_SHEB"]
SECCOMP_FLAGS = ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                 "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
MPOL_MODES = ["MPOL_DEFAULT", "MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_WEIGHTED_INTERLEAVE",
              "MPOL_PREFERRED", "MPOL_PREFERRED_MANY", "MPOL_LOCAL"]
MPOL_FLAGS = ["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"]
SCHED_POLICIES = ["SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_ISO",
                  "SCHED_IDLE", "SCHED_DEADLINE"]
SCHED_FLAGS = ["SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_RECLAIM", "SCHED_FLAG_DL_OVERRUN",
               "SCHED_FLAG_KEEP_POLICY", "SCHED_FLAG_KEEP_PARAMS", "SCHED_FLAG_UTIL_CLAMP_MIN",
               "SCHED_FLAG_UTIL_CLAMP_MAX"]
HOOK_KINDS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop"]

# ---------------------------------------------------------------- defs.json (all platforms)

DEFS = doc("pyoci: shared types of the OCI runtime-spec v1.3.0 configuration", {"definitions": {
    "int8": intrange(-2**7, 2**7 - 1),
    "int16": intrange(-2**15, 2**15 - 1),
    "int32": intrange(-2**31, 2**31 - 1),
    "int64": intrange(-2**63, 2**63 - 1),
    "uint8": intrange(0, 2**8 - 1),
    "uint16": intrange(0, 2**16 - 1),
    "uint32": intrange(0, 2**32 - 1),
    "uint64": intrange(0, 2**64 - 1),
    "FileMode": intrange(0, 0o777),  # permission bits only, in decimal
    "StringList": arr(STR),
    "Uint32List": arr(ref("uint32")),
    "StringMap": smap(STR),
    "Env": arr(STR),
    "IDMapping": obj({"containerID": ref("uint32"), "hostID": ref("uint32"),
                      "size": ref("uint32")}, ("containerID", "hostID", "size")),
    "Mount": obj({
        "destination": STR,
        "source": STR,
        "type": STR,
        "options": ref("StringList"),
        "uidMappings": arr(ref("IDMapping")),
        "gidMappings": arr(ref("IDMapping")),
    }, ("destination",)),
    "Hook": obj({"path": STR, "args": ref("StringList"), "env": ref("Env"),
                 "timeout": {"type": "integer", "minimum": 1}}, ("path",)),
    "HookList": arr(ref("Hook")),
}})

# ---------------------------------------------------------------- config-schema.json

PROCESS = obj({
    "terminal": BOOL,
    "consoleSize": obj({"height": D("uint64"), "width": D("uint64")}, ("height", "width")),
    "cwd": STR,
    "env": D("Env"),
    "args": D("StringList"),
    "commandLine": STR,
    "rlimits": arr(obj({"type": {"type": "string", "pattern": "^RLIMIT_[A-Z]+$"},
                        "soft": D("uint64"), "hard": D("uint64")}, ("type", "soft", "hard"))),
    "apparmorProfile": STR,
    "capabilities": obj({k: D("StringList") for k in
                         ("bounding", "effective", "inheritable", "permitted", "ambient")}),
    "noNewPrivileges": BOOL,
    "oomScoreAdj": INT,
    "scheduler": obj({
        "policy": enum(*SCHED_POLICIES),
        "nice": D("int32"),
        "priority": D("int32"),
        "flags": arr(enum(*SCHED_FLAGS)),
        "runtime": D("uint64"),
        "deadline": D("uint64"),
        "period": D("uint64"),
    }, ("policy",)),
    "selinuxLabel": STR,
    # the prose makes `priority` REQUIRED too: checked in spec.py, like upstream's schema
    "ioPriority": obj({"class": enum("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"),
                       "priority": D("int32")}, ("class",)),
    "execCPUAffinity": obj({"initial": {"type": "string", "pattern": "^[0-9, -]*$"},
                            "final": {"type": "string", "pattern": "^[0-9, -]*$"}}),
    "user": obj({"uid": D("uint32"), "gid": D("uint32"), "umask": D("uint32"),
                 "additionalGids": D("Uint32List"), "username": STR}),
}, ("cwd",))

CONFIG = doc("pyoci: OCI runtime-spec v1.3.0 container configuration (config.json)", obj({
    "ociVersion": STR,
    "root": obj({"path": STR, "readonly": BOOL}, ("path",)),
    "mounts": arr(D("Mount")),
    "process": PROCESS,
    "hostname": STR,
    "domainname": STR,
    "hooks": obj({k: D("HookList") for k in HOOK_KINDS}),
    "annotations": D("StringMap"),
    "linux": {"$ref": "config-linux.json#"},
    "windows": {"$ref": "config-windows.json#"},
    "solaris": {"$ref": "config-solaris.json#"},
    "vm": {"$ref": "config-vm.json#"},
    "zos": {"$ref": "config-zos.json#"},
    "freebsd": {"$ref": "config-freebsd.json#"},
}, ("ociVersion",)))

# ---------------------------------------------------------------- defs-linux.json

I64, U64, U32, U16 = D("int64"), D("uint64"), D("uint32"), D("uint16")


def device_numbers(**more) -> dict:
    return {"major": I64, "minor": I64, **more}


DEFS_LINUX = doc("pyoci: Linux types of the OCI runtime-spec v1.3.0 configuration", {"definitions": {
    "Device": obj({"type": enum("c", "b", "u", "p"), "path": STR, "fileMode": U32,
                   **device_numbers(), "uid": U32, "gid": U32}, ("type", "path")),
    "Namespace": obj({"type": enum(*NAMESPACES), "path": STR}, ("type",)),
    "TimeOffset": obj({"secs": I64, "nanosecs": U32}),
    "DeviceRule": obj({"allow": BOOL, "type": STR, **device_numbers(), "access": STR}, ("allow",)),
    "Memory": obj({"limit": I64, "reservation": I64, "swap": I64, "kernel": I64, "kernelTCP": I64,
                   "swappiness": U64, "disableOOMKiller": BOOL, "useHierarchy": BOOL,
                   "checkBeforeUpdate": BOOL}),
    "CPU": obj({"shares": U64, "quota": I64, "burst": U64, "period": U64, "realtimeRuntime": I64,
                "realtimePeriod": U64, "cpus": STR, "mems": STR, "idle": I64}),
    "WeightDevice": obj(device_numbers(weight=U16, leafWeight=U16), ("major", "minor")),
    # `rate` is REQUIRED in the prose: checked in spec.py
    "ThrottleDevice": obj(device_numbers(rate=U64), ("major", "minor")),
    "BlockIO": obj({"weight": U16, "leafWeight": U16,
                    "weightDevice": arr(ref("WeightDevice")),
                    "throttleReadBpsDevice": arr(ref("ThrottleDevice")),
                    "throttleWriteBpsDevice": arr(ref("ThrottleDevice")),
                    "throttleReadIOPSDevice": arr(ref("ThrottleDevice")),
                    "throttleWriteIOPSDevice": arr(ref("ThrottleDevice"))}),
    "HugepageLimit": obj({"pageSize": {"type": "string", "pattern": "^[1-9][0-9]*[KMG]B$"},
                          "limit": U64}, ("pageSize", "limit")),
    "Network": obj({"classID": U32,
                    "priorities": arr(obj({"name": STR, "priority": U32}, ("name", "priority")))}),
    "Pids": obj({"limit": I64}),
    "Rdma": obj({"hcaHandles": U32, "hcaObjects": U32}),
    "Resources": obj({
        "devices": arr(ref("DeviceRule")),
        "memory": ref("Memory"),
        "cpu": ref("CPU"),
        "blockIO": ref("BlockIO"),
        "hugepageLimits": arr(ref("HugepageLimit")),
        "network": ref("Network"),
        "pids": ref("Pids"),
        "rdma": smap(ref("Rdma")),
        "unified": D("StringMap"),
    }),
    "SyscallArg": obj({"index": U32, "value": U64, "valueTwo": U64, "op": enum(*SECCOMP_OPS)},
                      ("index", "value", "op")),
    "Syscall": obj({"names": arr(STR, minItems=1), "action": enum(*SECCOMP_ACTIONS),
                    "errnoRet": U32, "args": arr(ref("SyscallArg"))}, ("names", "action")),
    "Seccomp": obj({"defaultAction": enum(*SECCOMP_ACTIONS), "defaultErrnoRet": U32,
                    "flags": arr(enum(*SECCOMP_FLAGS)), "listenerPath": STR,
                    "listenerMetadata": STR, "architectures": arr(enum(*SECCOMP_ARCHS)),
                    "syscalls": arr(ref("Syscall"))}, ("defaultAction",)),
    "IntelRdt": obj({"closID": STR, "l3CacheSchema": STR,
                     # MUST start with "MB:" and MUST NOT contain newlines
                     "memBwSchema": {"type": "string", "pattern": "^MB:[^\\n]*$"},
                     "schemata": D("StringList"), "enableMonitoring": BOOL}),
    "MemoryPolicy": obj({"mode": enum(*MPOL_MODES), "nodes": STR,
                         "flags": arr(enum(*MPOL_FLAGS))}),
    "Personality": obj({"domain": enum("LINUX", "LINUX32"), "flags": D("StringList")}),
    "NetDevice": obj({"name": STR}),
}})

CONFIG_LINUX = doc("pyoci: the `linux` object of config.json", obj({
    "devices": arr(L("Device")),
    "uidMappings": arr(D("IDMapping")),
    "gidMappings": arr(D("IDMapping")),
    "namespaces": arr(L("Namespace")),
    "timeOffsets": obj({"boottime": L("TimeOffset"), "monotonic": L("TimeOffset")}),
    "resources": L("Resources"),
    "cgroupsPath": STR,
    "rootfsPropagation": enum("private", "shared", "slave", "unbindable"),
    "seccomp": L("Seccomp"),
    "sysctl": D("StringMap"),
    "maskedPaths": D("StringList"),
    "readonlyPaths": D("StringList"),
    "mountLabel": STR,
    "intelRdt": L("IntelRdt"),
    "personality": L("Personality"),
    "memoryPolicy": L("MemoryPolicy"),
    "netDevices": smap(L("NetDevice")),
}))

# ---------------------------------------------------------------- other platforms

CONFIG_WINDOWS = doc("pyoci: the `windows` object of config.json", obj({
    "layerFolders": arr(STR, minItems=1),
    "devices": arr(obj({"id": STR, "idType": enum("class")}, ("id", "idType"))),
    "resources": obj({
        "memory": obj({"limit": U64}),
        "cpu": obj({"count": U64, "shares": U16, "maximum": U16,
                    "affinity": arr(obj({"mask": U64, "group": U32}))}),
        "storage": obj({"iops": U64, "bps": U64, "sandboxSize": U64}),
    }),
    "network": obj({"endpointList": D("StringList"), "allowUnqualifiedDNSQuery": BOOL,
                    "DNSSearchList": D("StringList"), "networkSharedContainerName": STR,
                    "networkNamespace": STR}),
    "credentialSpec": OBJ,
    "servicing": BOOL,
    "ignoreFlushesDuringBoot": BOOL,
    "hyperv": obj({"utilityVMPath": STR}),
}, ("layerFolders",)))

CONFIG_SOLARIS = doc("pyoci: the `solaris` object of config.json", obj({
    "milestone": STR, "limitpriv": STR, "maxShmMemory": STR,
    "cappedCPU": obj({"ncpus": STR}),
    "cappedMemory": obj({"physical": STR, "swap": STR}),
    "anet": arr(obj({k: STR for k in ("linkname", "lowerLink", "allowedAddress",
                                       "configureAllowedAddress", "defrouter", "macAddress",
                                       "linkProtection")})),
}))

CONFIG_VM = doc("pyoci: the `vm` object of config.json", obj({
    "hypervisor": obj({"path": STR, "parameters": D("StringList")}, ("path",)),
    "kernel": obj({"path": STR, "parameters": D("StringList"), "initrd": STR}, ("path",)),
    "image": obj({"path": STR, "format": enum("raw", "qcow2", "vdi", "vmdk", "vhd")},
                 ("path", "format")),
    "hwConfig": obj({
        "deviceTree": STR, "vcpus": U32, "memory": U64, "dtdevs": D("StringList"),
        "iomems": arr(obj({"firstGPA": U64, "firstMFN": U64, "nrMFNs": U64},
                          ("firstGPA", "firstMFN", "nrMFNs"))),
        "irqs": D("Uint32List"),
    }),
}, ("kernel",)))

CONFIG_ZOS = doc("pyoci: the `zos` object of config.json", obj({
    "namespaces": arr(obj({"type": enum("pid", "network", "mount", "ipc", "uts"), "path": STR},
                          ("type",))),
}))

NEW_INHERIT = enum("new", "inherit")
NEW_INHERIT_DISABLE = enum("new", "inherit", "disable")
CONFIG_FREEBSD = doc("pyoci: the `freebsd` object of config.json", obj({
    "devices": arr(obj({"path": STR, "mode": D("FileMode")})),
    "jail": obj({
        "parent": STR,
        "host": NEW_INHERIT,
        "ip4": NEW_INHERIT_DISABLE, "ip4Addr": D("StringList"),
        "ip6": NEW_INHERIT_DISABLE, "ip6Addr": D("StringList"),
        "vnet": NEW_INHERIT, "vnetInterfaces": D("StringList"),
        "sysvmsg": NEW_INHERIT_DISABLE, "sysvsem": NEW_INHERIT_DISABLE,
        "sysvshm": NEW_INHERIT_DISABLE,
        "enforceStatfs": D("uint8"),
        "allow": obj({"setHostname": BOOL, "rawSockets": BOOL, "chflags": BOOL,
                      "mount": D("StringList"), "quotas": BOOL, "socketAf": BOOL,
                      "mlock": BOOL, "reservedPorts": BOOL, "suser": BOOL}),
    }),
}))

# ---------------------------------------------------------------- state and features

STATE = doc("pyoci: OCI runtime-spec v1.3.0 container state", obj({
    "ociVersion": STR,
    "id": STR,
    "status": enum("creating", "created", "running", "stopped"),
    "pid": {"type": "integer", "minimum": 0},
    "bundle": STR,
    "annotations": D("StringMap"),
}, ("ociVersion", "id", "status", "bundle")))

FEATURES = doc("pyoci: OCI runtime-spec v1.3.0 features document", obj({
    "ociVersionMin": STR,
    "ociVersionMax": STR,
    "hooks": D("StringList"),
    "mountOptions": D("StringList"),
    "annotations": D("StringMap"),
    "potentiallyUnsafeConfigAnnotations": D("StringList"),
    "linux": {"$ref": "features-linux.json#"},
}, ("ociVersionMin", "ociVersionMax")))

ENABLED = obj({"enabled": BOOL})
FEATURES_LINUX = doc("pyoci: the `linux` object of the features document", obj({
    "namespaces": arr(enum(*NAMESPACES)),
    "capabilities": arr({"type": "string", "pattern": "^CAP_[A-Z_]+$"}),
    "cgroup": obj({k: BOOL for k in ("v1", "v2", "systemd", "systemdUser", "rdma")}),
    "seccomp": obj({"enabled": BOOL, "actions": arr(enum(*SECCOMP_ACTIONS)),
                    "operators": arr(enum(*SECCOMP_OPS)), "archs": arr(enum(*SECCOMP_ARCHS)),
                    "knownFlags": arr(enum(*SECCOMP_FLAGS)),
                    "supportedFlags": arr(enum(*SECCOMP_FLAGS))}),
    "apparmor": ENABLED,
    "selinux": ENABLED,
    "intelRdt": obj({"enabled": BOOL, "schemata": BOOL, "monitoring": BOOL}),
    "memoryPolicy": obj({"modes": arr(enum(*MPOL_MODES)), "flags": arr(enum(*MPOL_FLAGS))}),
    "mountExtensions": obj({"idmap": ENABLED}),
    "netDevices": ENABLED,
}))

FILES = {
    "defs.json": DEFS,
    "defs-linux.json": DEFS_LINUX,
    "config-schema.json": CONFIG,
    "config-linux.json": CONFIG_LINUX,
    "config-windows.json": CONFIG_WINDOWS,
    "config-solaris.json": CONFIG_SOLARIS,
    "config-vm.json": CONFIG_VM,
    "config-zos.json": CONFIG_ZOS,
    "config-freebsd.json": CONFIG_FREEBSD,
    "state-schema.json": STATE,
    "features-schema.json": FEATURES,
    "features-linux.json": FEATURES_LINUX,
}


def render() -> dict[str, str]:
    return {name: json.dumps(body, indent=2) + "\n" for name, body in FILES.items()}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in render().items():
        path = OUT / name
        current = path.read_text() if path.exists() else None
        if current != text:
            stale.append(name)
            if not check:
                path.write_text(text)
    if check and stale:
        print("stale schemas (run tools/gen_schemas.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    if not check:
        print(f"wrote {len(stale)} changed file(s) to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
