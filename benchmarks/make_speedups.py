"""Write benchmarks/speedups.patch: the measured hot-path speed-ups (docs/benchmarks.md, R1-R6)
as a patch against the CURRENT runtime/pyoci, never touching the working tree.

    .venv/bin/python benchmarks/make_speedups.py [-o benchmarks/speedups.patch]

Each edit is a text substitution on a temporary copy of runtime/; an edit whose anchor is not
found (already applied, or the code moved) is reported and skipped, so the patch stays valid
while the tree changes. Apply with `git apply benchmarks/speedups.patch`; measure with
benchmarks/ab.py.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

MAIN = '''import gc
import os
import sys


def main() -> None:
    # A pyoci call is short-lived and makes few reference cycles: the cyclic GC would only run
    # many times over the modules being imported (~5 ms), and interpreter finalization (module
    # teardown, a last collection) costs ~7 ms more. Flush stdio, then leave with os._exit.
    gc.disable()
    from pyoci.cli import main as cli_main
    rc = 1
    try:
        rc = cli_main(sys.argv[1:]) or 0
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)


if __name__ == "__main__":
    main()
'''

FAULT = '''"""Fault injection for the reliability tests, in a module of its own so that `start` and
`delete` need not import pyoci.process (and with it the whole launch machinery, ~10 ms)."""
import os


def fault(point: str) -> None:
    """PYOCI_FAULT=<point> kills this pyoci process with SIGKILL at that point of the lifecycle
    (see tests/reliability/)."""
    if os.environ.get("PYOCI_FAULT") == point:
        os.kill(os.getpid(), 9)
'''

NT = '''"""`NamedTuple` for class statements without importing typing (~2-3 ms on the hot path):
the class body's annotations become a collections.namedtuple (collections is imported by the
interpreter anyway), defaults and methods included."""
import collections


class _NamedTupleMeta(type):
    def __new__(mcls, name, bases, ns):
        if not bases:
            return super().__new__(mcls, name, bases, ns)
        fields = list(ns.get("__annotations__", {}))
        defaults = [ns[f] for f in fields if f in ns]
        cls = collections.namedtuple(name, fields, defaults=defaults or None, module=ns.get("__module__"))
        for k, v in ns.items():
            if k not in fields and not (k.startswith("__") and k.endswith("__")):
                setattr(cls, k, v)
        if "__doc__" in ns:
            cls.__doc__ = ns["__doc__"]
        return cls


class NamedTuple(metaclass=_NamedTupleMeta):
    pass
'''

LO_HEAD = '''"""`lo` up in the container's new network namespace (CHILD), without network.py (whose
import costs ~1-4 ms) and without socket.py (~2.5 ms): the C module is enough."""
import _socket as socket
import fcntl
import struct

from pyoci.errors import SyscallError

STAGE = "network"
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


'''

RMTREE = '''def _rmtree(path: str) -> None:
    """Remove a state dir (files only, in practice) without shutil: its import pulls
    bz2, lzma, zlib and fnmatch (~2.4 ms on every delete)."""
    try:
        with os.scandir(path) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    _rmtree(e.path)
                else:
                    try:
                        os.unlink(e.path)
                    except OSError:
                        pass
        os.rmdir(path)
    except OSError:
        pass'''


def edits(root: str) -> list[tuple[str, bool]]:
    """Apply every edit under root (a copy of runtime/pyoci); return (label, applied)."""
    done = []

    def path(name):
        return os.path.join(root, name)

    def read(name):
        with open(path(name)) as f:
            return f.read()

    def write(name, text):
        with open(path(name), "w") as f:
            f.write(text)

    def sub(label, name, old, new, count=1):
        s = read(name)
        if old not in s:
            done.append((f"{label}: {name}: anchor not found, skipped", False))
            return False
        write(name, s.replace(old, new, count))
        done.append((f"{label}: {name}", True))
        return True

    # R1: entry point
    m_src = read("__main__.py")
    if "sys.exit(cli_main(sys.argv[1:]))" in m_src:
        write("__main__.py", MAIN)
        done.append(("R1: __main__.py gc.disable + os._exit", True))
    elif "    from pyoci.cli import main as cli_main\n" in m_src and "\n    sys.exit(code)\n" in m_src:
        m_src = m_src.replace("import os\n", "import gc\nimport os\n", 1)
        m_src = m_src.replace(
            "    from pyoci.cli import main as cli_main\n",
            "    # a pyoci call is short-lived and makes few reference cycles: the cyclic GC would only\n"
            "    # run many times over the modules being imported (~5 ms)\n"
            "    gc.disable()\n"
            "    from pyoci.cli import main as cli_main\n", 1)
        m_src = m_src.replace(
            "\n    sys.exit(code)\n",
            "\n    # skip interpreter finalization (module teardown, a last collection: ~7 ms)\n"
            "    try:\n"
            "        sys.stdout.flush()\n"
            "        sys.stderr.flush()\n"
            "    except BrokenPipeError:\n"
            "        pass\n"
            "    os._exit(code or 0)\n", 1)
        write("__main__.py", m_src)
        done.append(("R1: __main__.py gc.disable + os._exit", True))
    else:
        done.append(("R1: __main__.py changed, skipped", False))
    # R2: fault() without pyoci.process
    s = read("container.py")
    if "from pyoci.process import fault" in s:
        write("_fault.py", FAULT)
        write("container.py", s.replace("from pyoci.process import fault", "from pyoci._fault import fault"))
        p = read("process.py")
        m = re.search(r"\ndef fault\(point: str\) -> None:\n(?:    .*\n|\n(?=    ))*", p)
        if m:
            write("process.py", p[:m.start()] + "\nfrom pyoci._fault import fault  # noqa: E402,F401 (process.fault)\n"
                  + p[m.end():])
        done.append(("R2: start/delete import pyoci._fault, not pyoci.process", True))
    else:
        done.append(("R2: no `from pyoci.process import fault` in container.py, skipped", False))
    # R3: no typing on the hot path
    if sub("R3", "security.py", "from typing import NamedTuple, NoReturn\n",
           "from pyoci._nt import NamedTuple  # not typing (~2-3 ms); NoReturn is only an annotation\n"):
        write("_nt.py", NT)
    sub("R3", "caps.py", "from typing import Iterable\n", "")
    # R4: no shutil in state removal
    s = read("state.py")
    m = re.search(r"def _rmtree\(path: str\) -> None:\n    import shutil\n    shutil\.rmtree\(path, ignore_errors=True\)", s)
    if m:
        write("state.py", s[:m.start()] + RMTREE + s[m.end():])
        done.append(("R4: state._rmtree without shutil", True))
    else:
        done.append(("R4: state._rmtree changed, skipped", False))
    # R5: channel and terminal without socket.py
    if sub("R5", "channel.py", "import socket\n",
           "import _socket  # not socket.py: it imports selectors and builds four IntEnums (~2.5 ms)\nimport struct\n"):
        sub("R5", "channel.py", "socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)",
            "_socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)")
        sub("R5", "channel.py", "            socket.send_fds(self.sock, [payload], fds)\n",
            "            self.sock.sendmsg([payload], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,\n"
            "                                           struct.pack(f\"{len(fds)}i\", *fds))])\n")
        sub("R5", "channel.py",
            "            payload, fds, _flags, _addr = socket.recv_fds(self.sock, _MAX, 4)\n"
            "        except socket.timeout:",
            "            payload, anc, _flags, _addr = self.sock.recvmsg(_MAX, _socket.CMSG_SPACE(4 * 4))\n"
            "        except TimeoutError:")
        sub("R5", "channel.py", "        obj = json.loads(payload)\n",
            "        fds = []\n"
            "        for level, kind, data in anc:\n"
            "            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:\n"
            "                n = len(data) // 4\n"
            "                fds.extend(struct.unpack(f\"{n}i\", data[:4 * n]))\n"
            "        obj = json.loads(payload)\n")
        if re.search(r"(?<![_\w])socket\.(send_fds|recv_fds|socketpair|timeout|socket\()", read("channel.py")):
            done.append(("R5: channel.py still uses socket.*: check by hand", False))
    if sub("R5", "terminal.py", "import socket\n", ""):
        sub("R5", "terminal.py", "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n",
            "    import socket  # the parent only, with --console-socket\n"
            "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n")
    # R6: no network.py without network work
    net = read("network.py")
    m = re.search(r"\ndef loopback_up\(\) -> None:\n(?:.*\n)*?(?=\n\n)", net)
    if m and sub("R6", "process.py", "from pyoci import network\n            network.loopback_up()",
                 "from pyoci import _lo\n            _lo.loopback_up()"):
        write("_lo.py", LO_HEAD + m.group(0).strip("\n") + "\n")
        sub("R6", "process.py", "    if \"network\" in plan.namespaces.new:\n        from pyoci import network  # noqa: F401",
            "    if plan.network is not None:\n        from pyoci import network  # noqa: F401\n"
            "    if \"network\" in plan.namespaces.new:\n        from pyoci import _lo  # noqa: F401")
    sub("R6", "plan.py",
        "    if \"network\" in ns.new or any(t == \"network\" for t, _ in ns.join) or linux.get(\"netDevices\") \\\n"
        "            or (config.get(\"annotations\") or {}).get(\"org.pyoci.network\"):",
        "    # plan_network returns None without netDevices and without the bridge annotation:\n"
        "    # then network.py is not imported at all\n"
        "    if linux.get(\"netDevices\") is not None or (config.get(\"annotations\") or {}).get(\"org.pyoci.network\"):")
    return done


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", default=os.path.join(HERE, "speedups.patch"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pyoci-speedups-")
    try:
        for side in ("a", "b"):
            shutil.copytree(os.path.join(REPO, "runtime", "pyoci"), os.path.join(tmp, side, "runtime", "pyoci"),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for label, ok in edits(os.path.join(tmp, "b", "runtime", "pyoci")):
            print(("applied  " if ok else "SKIPPED  ") + label)
        p = subprocess.run(["git", "diff", "--no-index", "a", "b"], cwd=tmp, capture_output=True, text=True)
        text = p.stdout.replace("a/a/", "a/").replace("b/b/", "b/").replace("diff --git a/b/", "diff --git a/")
        if not text.strip():
            print(f"nothing left to change: every edit is in the tree already; {os.path.relpath(a.o)} kept as is")
            return 0
        with open(a.o, "w") as f:
            f.write(text)
        chk = subprocess.run(["git", "apply", "--check", a.o], cwd=REPO, capture_output=True, text=True)
        print(f"wrote {os.path.relpath(a.o)} ({text.count('diff --git')} files); "
              f"{'applies to the working tree' if chk.returncode == 0 else 'DOES NOT APPLY: ' + chk.stderr}")
        return chk.returncode
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
