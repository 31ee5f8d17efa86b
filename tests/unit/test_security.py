"""ProcessPlan building (pure) and resolve_executable's runc wording, against a temp tree."""
from __future__ import annotations

import copy
import json
import os
import resource

import pytest

from pyoci import caps
from pyoci.errors import ConfigError
from pyoci.security import (ExecError, ProcessPlan, build_process_plan, parse_id_list,
                            resolve_executable, sysctl_path)
from pyoci.specgen import default_config


def _proc(**kw) -> dict:
    p = copy.deepcopy(default_config(["sh"], terminal=False)["process"])
    p.update(kw)
    return p


# --- capability table -------------------------------------------------------------------------
def test_cap_table_matches_kernel_numbers():
    assert caps.cap_number("CAP_CHOWN") == 0
    assert caps.cap_number("CAP_NET_BIND_SERVICE") == 10
    assert caps.cap_number("CAP_SYS_ADMIN") == 21
    assert caps.cap_number("CAP_SYS_RESOURCE") == 24
    assert caps.cap_number("CAP_AUDIT_READ") == 37
    assert caps.cap_number("CAP_CHECKPOINT_RESTORE") == 40
    assert caps.CAP_LAST_KNOWN == 40 and len(caps.CAP_BY_NAME) == 41
    assert caps.cap_number("CAP_BOGUS") is None
    assert caps.cap_number("cap_chown") is None  # exact spelling, as runc
    assert caps.cap_name(21) == "CAP_SYS_ADMIN" and caps.cap_name(55) == "CAP_55"


def test_cap_table_agrees_with_kernel_header_if_present():
    hdr = "/usr/include/linux/capability.h"
    if not os.path.exists(hdr):
        pytest.skip("no kernel headers")
    import re
    found = dict(re.findall(r"#define\s+(CAP_[A-Z_]+)\s+(\d+)\s*$", open(hdr).read(), re.M))
    for name, num in found.items():
        if name.startswith("CAP_LAST"):
            continue
        assert caps.cap_number(name) == int(num), name


def test_mask_round_trip():
    mask, unknown = caps.names_to_mask(["CAP_KILL", "CAP_BPF", "CAP_NOPE", "CAP_KILL", "CAP_NOPE"])
    assert mask == (1 << 5) | (1 << 39)
    assert unknown == ["CAP_NOPE"]
    assert caps.mask_to_names(mask) == ["CAP_KILL", "CAP_BPF"]
    assert caps.mask_bits(mask) == [5, 39]


# --- plan ---------------------------------------------------------------------------------------
def test_default_plan():
    pp = build_process_plan(_proc())
    assert isinstance(pp, ProcessPlan)
    assert pp.args == ("sh",) and pp.cwd == "/" and (pp.uid, pp.gid) == (0, 0)
    assert pp.env == ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm")
    want = (1 << 5) | (1 << 10) | (1 << 29)
    c = pp.capabilities
    assert (c.bounding, c.effective, c.permitted) == (want, want, want)
    # CVE-2022-29162: nothing inheritable unless asked
    assert c.inheritable == 0 and c.ambient == 0
    assert pp.rlimits == ((resource.RLIMIT_NOFILE, 1024, 1024),)
    assert pp.no_new_privileges is True
    assert pp.umask is None and pp.oom_score_adj is None
    assert pp.scheduler is None and pp.io_priority is None and pp.personality is None
    assert pp.memory_policy is None and pp.exec_cpu_affinity is None
    assert pp.apparmor_profile is None and pp.selinux_label is None
    assert pp.warnings == ()
    with pytest.raises(Exception):
        pp.uid = 5  # frozen


def test_env_kept_exactly():
    env = ["B=2", "A=1", "A=3", "NOEQUALS", "X=a=b", "EMPTY="]
    pp = build_process_plan(_proc(env=env))
    assert pp.env == tuple(env)


def test_no_capabilities_means_empty_sets():
    p = _proc()
    del p["capabilities"]
    c = build_process_plan(p).capabilities
    assert c == (0, 0, 0, 0, 0)


