"""pyoci.spec: reading config.json, one `json.path: rule` line per problem, semantic checks, and
the no-jsonschema-on-the-hot-path property."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyoci import spec
from pyoci.errors import ConfigError
from pyoci.specgen import default_config

REPO = Path(__file__).resolve().parents[2]
NS_ENUM = "['cgroup', 'ipc', 'mount', 'network', 'pid', 'time', 'user', 'uts']"


def base() -> dict:
    return default_config(["sh"], terminal=False)


def problems(cfg: dict) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        spec.validate_config(cfg)
    assert str(ei.value) == "\n".join(ei.value.problems)
    return ei.value.problems


def one_problem(cfg: dict) -> str:
    lines = problems(cfg)
    assert len(lines) == 1, lines
    return lines[0]


def ns(cfg: dict, *entries: dict) -> dict:
    cfg["linux"]["namespaces"] = list(entries)
    return cfg


# ------------------------------------------------------------------------------ read_json

def write(tmp_path: Path, text: str | bytes, name: str = "config.json") -> str:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(p)


def test_read_json_reads_an_object(tmp_path):
    path = write(tmp_path, json.dumps({"ociVersion": "1.3.0", "x": {"ü": [1, 2.5, None]}}))
    assert spec.read_json(path) == {"ociVersion": "1.3.0", "x": {"ü": [1, 2.5, None]}}


def test_read_json_rejects_duplicate_keys_naming_key_and_file(tmp_path):
    path = write(tmp_path, '{"ociVersion": "1.3.0", "process": {"cwd": "/", "cwd": "/tmp"}}')
    with pytest.raises(ConfigError) as ei:
        spec.read_json(path)
    msg = str(ei.value)
    assert path in msg and "duplicate key 'cwd'" in msg
    top = write(tmp_path, '{"a": 1, "b": 2, "a": 3}', "top.json")
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        spec.read_json(top)


def test_read_json_missing_file(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError) as ei:
        spec.read_json(path)
    assert str(ei.value) == f"open {path}: no such file or directory"


def test_read_json_directory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        spec.read_json(str(tmp_path))


@pytest.mark.parametrize("text,kind", [("[1, 2]", "an array"), ('"s"', "a string"),
                                       ("3", "a number"), ("null", "null")])
def test_read_json_non_object(tmp_path, text, kind):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        spec.read_json(path)
    assert str(ei.value) == f"{path}: the top-level JSON value must be an object, not {kind}"


def test_read_json_bad_utf8(tmp_path):
    path = write(tmp_path, b'{"hostname": "caf\xe9"}')
    with pytest.raises(ConfigError) as ei:
        spec.read_json(path)
    assert "not valid UTF-8: byte 0xe9 at offset 17 (line 1)" in str(ei.value)
    assert path in str(ei.value)


def test_read_json_bom_and_syntax_errors(tmp_path):
    with pytest.raises(ConfigError, match="byte order mark"):
        spec.read_json(write(tmp_path, b'\xef\xbb\xbf{}', "bom.json"))
    with pytest.raises(ConfigError, match=r"invalid JSON: .* at line 2 column"):
        spec.read_json(write(tmp_path, '{"a": 1,\n}', "syntax.json"))
    with pytest.raises(ConfigError, match="NaN is not valid JSON"):
        spec.read_json(write(tmp_path, '{"a": NaN}', "nan.json"))


# ------------------------------------------------------------------------------ load_bundle_config

def test_load_bundle_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(base()))
    cfg, warnings = spec.load_bundle_config(str(tmp_path))
    assert cfg == base() and warnings == []


def test_load_bundle_config_missing_bundle_and_config(tmp_path):
    missing = str(tmp_path / "nobundle")
    with pytest.raises(ConfigError) as ei:
        spec.load_bundle_config(missing)
    assert str(ei.value) == f"bundle {missing}: no such file or directory"
    with pytest.raises(ConfigError) as ei:
        spec.load_bundle_config(str(tmp_path))
    assert str(ei.value).startswith(f"open {tmp_path}/config.json: no such file or directory")
    afile = write(tmp_path, "{}", "file")
    with pytest.raises(ConfigError, match="not a directory"):
        spec.load_bundle_config(afile)


def test_load_bundle_config_invalid_config(tmp_path):
    cfg = base()
    cfg["process"]["cwd"] = "relative"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"^process\.cwd: 'relative' is not an absolute path"):
        spec.load_bundle_config(str(tmp_path))


# ------------------------------------------------------------------------------ message format

def test_valid_defaults_have_no_problems_or_warnings():
    assert spec.validate_config(base()) == []
    assert spec.validate_config(default_config(rootless=True)) == []


def test_enum_message_names_json_path():
    cfg = base()
    cfg["linux"]["namespaces"][2]["type"] = "bogus"
    assert one_problem(cfg) == f"linux.namespaces[2].type: 'bogus' is not one of {NS_ENUM}"


def test_required_message_names_missing_property_path():
    cfg = base()
    del cfg["process"]["cwd"]
    assert one_problem(cfg) == "process.cwd: required property is missing"
    cfg = base()
    del cfg["ociVersion"]
    assert one_problem(cfg) == "ociVersion: required property is missing"


def test_type_and_range_messages():
    cfg = base()
    cfg["process"]["user"]["uid"] = -1
    cfg["process"]["terminal"] = "yes"
    assert problems(cfg) == [
        "process.terminal: 'yes' is not of type 'boolean'",
        "process.user.uid: -1 is less than the minimum of 0 (must be a uint32: 0..4294967295)"]


def test_odd_keys_are_quoted_in_paths():
    cfg = base()
    cfg["annotations"] = {"com.example.key": 5}
    assert one_problem(cfg) == 'annotations["com.example.key"]: 5 is not of type \'string\''


def test_non_object_config():
    with pytest.raises(ConfigError, match="^config: must be a JSON object, not an array$"):
        spec.validate_config([])


def test_ten_faults_give_ten_lines():
    cfg = base()
    cfg["ociVersion"] = "2.0.0"                                          # 1 unsupported major
    cfg["process"]["cwd"] = "work"                                       # 2 relative cwd
    cfg["process"]["rlimits"].append({"type": "RLIMIT_NOFILE", "hard": 1, "soft": 1})  # 3 dup
    cfg["process"]["user"]["gid"] = "zero"                               # 4 type
    cfg["mounts"][0]["options"] = "nosuid"                               # 5 type
    cfg["linux"]["namespaces"].append({"type": "pid"})                   # 6 duplicate ns
    cfg["linux"]["namespaces"][1]["type"] = "net"                        # 7 enum
    cfg["linux"]["maskedPaths"].append("proc/kcore")                     # 8 relative masked path
    cfg["linux"]["resources"]["devices"][0]["access"] = "rwx"            # 9 access letters
    cfg["hooks"] = {"poststart": [{"path": "/bin/hook", "timeout": 0}]}  # 10 timeout > 0
    cfg["process"]["capabilities"]["bounding"].append("CAP_BOGUS")       # a warning, not a fault
    lines = problems(cfg)
    assert len(lines) == 10, "\n".join(lines)
    assert [ln.split(": ", 1)[0] for ln in lines] == [
        "hooks.poststart[0].timeout", "linux.maskedPaths[10]", "linux.namespaces[1].type",
        "linux.namespaces[6].type", "linux.resources.devices[0].access", "mounts[0].options",
        "ociVersion", "process.cwd", "process.rlimits[1].type", "process.user.gid"]


def test_eleven_faults_include_hook_path():
    cfg = base()
    cfg["hooks"] = {"poststart": [{"path": "hook.sh", "timeout": 0}]}
    assert problems(cfg) == [
        "hooks.poststart[0].path: 'hook.sh' is not an absolute path (spec#52)",
        "hooks.poststart[0].timeout: 0 is less than the minimum of 1"]


def test_every_line_is_single_line_with_path_and_rule():
    cfg = base()
    cfg["process"] = {"cwd": 3, "args": "sh", "rlimits": [{"type": "RLIMIT_FOO"}]}
    lines = problems(cfg)
    assert len(lines) >= 5
    for ln in lines:
        path, sep, rule = ln.partition(": ")
        assert sep and path.startswith("process") and rule and "\n" not in ln


# ------------------------------------------------------------------------------ semantic checks

def test_duplicate_namespace_type():
    cfg = ns(base(), {"type": "pid"}, {"type": "uts"}, {"type": "pid"})
    assert one_problem(cfg) == ("linux.namespaces[2].type: duplicate namespace type 'pid' "
                                "(also linux.namespaces[0]) (spec#105)")


def test_duplicate_rlimit_type():
    cfg = base()
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 2, "soft": 1},
                                 {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
                                 {"type": "RLIMIT_NOFILE", "hard": 4, "soft": 3}]
    assert one_problem(cfg) == ("process.rlimits[2].type: duplicate rlimit 'RLIMIT_NOFILE' "
                                "(also rlimits[0]) (spec#79)")


def test_unknown_rlimit_and_soft_above_hard():
    cfg = base()
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1},
                                 {"type": "RLIMIT_CORE", "hard": 1, "soft": 2}]
    lines = problems(cfg)
    assert lines[0].startswith("process.rlimits[0].type: 'RLIMIT_BOGUS' is not a Linux resource "
                               "limit (spec#75)")
    assert lines[1] == "process.rlimits[1]: soft limit 2 is greater than hard limit 1"


def test_relative_cwd():
    cfg = base()
    cfg["process"]["cwd"] = "home"
    assert one_problem(cfg) == "process.cwd: 'home' is not an absolute path (spec#65)"


def test_empty_args_and_missing_user():
    cfg = base()
    cfg["process"]["args"] = []
    del cfg["process"]["user"]
    assert problems(cfg) == [
        "process.args: at least one entry is required (spec#66)",
        "process.user: required property is missing (uid and gid are REQUIRED on Linux, spec#67)"]


def test_env_entries_need_key_value():
    cfg = base()
    cfg["process"]["env"] += ["NOEQUALS", "=value"]
    assert problems(cfg) == ["process.env[2]: 'NOEQUALS' is not in KEY=VALUE form",
                             "process.env[3]: '=value' has an empty variable name"]


def test_namespace_path_of_the_right_type_is_accepted():
    cfg = ns(base(), {"type": "network", "path": "/proc/self/ns/net"},
             {"type": "ipc", "path": f"/proc/{os.getpid()}/ns/ipc"}, {"type": "uts"})
    assert spec.validate_config(cfg) == []


def test_namespace_path_of_another_type():
    cfg = ns(base(), {"type": "network", "path": "/proc/self/ns/ipc"}, {"type": "mount"},
             {"type": "uts"})
    assert one_problem(cfg) == ("linux.namespaces[0].path: '/proc/self/ns/ipc' is a ipc "
                                "namespace, not network (spec#102)")


def test_namespace_path_that_is_not_a_namespace(tmp_path):
    plain = write(tmp_path, "x", "plain")
    cfg = ns(base(), {"type": "network", "path": plain}, {"type": "uts"},
             {"type": "pid", "path": str(tmp_path / "missing")}, {"type": "ipc", "path": "ns/ipc"})
    assert problems(cfg) == [
        f"linux.namespaces[0].path: '{plain}' is not a namespace file (spec#102)",
        f"linux.namespaces[2].path: '{tmp_path}/missing' does not exist (spec#102)",
        "linux.namespaces[3].path: 'ns/ipc' is not an absolute path (spec#100)"]


def test_namespace_type_of_reads_proc_links():
    assert spec.namespace_type_of("/proc/self/ns/net") == "network"
    assert spec.namespace_type_of("/proc/self/ns/mnt") == "mount"
    assert spec.namespace_type_of("/proc/self/ns/pid_for_children") == "pid"
    assert spec.namespace_type_of("/dev/null") is None


@pytest.mark.parametrize("version,ok", [("1.0.2-dev", True), ("1.3.0", True), ("1.0.0-rc5", True),
                                        ("1.2.1+build.7", True)])
def test_oci_versions_accepted(version, ok):
    cfg = base()
    cfg["ociVersion"] = version
    assert spec.validate_config(cfg) == []


def test_oci_version_not_1x_or_not_semver():
    cfg = base()
    cfg["ociVersion"] = "2.0.0"
    assert one_problem(cfg).startswith("ociVersion: '2.0.0' is not supported: pyoci implements "
                                       "runtime-spec 1.x")
    cfg["ociVersion"] = "1.0"
    assert one_problem(cfg) == "ociVersion: '1.0' is not a SemVer 2.0.0 version (spec#9)"
    cfg["ociVersion"] = "1.4.0"
    assert spec.validate_config(cfg) == [
        "ociVersion: '1.4.0' is newer than 1.3.0; fields pyoci does not know are ignored (spec#7)"]


def test_unknown_capability_is_a_warning():
    cfg = base()
    cfg["process"]["capabilities"]["permitted"].append("CAP_MAKE_COFFEE")
    assert spec.validate_config(cfg) == [
        "process.capabilities.permitted[3]: unknown capability 'CAP_MAKE_COFFEE' is ignored "
        "(spec#80)"]


def test_relative_mount_destination_is_a_deprecation_warning():
    cfg = base()
    cfg["mounts"].append({"destination": "data", "type": "tmpfs", "source": "tmpfs"})
    assert spec.validate_config(cfg) == [
        "mounts[7].destination: 'data' is relative: read as '/data' (relative destinations "
        "are deprecated, spec#88)"]


def test_user_namespace_needs_mappings_and_mappings_need_user_namespace():
    cfg = base()
    cfg["linux"]["namespaces"].append({"type": "user"})
    assert problems(cfg) == [
        "linux.gidMappings: required: a new user namespace is created (linux.namespaces[6] has "
        "type 'user' and no path) (spec#107)",
        "linux.uidMappings: required: a new user namespace is created (linux.namespaces[6] has "
        "type 'user' and no path) (spec#107)"]
    cfg = base()
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    assert one_problem(cfg) == ("linux.uidMappings: ID mappings need a user namespace, but "
                                "linux.namespaces has no 'user' entry (spec#107)")


def test_joined_user_namespace_ignores_mappings():
    cfg = default_config(rootless=True)
    cfg["linux"]["namespaces"][-1]["path"] = "/proc/self/ns/user"
    warnings = spec.validate_config(cfg)
    assert warnings == ["linux.uidMappings: ignored: the joined user namespace keeps its own "
                        "mappings", "linux.gidMappings: ignored: the joined user namespace "
                        "keeps its own mappings"]


def test_idmapped_mounts():
    cfg = base()
    cfg["mounts"].append({"destination": "/data", "type": "bind", "source": "/srv",
                          "options": ["rbind", "idmap"],
                          "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]})
    cfg["mounts"].append({"destination": "/data2", "type": "bind", "source": "/srv",
                          "options": ["rbind", "ridmap"]})
    assert problems(cfg) == [
        "mounts[7]: uidMappings and gidMappings must be given together (spec#95)",
        "mounts[8].options: 'ridmap' needs uidMappings/gidMappings or a user namespace (spec#94)"]


def test_hostname_needs_uts_namespace():
    cfg = ns(base(), {"type": "mount"})
    assert one_problem(cfg) == ("hostname: setting it needs a uts namespace, but "
                                "linux.namespaces has no 'uts' entry")


def test_time_offsets_need_time_namespace():
    cfg = base()
    cfg["linux"]["timeOffsets"] = {"monotonic": {"secs": 10, "nanosecs": 0}}
    assert one_problem(cfg) == ("linux.timeOffsets: needs a time namespace, but linux.namespaces "
                                "has no 'time' entry (spec#109)")
    cfg["linux"]["namespaces"].append({"type": "time"})
    assert spec.validate_config(cfg) == []


def test_linux_paths_and_devices():
    cfg = base()
    cfg["linux"]["readonlyPaths"] = ["proc/sys"]
    cfg["linux"]["devices"] = [{"type": "c", "path": "/dev/fuse", "major": 10},
                               {"type": "p", "path": "/dev/fifo"},
                               {"type": "c", "path": "/dev/fifo", "major": 1, "minor": 3}]
    assert problems(cfg) == [
        "linux.devices[0].minor: required for a device of type 'c' (spec#111)",
        "linux.devices[2].path: duplicate device '/dev/fifo' (also linux.devices[1])",
        "linux.readonlyPaths[0]: 'proc/sys' is not an absolute path (spec#141)"]


def test_net_devices_and_sysctl_need_network_namespace():
    cfg = ns(base(), {"type": "mount"}, {"type": "uts"})
    cfg["linux"]["netDevices"] = {"eth1": {"name": "bad/name"}}
    cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1"}
    assert problems(cfg) == [
        "linux.netDevices: needs a network namespace, but linux.namespaces has no 'network' "
        "entry (spec#144)",
        "linux.netDevices.eth1.name: 'bad/name' is not a valid interface name",
        'linux.sysctl["kernel.shmmax"]: needs an ipc namespace, but linux.namespaces has no '
        "'ipc' entry (it would change the host)",
        'linux.sysctl["net.ipv4.ip_forward"]: needs a network namespace, but linux.namespaces '
        "has no 'network' entry (it would change the host)"]


def test_seccomp_rules():
    cfg = base()
    cfg["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1, "listenerMetadata": "m",
        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_NOTIFY"},
                     {"names": ["kill"], "action": "SCMP_ACT_KILL", "errnoRet": 5,
                      "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}
    assert problems(cfg) == [
        "linux.seccomp.defaultErrnoRet: only allowed with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not "
        "SCMP_ACT_ALLOW (spec#135)",
        "linux.seccomp.listenerMetadata: set without listenerPath (spec#137)",
        "linux.seccomp.listenerPath: required when a rule uses SCMP_ACT_NOTIFY (spec#138)",
        "linux.seccomp.syscalls[1].args[0].index: 6 is out of range 0..5 (a syscall has 6 "
        "arguments)",
        "linux.seccomp.syscalls[1].errnoRet: only allowed with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, "
        "not SCMP_ACT_KILL (spec#135)"]


def test_process_attribute_ranges():
    cfg = base()
    cfg["process"].update({"oomScoreAdj": 1001, "ioPriority": {"class": "IOPRIO_CLASS_BE"},
                           "scheduler": {"policy": "SCHED_FIFO", "priority": 0, "nice": 20}})
    assert problems(cfg) == [
        "process.ioPriority.priority: required property is missing (spec#73)",
        "process.oomScoreAdj: 1001 is out of range -1000..1000",
        "process.scheduler.nice: 20 is out of range -20..19",
        "process.scheduler.priority: 0 is out of range 1..99 for SCHED_FIFO"]


def test_memory_policy_and_intel_rdt():
    cfg = base()
    cfg["linux"]["memoryPolicy"] = {"nodes": "0-1"}
    cfg["linux"]["intelRdt"] = {"l3CacheSchema": "0=f", "schemata": ["L2:0=3\nMB:0=5"]}
    assert problems(cfg) == [
        "linux.intelRdt.schemata[0]: must not contain a newline (spec#152)",
        "linux.memoryPolicy.mode: required property is missing (spec#158)"]
    cfg["linux"]["memoryPolicy"] = {"mode": "MPOL_BIND", "nodes": ""}
    cfg["linux"]["intelRdt"] = {"l3CacheSchema": "0=f"}
    assert one_problem(cfg) == "linux.memoryPolicy.nodes: MPOL_BIND needs at least one node"
    cfg["linux"]["memoryPolicy"] = {"mode": "MPOL_BIND", "nodes": "0"}
    assert spec.validate_config(cfg) == ["linux.intelRdt.l3CacheSchema: should start with 'L3:' "
                                         "(spec#152)"]


# ------------------------------------------------------------------------------ resources

def test_validate_resources_paths_are_relative_to_the_object():
    assert spec.validate_resources({"memory": {"limit": 1 << 20}, "pids": {"limit": 0}}) == []
    with pytest.raises(ConfigError) as ei:
        spec.validate_resources({
            "memory": {"limit": "1G", "swappiness": 150},
            "cpu": {"quota": 1000, "burst": 2000, "cpus": "0-3;5"},
            "blockIO": {"weightDevice": [{"major": 8, "minor": 0}],
                        "throttleReadBpsDevice": [{"major": 8, "minor": 0}]},
            "pids": {"limit": -2},
            "rdma": {"mlx5_1": {}},
            "unified": {"../escape": "1"}})
    assert ei.value.problems == [  # sorted by JSON path
        "blockIO.throttleReadBpsDevice[0].rate: required property is missing (spec#127)",
        "blockIO.weightDevice[0]: needs weight or leafWeight (spec#127)",
        "cpu.burst: 2000 is greater than cpu.quota 1000 (spec#126)",
        "cpu.cpus: '0-3;5' is not a list like '0-3,7' (spec#126)",
        "memory.limit: '1G' is not of type 'integer'",
        "memory.swappiness: 150 is out of range 0..100 (spec#124)",
        "pids.limit: -2 must be -1 (max) or >= 0 (spec#129)",
        "rdma.mlx5_1: needs hcaHandles or hcaObjects (spec#130)",
        'unified["../escape"]: is not a cgroup v2 file name like \'memory.max\' (spec#131)']


def test_resources_in_config_carry_the_linux_prefix():
    cfg = base()
    cfg["linux"]["resources"]["memory"] = {"limit": 100, "swap": 50, "kernel": 1}
    with pytest.raises(ConfigError) as ei:
        spec.validate_config(cfg)
    assert ei.value.problems == ["linux.resources.memory.swap: memory+swap limit 50 is lower than "
                                 "the memory limit 100"]


# ------------------------------------------------------------------------------ process

def test_validate_process():
    proc = {"user": {"uid": 0, "gid": 0}, "args": ["echo", "ok"], "env": ["PATH=/bin"],
            "cwd": "/", "terminal": False,
            "capabilities": {"bounding": ["CAP_KILL", "CAP_NOPE"]}}
    assert spec.validate_process(proc) == [
        "capabilities.bounding[1]: unknown capability 'CAP_NOPE' is ignored (spec#80)"]
    bad = copy.deepcopy(proc)
    bad.update({"cwd": "tmp", "args": []})
    del bad["user"]["gid"]
    with pytest.raises(ConfigError) as ei:
        spec.validate_process(bad)
    assert ei.value.problems == [
        "args: at least one entry is required (spec#66)",
        "cwd: 'tmp' is not an absolute path (spec#65)",
        "user.gid: required property is missing (spec#67)"]
    with pytest.raises(ConfigError, match="^cwd: required property is missing$"):
        spec.validate_process({"user": {"uid": 0, "gid": 0}, "args": ["x"]})
    with pytest.raises(ConfigError, match="^process: must be a JSON object"):
        spec.validate_process(["sh"])


# ------------------------------------------------------------------------------ state, features

def test_validate_state():
    good = {"ociVersion": "1.3.0", "id": "c1", "status": "running", "pid": 42,
            "bundle": "/b", "annotations": {}}
    spec.validate_state(good)
    with pytest.raises(ConfigError) as ei:
        spec.validate_state({**good, "status": "paused"})
    assert ei.value.problems == ["status: 'paused' is not one of ['creating', 'created', "
                                 "'running', 'stopped']"]
    bad = dict(good, bundle="rel")
    del bad["pid"]
    with pytest.raises(ConfigError) as ei:
        spec.validate_state(bad)
    assert ei.value.problems == ["bundle: 'rel' must be an absolute path (spec#18)",
                                 "pid: required when status is 'running' (spec#17)"]


def test_validate_features():
    doc = {"ociVersionMin": "1.0.0", "ociVersionMax": "1.3.0",
           "linux": {"namespaces": ["pid", "time"], "capabilities": ["CAP_KILL"],
                     "seccomp": {"enabled": True, "knownFlags": ["SECCOMP_FILTER_FLAG_LOG"]}}}
    spec.validate_features(doc)
    with pytest.raises(ConfigError) as ei:
        spec.validate_features({"ociVersionMin": "1.3.0", "ociVersionMax": "1.0.0"})
    assert ei.value.problems == ["ociVersionMax: '1.0.0' is lower than ociVersionMin '1.3.0' "
                                 "(spec#160)"]
    with pytest.raises(ConfigError, match="^ociVersionMax: required property is missing$"):
        spec.validate_features({"ociVersionMin": "1.0.0"})


# ------------------------------------------------------------------------------ speed property

def _fresh(code: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True,
                          cwd=str(REPO), timeout=60)


def test_valid_config_does_not_import_jsonschema():
    code = (
        "import sys\n"
        "from pyoci import spec\n"
        "from pyoci.specgen import default_config\n"
        "cfg = default_config()\n"
        "assert spec.validate_config(cfg) == []\n"
        "assert spec.validate_process(cfg['process']) == []\n"
        "assert spec.validate_resources({'memory': {'limit': 1048576}}) == []\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('jsonschema', 'referencing', 'jsonschema_specifications', 'pathlib'))\n"
        "print(heavy)\n")
    r = _fresh(code, "-X", "importtime")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    imported = [ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines() if "|" in ln]
    assert "pyoci.spec" in imported
    assert not [m for m in imported if m.startswith(("jsonschema", "referencing"))]


def test_invalid_config_is_explained_with_jsonschema():
    code = (
        "import sys\n"
        "from pyoci import spec\n"
        "from pyoci.errors import ConfigError\n"
        "try:\n"
        "    spec.validate_config({'ociVersion': 1, 'root': {'path': 'r'}})\n"
        "except ConfigError as e:\n"
        "    print(e.problems)\n"
        "print('jsonschema' in sys.modules)\n")
    r = _fresh(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ['["ociVersion: 1 is not of type \'string\'"]', "True"]


def test_schema_dir_is_found_relative_to_the_package():
    assert Path(spec.SCHEMA_DIR) == REPO / "oci-schemas"
    assert (Path(spec.SCHEMA_DIR) / "config-schema.json").is_file()
