"""Import hygiene of the hot paths (issue 9). Not timed: it checks WHAT is imported.

Every pyoci process pays Python start-up plus its imports. The hot paths (`create`, `start`,
`state`, `kill`, `delete`, `run`, and `exec`, `list`) run for real, as root, on a busybox
bundle, with PYTHONPROFILEIMPORTTIME=1 (the environment form of `-X importtime`, which, unlike
the flag, survives the sealed re-exec of create/run/exec): every module a command imports is
printed on its stderr, including those imported by the processes it forks (the intermediate and
the container init write to the same stderr until they exec). The test fails when

* jsonschema, pyroute2 or the seccomp binding (pyseccomp, or libseccomp's own `seccomp`) is
  imported by a config that does not need it (a valid config, no netDevices/bridge mode,
  no linux.seccomp);
* a command imports a module outside its fixed allow-list (ALLOWED below: what each command
  imports today, minus what obviously should not be there: see HEAVY). A new import on a hot
  path has to be added here on purpose, with its cost in mind (benchmarks/importprof.py).

Modules the interpreter itself imports for `python -m` (site, encodings, runpy...) are
measured once and left out.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root

# Never on a hot path unless the config asks for it.
FORBIDDEN = ("jsonschema", "referencing", "pyroute2", "pyseccomp", "seccomp")

# Obviously should not be on a hot path of a plain container (no seccomp, no bridge, no
# hooks): code generation and introspection (dataclasses pulls inspect, ast, dis, tokenize),
# typing, platform probing, archive/compression (shutil), hashing, IP address maths, threads,
# subprocess machinery (only hooks and `ps` need it), tempfile/random, and pyoci's optional parts.
HEAVY = frozenset({
    "dataclasses", "inspect", "ast", "_ast", "dis", "opcode", "_opcode", "tokenize", "token",
    "linecache", "typing", "_typing", "platform", "ctypes.util", "shutil", "fnmatch", "zlib",
    "bz2", "_bz2", "lzma", "_lzma", "_compression", "hashlib", "_hashlib", "_blake2",
    "ipaddress", "threading", "_weakrefset", "subprocess", "_posixsubprocess",
    "tempfile", "random", "_random", "bisect", "_bisect", "_sha512", "locale", "copy", "pathlib",
    "argparse", "logging", "email", "urllib", "uuid", "datetime", "_datetime", "decimal",
    "pyoci.seccomp", "pyoci.network", "pyoci.ipam", "pyoci.specgen", "pyoci.images",
    "pyoci.cli_images", "pyoci.features", "pyoci.events",
})

# What each command may import (beyond the interpreter's own start-up), recorded from the
# code of 2026-11-27 (after the issue-9 speed-ups, commit 5188d00) minus HEAVY.
# Shrinking is always fine; growing needs a reason (measure it with benchmarks/importprof.py).
_CLI = {
    "pyoci", "pyoci.__main__", "pyoci.cli", "pyoci.errors", "pyoci.log", "pyoci.container",
    "pyoci.state", "pyoci.linux", "pyoci.linux.libc", "pyoci._record", "pyoci.plan",
    "pyoci.namespaces",
    "gc", "pyoci._fault",
    "__future__", "json", "json.decoder", "json.scanner", "_json", "json.encoder", "re",
    "re._compiler", "re._parser", "re._constants", "re._casefix", "_sre", "enum", "copyreg",
    "signal", "errno", "select", "fcntl", "time", "ctypes", "_ctypes", "struct", "_struct",
    "ctypes._endian",
}
_CGROUPS = {"pyoci.cgroups", "pyoci.cgroups.devices", "pyoci.cgroups.resources",
            "pyoci.cgroups.v2", "math"}
_LAUNCH = _CLI | _CGROUPS | {
    "pyoci.spec", "pyoci._validate_schema", "pyoci.mounts", "pyoci.security", "pyoci.caps",
    "pyoci.rootfs", "pyoci.process", "pyoci.channel", "pyoci.hooks", "pyoci.terminal",
    "pyoci.cgroups.bpf", "socket", "_socket", "selectors", "array", "termios", "stat",
    "posixpath", "collections.abc", "encodings.idna", "stringprep", "unicodedata",
    "pyoci._nt", "pyoci._lo",   # NamedTuple without typing, `lo` up without network.py
}
ALLOWED = {
    "create": _LAUNCH,
    "run": _LAUNCH,
    "exec": _LAUNCH,
    "start": _CLI,
    "state": _CLI,
    "list": _CLI,
    "kill": _CLI | _CGROUPS,
    "delete": _CLI | _CGROUPS,
}

def _parse(stderr: str) -> set[str]:
    mods = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            mods.add(line.rsplit("|", 1)[1].strip())
    return mods


@pytest.fixture(scope="module")
def baseline() -> set[str]:
    """What `python -m` imports before any pyoci code runs."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", "import runpy"],
                       capture_output=True, text=True, check=True)
    mods = _parse(p.stderr)
    assert "site" in mods or "encodings" in mods, p.stderr[:500]
    return mods


