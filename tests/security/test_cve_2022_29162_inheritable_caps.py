"""CVE-2022-29162 class: inheritable capabilities the config did not ask for.

runc (and moby) set the inheritable set to the bounding set. A non-root process then gained
capabilities by executing a file whose file capabilities have those bits in their
inheritable set (P'(permitted) = P(inheritable) & F(inheritable) | ...): with `setcap
cap_x+ei` on a file in the image, an unprivileged user in the container got cap_x.

Defence (security.py `switch_identity`): inheritable (and ambient) are exactly what the
config lists (empty by default), for `run`/`create` and for `exec` (including `exec --cap`,
which adds to bounding/effective/permitted only).

The attack: a copy of busybox in the image carries file capabilities
(security.capability: inheritable = the container's default capabilities, effective bit
set); a non-root container process runs it and reports its own capability sets. The
container and exec processes also report CapInh/CapAmb directly.
"""
from __future__ import annotations

import os
import shutil
import struct

import pytest

from conftest import force_delete

pytestmark = pytest.mark.root

CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE = 5, 10, 29
DEFAULT = (1 << CAP_KILL) | (1 << CAP_NET_BIND_SERVICE) | (1 << CAP_AUDIT_WRITE)
VFS_CAP_REVISION_2, VFS_CAP_FLAGS_EFFECTIVE = 0x02000000, 0x000001


def _status(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k.startswith("Cap"):
            out[k] = int(v.strip(), 16)
    return out


def _fcap_grep(bundle, inheritable: int) -> str:
    """/opt/grep: busybox (the grep applet by its name) with file capabilities
    inheritable=`inheritable`, permitted=0, effective bit set."""
    opt = bundle.rootfs / "opt"
    opt.mkdir(exist_ok=True)
    dst = opt / "grep"
    shutil.copy2(bundle.rootfs / "bin" / "busybox", dst)
    os.chmod(dst, 0o755)
    xattr = struct.pack("<IIIII", VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, 0, inheritable & 0xFFFFFFFF,
                        0, inheritable >> 32)
    os.setxattr(dst, "security.capability", xattr)
    return "/opt/grep"


@pytest.mark.parametrize("nnp", [True, False])
def test_file_inheritable_caps_give_nothing_to_an_unprivileged_process(runtime, bundle, nnp):
    grep = _fcap_grep(bundle, DEFAULT)
    bundle.process["user"] = {"uid": 1000, "gid": 1000}
    bundle.process["noNewPrivileges"] = nnp
    bundle.set_args("sh", "-c", f"grep Cap /proc/self/status; echo ---; {grep} Cap /proc/self/status")
    p = runtime.run("run", "--bundle", bundle.path, "inh")
    assert p.returncode == 0, p.stderr
    before, after = p.stdout.split("---")
    sh, fcap = _status(before), _status(after)
    assert sh["CapInh"] == 0 and sh["CapAmb"] == 0, sh
    # a non-root process loses its permitted set across execve; only P(I) & F(I) could
    # bring capabilities back
    assert fcap["CapPrm"] == 0 and fcap["CapEff"] == 0 and fcap["CapInh"] == 0, fcap


def test_file_caps_work_when_inheritable_is_asked_for(runtime, bundle):
    """Control: the same file does gain what the config explicitly makes inheritable, so the
    attack above is real and its failure is the defence's doing."""
    grep = _fcap_grep(bundle, DEFAULT)
    bundle.process["user"] = {"uid": 1000, "gid": 1000}
    bundle.process["capabilities"]["inheritable"] = ["CAP_NET_BIND_SERVICE"]
    bundle.set_args(grep, "Cap", "/proc/self/status")
    p = runtime.run("run", "--bundle", bundle.path, "inh-ok")
    assert p.returncode == 0, p.stderr
    st = _status(p.stdout)
    assert st["CapPrm"] == 1 << CAP_NET_BIND_SERVICE, st


def test_exec_gets_no_inheritable_caps(runtime, bundle):
    grep = _fcap_grep(bundle, DEFAULT | (1 << 21))   # + CAP_SYS_ADMIN in the file's inheritable
    bundle.set_args("sleep", "60")
    try:
        runtime.ok("create", "--bundle", bundle.path, "inhx")
        runtime.ok("start", "inhx")
        for extra in ([], ["--cap", "CAP_SYS_ADMIN"]):
            p = runtime.run("exec", *extra, "inhx", "grep", "Cap", "/proc/self/status")
            assert p.returncode == 0, p.stderr
            st = _status(p.stdout)
            assert st["CapInh"] == 0 and st["CapAmb"] == 0, (extra, st)
            p = runtime.run("exec", "--user", "1000:1000", *extra, "inhx", grep, "Cap", "/proc/self/status")
            assert p.returncode == 0, p.stderr
            st = _status(p.stdout)
            assert st["CapPrm"] == 0 and st["CapEff"] == 0, (extra, st)
        pid = runtime.state("inhx")["pid"]
        with open(f"/proc/{pid}/status") as f:
            st = _status(f.read())
        assert st["CapInh"] == 0 and st["CapAmb"] == 0 and st["CapBnd"] == DEFAULT, st
    finally:
        force_delete(runtime, "inhx")