def test_unknown_caps_are_dropped_with_warning():
    p = _proc(capabilities={"bounding": ["CAP_KILL", "CAP_FROB"], "permitted": ["CAP_KILL"],
                            "effective": ["CAP_KILL", "CAP_WIBBLE"]})
    pp = build_process_plan(p)
    assert pp.capabilities.bounding == 1 << 5
    assert pp.capabilities.effective == 1 << 5
    assert any("CAP_FROB" in w and "bounding" in w for w in pp.warnings)
    assert any("CAP_WIBBLE" in w and "effective" in w for w in pp.warnings)


def test_ambient_needs_permitted_and_inheritable():
    p = _proc(capabilities={"bounding": ["CAP_KILL", "CAP_CHOWN"], "permitted": ["CAP_KILL", "CAP_CHOWN"],
                            "inheritable": ["CAP_KILL"], "effective": ["CAP_KILL", "CAP_SYS_ADMIN"],
                            "ambient": ["CAP_KILL", "CAP_CHOWN"]})
    pp = build_process_plan(p)
    c = pp.capabilities
    assert c.ambient == 1 << 5 and c.inheritable == 1 << 5
    assert c.effective == 1 << 5  # CAP_SYS_ADMIN not permitted: cannot be granted
    assert any("CAP_CHOWN" in w and "ambient" in w for w in pp.warnings)
    assert any("CAP_SYS_ADMIN" in w and "effective" in w for w in pp.warnings)