def _imports(runtime, baseline, *args, ok=True):
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    p = runtime.run(*args, env=env)
    if ok:
        assert p.returncode == 0, f"pyoci {' '.join(args)}: {p.returncode}\n{p.stderr[-3000:]}"
    mods = _parse(p.stderr)
    assert "pyoci.cli" in mods, f"no import profile on stderr of pyoci {args[0]}:\n{p.stderr[-2000:]}"
    return mods - baseline


def _check(verb: str, mods: set[str]) -> list[str]:
    """Problems with what `verb` imported: forbidden bindings, heavy modules, modules outside
    the allow-list."""
    problems = []
    bad = sorted(m for m in mods if m.split(".")[0] in FORBIDDEN)
    if bad:
        problems.append(f"{verb}: imports {bad} although the config does not need them")
    heavy = sorted(mods & HEAVY)
    if heavy:
        problems.append(f"{verb}: imports heavy modules {heavy}")
    extra = sorted(mods - ALLOWED[verb] - HEAVY - {m for m in mods if m.split(".")[0] in FORBIDDEN})
    if extra:
        problems.append(f"{verb}: imports modules outside its allow-list: {extra}")
    return problems


def _wait_status(runtime, cid, status):
    st = runtime.wait_status(cid, status)
    assert st["status"] == status, st


def _lifecycle(runtime, bundle, baseline) -> dict[str, set[str]]:
    """A plain container (no seccomp, no bridge network, no hooks) through every hot path;
    what each command imported."""
    bundle.set_args("/bin/sleep", "100")
    seen: dict[str, set[str]] = {}
    seen["create"] = _imports(runtime, baseline, "create", "--bundle", str(bundle.path), "imp1")
    seen["state"] = _imports(runtime, baseline, "state", "imp1")
    seen["start"] = _imports(runtime, baseline, "start", "imp1")
    _wait_status(runtime, "imp1", "running")
    seen["exec"] = _imports(runtime, baseline, "exec", "imp1", "/bin/true")
    seen["list"] = _imports(runtime, baseline, "list")
    seen["kill"] = _imports(runtime, baseline, "kill", "imp1", "KILL")
    _wait_status(runtime, "imp1", "stopped")
    seen["delete"] = _imports(runtime, baseline, "delete", "imp1")
    bundle.set_args("/bin/true")
    seen["run"] = _imports(runtime, baseline, "run", "--bundle", str(bundle.path), "imp2")
    assert runtime.ids() == []
    if os.environ.get("PYOCI_RECORD_IMPORTS"):
        for verb, mods in seen.items():
            print(f"{verb}: {sorted(mods)}")
    return seen


def test_hot_paths_import_only_their_allow_list(runtime, bundle, baseline):
    seen = _lifecycle(runtime, bundle, baseline)
    # the hot path of a plain container has its own launch machinery and nothing optional
    assert "pyoci.process" in seen["create"] and "pyoci.cli" in seen["state"]
    problems = [p for verb, mods in seen.items() for p in _check(verb, mods)]
    assert not problems, "\n".join(problems)


def test_seccomp_binding_only_where_a_filter_is_compiled(runtime, bundle, baseline):
    """With linux.seccomp, create compiles the filter (the binding may load there); start,
    state, kill and delete have nothing to compile and must not import it."""
    bundle.set_args("/bin/sleep", "100")
    bundle.linux["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                               "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
    bundle.save()
    create = _imports(runtime, baseline, "create", "--bundle", str(bundle.path), "sec1")
    assert "pyoci.seccomp" in create
    assert {"pyseccomp", "seccomp"} & create, "create compiled a filter without the binding?"
    others = {"start": _imports(runtime, baseline, "start", "sec1"),
              "state": _imports(runtime, baseline, "state", "sec1"),
              "kill": _imports(runtime, baseline, "kill", "sec1", "KILL")}
    _wait_status(runtime, "sec1", "stopped")
    others["delete"] = _imports(runtime, baseline, "delete", "sec1")
    for verb, mods in others.items():
        assert not {"pyseccomp", "seccomp", "pyoci.seccomp"} & mods, f"{verb} loaded seccomp: {sorted(mods)}"
    problems = [p for verb, mods in others.items() for p in _check(verb, mods)]
    assert not problems, "\n".join(problems)


def test_jsonschema_is_imported_only_to_explain_an_invalid_config(runtime, bundle, baseline):
    """The positive control: the detector sees a lazy import when one happens."""
    bundle.config["process"]["args"] = "not-a-list"
    bundle.save()
    mods = _imports(runtime, baseline, "create", "--bundle", str(bundle.path), "bad1", ok=False)
    assert "jsonschema" in mods
    assert runtime.ids() == []
