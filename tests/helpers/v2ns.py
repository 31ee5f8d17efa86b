"""Move this process into a private mount namespace with cgroup2 at /sys/fs/cgroup."""
from __future__ import annotations

import os


def _is_cgroup2(path: str) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                if fields[4] == path and fields[sep + 1] == "cgroup2":
                    return True
    except OSError:
        pass
    return False


def enter_private_v2_namespace() -> str | None:
    """Returns the cgroup2 mount point, or None if namespaces do not work here.
    Must run while the process is single-threaded (at conftest import)."""
    if os.environ.get("PYOCI_TEST_IN_V2NS") == str(os.getpid()):
        return "/sys/fs/cgroup"
    from pyoci.linux import libc
    try:
        libc.unshare(libc.CLONE_NEWNS)
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        if not _is_cgroup2("/sys/fs/cgroup"):
            libc.mount("none", "/sys/fs/cgroup", "cgroup2", 0)
    except Exception as e:  # pragma: no cover - depends on the host
        print(f"warning: cannot enter a private cgroup2 mount namespace: {e}")
        return None
    os.environ["PYOCI_TEST_IN_V2NS"] = str(os.getpid())
    return "/sys/fs/cgroup"