def test_user_and_rlimits():
    p = _proc(user={"uid": 1000, "gid": 100, "additionalGids": [5, 6], "umask": 0o22},
              rlimits=[{"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                       {"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20},
                       {"type": "RLIMIT_STACK", "soft": 2 ** 64 - 1, "hard": 2 ** 64 - 1}])
    pp = build_process_plan(p)
    assert (pp.uid, pp.gid, pp.additional_gids, pp.umask) == (1000, 100, (5, 6), 0o22)
    inf = 2 ** 64 - 1
    assert pp.rlimits == ((4, 0, 0), (7, 10, 20), (3, inf, inf))
    d = pp.describe()
    assert d["rlimits"][1] == {"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20}
    assert d["user"]["umask"] == "0022"


@pytest.mark.parametrize("name,num", [("RLIMIT_CPU", 0), ("RLIMIT_AS", 9), ("RLIMIT_NPROC", 6),
                                      ("RLIMIT_RTTIME", 15), ("RLIMIT_MSGQUEUE", 12)])
def test_rlimit_numbers(name, num):
    pp = build_process_plan(_proc(rlimits=[{"type": name, "soft": 1, "hard": 2}]))
    assert pp.rlimits[0].resource == num == getattr(resource, name)


def test_config_problems_are_all_reported():
    p = _proc(args=[], cwd="relative",
              rlimits=[{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1},
                       {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1},
                       {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1},
                       {"type": "RLIMIT_CORE", "soft": 5, "hard": 1}],
              scheduler={"policy": "SCHED_NOPE"}, ioPriority={"class": "IOPRIO_CLASS_XX", "priority": 1},
              oomScoreAdj=5000)
    p["rlimits"].append({"type": "RLIMIT_AS", "soft": 1, "hard": 2 ** 64})
    linux = {"personality": {"domain": "LINUX64"}, "memoryPolicy": {"mode": "MPOL_BIND"},
             "sysctl": {"net..x": "1"}}
    with pytest.raises(ConfigError) as ei:
        build_process_plan(p, linux)
    text = str(ei.value)
    for needle in ("process.args: must have at least one entry", "process.cwd: must be an absolute path",
                   "process.rlimits[0].type: unknown rlimit 'RLIMIT_BOGUS'",
                   "process.rlimits[2].type: duplicate rlimit RLIMIT_NOFILE",
                   "process.rlimits[3]: soft limit 5 is greater than hard limit 1",
                   "process.scheduler.policy: unknown policy 'SCHED_NOPE'",
                   "process.ioPriority.class: unknown class", "process.oomScoreAdj",
                   "linux.personality.domain: unknown domain 'LINUX64'",
                   "linux.memoryPolicy.nodes: MPOL_BIND needs at least one node",
                   "linux.sysctl: bad key 'net..x'", "process.rlimits[4]: limits must be within"):
        assert needle in text, needle
    assert len(ei.value.problems) == 12


def test_attributes_plan():
    p = _proc(scheduler={"policy": "SCHED_BATCH", "nice": 5,
                         "flags": ["SCHED_FLAG_RESET_ON_FORK"]},
              ioPriority={"class": "IOPRIO_CLASS_BE", "priority": 6}, oomScoreAdj=-17,
              execCPUAffinity={"initial": "0-1", "final": "1"},
              apparmorProfile="myprof", selinuxLabel="system_u:system_r:container_t:s0",
              terminal=True, consoleSize={"height": 24, "width": 80})
    linux = {"sysctl": {"net.ipv4.ip_forward": "1", "kernel.msgmax": 8192},
             "personality": {"domain": "LINUX32", "flags": ["ADDR_NO_RANDOMIZE"]},
             "memoryPolicy": {"mode": "MPOL_INTERLEAVE", "nodes": "0-2,5",
                              "flags": ["MPOL_F_STATIC_NODES"]}}
    pp = build_process_plan(p, linux)
    assert pp.scheduler == (3, 5, 0, 1, 0, 0, 0)
    assert pp.io_priority == (2, 6)
    assert pp.oom_score_adj == -17
    assert pp.sysctl == (("net.ipv4.ip_forward", "1"), ("kernel.msgmax", "8192"))
    assert pp.personality == (0x0008, 0x0040000)
    assert pp.memory_policy == (3, (0, 1, 2, 5), 1 << 15)
    assert pp.exec_cpu_affinity is None  # init process: not applicable
    assert pp.apparmor_profile == "myprof" and pp.selinux_label.startswith("system_u")
    assert pp.terminal and pp.console_size == (24, 80)
    pe = build_process_plan(p, linux, for_exec=True)
    assert pe.exec_cpu_affinity == ((0, 1), (1,))
    assert pe.sysctl == ()  # written by the init, never by exec
    d = pe.describe()
    json.dumps(d)
    assert d["scheduler"]["policy"] == "SCHED_BATCH"
    assert d["scheduler"]["flags"] == ["SCHED_FLAG_RESET_ON_FORK"]
    assert d["ioPriority"] == {"class": "IOPRIO_CLASS_BE", "priority": 6}
    assert d["personality"] == {"domain": "LINUX32", "flags": ["ADDR_NO_RANDOMIZE"]}
    assert d["memoryPolicy"] == {"mode": "MPOL_INTERLEAVE", "nodes": [0, 1, 2, 5],
                                 "flags": ["MPOL_F_STATIC_NODES"]}
    assert d["execCPUAffinity"] == {"initial": [0, 1], "final": [1]}
    assert d["consoleSize"] == {"height": 24, "width": 80}
    assert d["capabilities"]["bounding"] == ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]


def test_console_size_ignored_without_terminal():
    pp = build_process_plan(_proc(terminal=False, consoleSize={"height": 24, "width": 80}))
    assert pp.console_size is None


def test_parse_id_list_and_sysctl_path():
    assert parse_id_list("0-3,7") == (0, 1, 2, 3, 7)
    assert parse_id_list(" 1, 1,0 ") == (0, 1)
    assert parse_id_list("") == ()
    for bad in ("3-1", "a", "1-", "-1"):
        with pytest.raises(ValueError):
            parse_id_list(bad)
    assert sysctl_path("net.ipv4.ip_forward") == "net/ipv4/ip_forward"
    assert sysctl_path("net/ipv4/conf/eth0.1/forwarding") == "net/ipv4/conf/eth0.1/forwarding"
    assert sysctl_path("net.ipv4.conf.eth0/1.forwarding") == "net/ipv4/conf/eth0.1/forwarding"


