"""The default config.json (what `pyoci spec` writes), and a busybox rootfs builder.

The default follows runc's `spec` output so that people moving between runtimes see the
same thing; `rootless=True` gives the user-namespace variant.
"""
from __future__ import annotations

import copy
import os
import shutil

from pyoci import OCI_VERSION

_DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
           "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"]
_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def default_config(args: list[str] | None = None, terminal: bool = True, rootless: bool = False) -> dict:
    cfg = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args or ["sh"]),
            "env": [f"PATH={DEFAULT_PATH}", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(_DEFAULT_CAPS) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "pyoci",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": list(_MASKED),
            "readonlyPaths": list(_READONLY),
        },
    }
    if rootless:
        uid, gid = os.getuid(), os.getgid()
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
        cfg["linux"].pop("resources")
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
        for m in cfg["mounts"]:
            if m["destination"] == "/sys":
                m.update({"type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
            if m["destination"] == "/dev/pts":
                m["options"] = [o for o in m["options"] if o != "gid=5"]
    return copy.deepcopy(cfg)


BUSYBOX = "/bin/busybox"


def make_busybox_rootfs(dest: str, busybox: str = BUSYBOX) -> str:
    """Make a minimal rootfs at `dest` from a static busybox: /bin/<applet> links,
    /etc/passwd and /etc/group, the usual empty directories. Returns dest."""
    if not os.path.exists(busybox):
        raise FileNotFoundError(f"{busybox} not found: install Debian's busybox-static")
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "usr/bin", "usr/sbin",
              "var/run", "run", "home"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    target = os.path.join(dest, "bin", "busybox")
    shutil.copy2(busybox, target)
    import subprocess
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a == "busybox":
            continue
        link = os.path.join(dest, "bin", a)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write("root:x:0:\ntty:x:5:\nnobody:x:65534:\n")
    with open(os.path.join(dest, "etc", "hostname"), "w") as f:
        f.write("pyoci\n")
    return dest