# --- resolve_executable: runc's wording -----------------------------------------------------------
@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "rootfs"
    for d in ("bin", "usr/bin", "sbin", "adir", "work/sub", "bin/dirprog"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for f, mode in (("bin/prog", 0o755), ("usr/bin/other", 0o755), ("noexec", 0o644),
                    ("bin/plain", 0o644), ("sbin/plain", 0o755), ("work/sub/tool", 0o700)):
        (root / f).write_text("#!/bin/sh\n")
        os.chmod(root / f, mode)
    os.symlink("prog", root / "bin" / "link")
    os.symlink("/nonexistent", root / "bin" / "dangling")
    return str(root)


def _pp(args, env=("PATH=/usr/local/bin:/bin:/usr/bin",), cwd="/"):
    return build_process_plan(_proc(args=list(args), env=list(env), cwd=cwd))


@pytest.mark.parametrize("args,want", [
    (["prog"], "/bin/prog"),
    (["other"], "/usr/bin/other"),
    (["link"], "/bin/link"),
    (["/bin/prog"], "/bin/prog"),
    (["plain"], "/sbin/plain"),  # /bin/plain has no x bit: skipped, like execvp
])
def test_resolve_found(tree, args, want):
    env = ("PATH=/usr/local/bin:/bin:/usr/bin:/sbin",)
    assert resolve_executable(_pp(args, env), root=tree) == want


@pytest.mark.parametrize("args,msg", [
    (["nosuch"], 'exec: "nosuch": executable file not found in $PATH'),
    ([""], 'exec: "": executable file not found in $PATH'),
    (["adir"], 'exec: "adir": executable file not found in $PATH'),
    (["dirprog"], 'exec: "dirprog": executable file not found in $PATH'),
    (["dangling"], 'exec: "dangling": executable file not found in $PATH'),
    (["/nosuch"], 'exec: "/nosuch": stat /nosuch: no such file or directory'),
    (["/bin/dangling"], 'exec: "/bin/dangling": stat /bin/dangling: no such file or directory'),
    (["/bin/prog/x"], 'exec: "/bin/prog/x": stat /bin/prog/x: not a directory'),
    (["/adir"], 'exec: "/adir": permission denied'),
    (["/noexec"], 'exec: "/noexec": permission denied'),
])
def test_resolve_runc_wording(tree, args, msg):
    with pytest.raises(ExecError) as ei:
        resolve_executable(_pp(args), root=tree)
    assert str(ei.value) == msg
    assert ei.value.exit_code == 1


def test_resolve_path_from_env_first_occurrence(tree):
    env = ("PATH=/usr/bin", "PATH=/bin")
    assert resolve_executable(_pp(["other"], env), root=tree) == "/usr/bin/other"
    with pytest.raises(ExecError, match="executable file not found"):
        resolve_executable(_pp(["prog"], env), root=tree)


def test_resolve_default_path_when_unset(tree):
    assert resolve_executable(_pp(["prog"], env=("A=1",)), root=tree) == "/bin/prog"
    with pytest.raises(ExecError, match="not found in"):
        resolve_executable(_pp(["prog"], env=("PATH=",)), root=tree)


def test_resolve_relative_to_cwd(tree):
    assert resolve_executable(_pp(["sub/tool"], cwd="/work"), root=tree) == "sub/tool"
    assert resolve_executable(_pp(["./tool"], cwd="/work/sub"), root=tree) == "./tool"
    with pytest.raises(ExecError) as ei:
        resolve_executable(_pp(["./tool"], cwd="/"), root=tree)
    assert str(ei.value) == 'exec: "./tool": stat ./tool: no such file or directory'
    # an empty PATH entry means the current directory
    assert resolve_executable(_pp(["tool"], env=("PATH=/bin::",), cwd="/work/sub"), root=tree) == "./tool"


def test_quoting_like_go(tree):
    with pytest.raises(ExecError) as ei:
        resolve_executable(_pp(['we"ird']), root=tree)
    assert str(ei.value) == 'exec: "we\\"ird": executable file not found in $PATH'
