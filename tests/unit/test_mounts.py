"""Root filesystem planning (pyoci.mounts): option parsing, bind sources, devices, describe()."""
from __future__ import annotations

import dataclasses
import json

import pytest

from pyoci import mounts
from pyoci.errors import ConfigError
from pyoci.linux import libc as L
from pyoci.mounts import build_rootfs_plan, parse_options

MS_I_VERSION = 1 << 23

# spec#90 (+ mand/nomand, nosymfollow/symfollow of spec#91): option -> (flag, sets it?)
FLAG_CASES = {
    "async": (L.MS_SYNCHRONOUS, False), "atime": (L.MS_NOATIME, False), "bind": (L.MS_BIND, True),
    "dev": (L.MS_NODEV, False), "diratime": (L.MS_NODIRATIME, False), "dirsync": (L.MS_DIRSYNC, True),
    "exec": (L.MS_NOEXEC, False), "iversion": (MS_I_VERSION, True), "lazytime": (L.MS_LAZYTIME, True),
    "loud": (L.MS_SILENT, False), "noatime": (L.MS_NOATIME, True), "nodev": (L.MS_NODEV, True),
    "nodiratime": (L.MS_NODIRATIME, True), "noexec": (L.MS_NOEXEC, True),
    "noiversion": (MS_I_VERSION, False), "nolazytime": (L.MS_LAZYTIME, False),
    "norelatime": (L.MS_RELATIME, False), "nostrictatime": (L.MS_STRICTATIME, False),
    "nosuid": (L.MS_NOSUID, True), "rbind": (L.MS_BIND | L.MS_REC, True),
    "relatime": (L.MS_RELATIME, True), "remount": (L.MS_REMOUNT, True), "ro": (L.MS_RDONLY, True),
    "rw": (L.MS_RDONLY, False), "silent": (L.MS_SILENT, True), "strictatime": (L.MS_STRICTATIME, True),
    "suid": (L.MS_NOSUID, False), "sync": (L.MS_SYNCHRONOUS, True), "mand": (L.MS_MANDLOCK, True),
    "nomand": (L.MS_MANDLOCK, False), "nosymfollow": (L.MS_NOSYMFOLLOW, True),
    "symfollow": (L.MS_NOSYMFOLLOW, False),
}
PROPAGATION_CASES = {
    "private": L.MS_PRIVATE, "rprivate": L.MS_PRIVATE | L.MS_REC, "shared": L.MS_SHARED,
    "rshared": L.MS_SHARED | L.MS_REC, "slave": L.MS_SLAVE, "rslave": L.MS_SLAVE | L.MS_REC,
    "unbindable": L.MS_UNBINDABLE, "runbindable": L.MS_UNBINDABLE | L.MS_REC,
}
# spec#91: recursive option -> (attr, set?)
REC_CASES = {
    "rro": (L.MOUNT_ATTR_RDONLY, True), "rrw": (L.MOUNT_ATTR_RDONLY, False),
    "rnosuid": (L.MOUNT_ATTR_NOSUID, True), "rsuid": (L.MOUNT_ATTR_NOSUID, False),
    "rnodev": (L.MOUNT_ATTR_NODEV, True), "rdev": (L.MOUNT_ATTR_NODEV, False),
    "rnoexec": (L.MOUNT_ATTR_NOEXEC, True), "rexec": (L.MOUNT_ATTR_NOEXEC, False),
    "rnodiratime": (L.MOUNT_ATTR_NODIRATIME, True), "rdiratime": (L.MOUNT_ATTR_NODIRATIME, False),
    "rnosymfollow": (L.MOUNT_ATTR_NOSYMFOLLOW, True), "rsymfollow": (L.MOUNT_ATTR_NOSYMFOLLOW, False),
}
ATIME_CASES = {
    "rnoatime": L.MOUNT_ATTR_NOATIME, "rrelatime": L.MOUNT_ATTR_RELATIME,
    "rstrictatime": L.MOUNT_ATTR_STRICTATIME, "ratime": L.MOUNT_ATTR_RELATIME,
    "rnostrictatime": L.MOUNT_ATTR_RELATIME, "rnorelatime": L.MOUNT_ATTR_STRICTATIME,
}
SPEC_90 = ("async atime bind defaults dev diratime dirsync exec iversion lazytime loud noatime nodev "
           "nodiratime noexec noiversion nolazytime norelatime nostrictatime nosuid private rbind "
           "relatime remount ro rprivate rshared rslave runbindable rw shared silent slave strictatime "
           "suid sync unbindable").split()
SPEC_91 = ("nosymfollow symfollow ratime rdev rdiratime rexec rnoatime rnodiratime rnoexec rnorelatime "
           "rnostrictatime rnosuid rnosymfollow rrelatime rro rrw rstrictatime rsuid rsymfollow "
           "idmap ridmap mand nomand tmpcopyup").split()


def test_every_spec_option_is_known_and_never_data():
    for opt in SPEC_90 + SPEC_91:
        assert opt in mounts.KNOWN_OPTIONS, opt
        assert parse_options([opt]).data == "", opt


@pytest.mark.parametrize("opt", sorted(FLAG_CASES))
def test_flag_option(opt):
    bit, sets = FLAG_CASES[opt]
    p = parse_options([opt])
    if sets:
        assert p.flags == bit
    else:
        assert p.flags == 0
        assert p.cleared == bit
        # a clearing option undoes an earlier setting one
        everything = parse_options([o for o, (b, s) in FLAG_CASES.items() if s and b & bit] + [opt])
        assert everything.flags & bit == 0
    assert p.propagation == () and p.attr_set == p.attr_clr == 0


def test_later_option_wins_and_defaults_is_noop():
    assert parse_options(["ro", "rw"]).flags == 0
    assert parse_options(["rw", "ro"]).flags == L.MS_RDONLY
    assert parse_options(["defaults"]).flags == 0
    assert parse_options(["nosuid", "nodev", "noexec", "relatime"]).flags == (
        L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC | L.MS_RELATIME)


@pytest.mark.parametrize("opt", sorted(PROPAGATION_CASES))
def test_propagation_option(opt):
    p = parse_options(["nosuid", opt])
    assert p.propagation == (PROPAGATION_CASES[opt],)
    assert p.flags == L.MS_NOSUID          # never mixed into the mount flags


def test_propagation_order_is_kept():
    p = parse_options(["shared", "rslave", "private"])
    assert p.propagation == (L.MS_SHARED, L.MS_SLAVE | L.MS_REC, L.MS_PRIVATE)


@pytest.mark.parametrize("opt", sorted(REC_CASES))
def test_recursive_attr_option(opt):
    attr, sets = REC_CASES[opt]
    p = parse_options([opt])
    assert (p.attr_set, p.attr_clr) == ((attr, 0) if sets else (0, attr))
    assert p.flags == 0 and p.has_rec_attrs


@pytest.mark.parametrize("opt", sorted(ATIME_CASES))
def test_recursive_atime_option(opt):
    p = parse_options([opt])
    # mount_setattr(2): an atime choice needs the whole MOUNT_ATTR__ATIME field in attr_clr
    assert p.attr_clr == L.MOUNT_ATTR__ATIME
    assert p.attr_set == ATIME_CASES[opt]


def test_recursive_combination():
    p = parse_options(["rbind", "rro", "rnosuid", "rnoatime", "rrw"])
    assert p.flags == L.MS_BIND | L.MS_REC
    assert p.attr_set == L.MOUNT_ATTR_NOSUID | L.MOUNT_ATTR_NOATIME
    assert p.attr_clr == L.MOUNT_ATTR_RDONLY | L.MOUNT_ATTR__ATIME


def test_unknown_options_are_data_in_order():
    p = parse_options(["nosuid", "mode=755", "size=65536k", "newinstance", "ro", "uid=5"])
    assert p.data == "mode=755,size=65536k,newinstance,uid=5"
    assert p.flags == L.MS_NOSUID | L.MS_RDONLY


def test_extensions():
    assert parse_options(["tmpcopyup"]).tmpcopyup
    assert parse_options(["idmap"]).idmap == "idmap"
    assert parse_options(["rbind", "ridmap"]).idmap == "ridmap"
    assert not parse_options([]).tmpcopyup


# --- the plan -----------------------------------------------------------------------------------
def cfg(mounts_=(), **linux):
    return {"root": {"path": "rootfs"}, "mounts": list(mounts_), "linux": dict(linux)}


def test_rootfs_path_relative_and_absolute(tmp_path):
    rp = build_rootfs_plan(cfg(), str(tmp_path))
    assert rp.rootfs == str(tmp_path / "rootfs")
    c = cfg()
    c["root"] = {"path": "/some/where/../root", "readonly": True}
    rp = build_rootfs_plan(c, str(tmp_path))
    assert rp.rootfs == "/some/root" and rp.readonly


def test_bundle_relative_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rp = build_rootfs_plan(cfg([{"destination": "/d", "source": "data", "options": ["bind"]}]), "b")
    assert rp.rootfs == str(tmp_path / "b" / "rootfs")
    assert rp.mounts[0].source == str(tmp_path / "b" / "data")


def test_bind_sources(tmp_path):
    rp = build_rootfs_plan(cfg([
        {"destination": "/a", "source": "vol/a", "options": ["bind"]},
        {"destination": "/b", "source": "/srv/b", "type": "none", "options": ["rbind", "ro"]},
        {"destination": "/c", "source": "../outside", "options": ["rbind"]},
        {"destination": "/proc", "source": "proc", "type": "proc"},
    ]), str(tmp_path))
    a, b, c, p = rp.mounts
    assert a.bind and a.source == str(tmp_path / "vol" / "a") and not a.recursive
    assert a.mount_flags == L.MS_BIND and a.remount_flags == 0
    assert b.source == "/srv/b" and b.recursive and b.fstype == ""
    assert b.mount_flags == L.MS_BIND | L.MS_REC
    # read-only bind: a bind mount then a bind remount with ro
    assert b.remount_flags == L.MS_BIND | L.MS_REC | L.MS_RDONLY | L.MS_REMOUNT and b.readonly
    assert c.source == str(tmp_path.parent / "outside")
    assert not p.bind and p.source == "proc" and p.fstype == "proc"


def test_bind_is_decided_by_options_not_type(tmp_path):
    rp = build_rootfs_plan(cfg([{"destination": "/x", "type": "bind", "source": "/x", "options": ["ro"]}]),
                           str(tmp_path))
    # type "bind" without the bind option is not a bind mount (spec#89): a mount of fs type "bind"
    assert not rp.mounts[0].bind and rp.mounts[0].fstype == "bind"
    assert rp.mounts[0].mount_flags == L.MS_RDONLY


def test_destinations_are_cleaned_inside_the_container(tmp_path):
    rp = build_rootfs_plan(cfg([
        {"destination": "relative/dir", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/../../etc", "type": "tmpfs", "source": "tmpfs"},
        {"destination": "/a/./b//c/", "type": "tmpfs", "source": "tmpfs"},
    ]), str(tmp_path))
    assert [m.destination for m in rp.mounts] == ["/relative/dir", "/etc", "/a/b/c"]


def test_mount_flags_data_and_order(tmp_path):
    rp = build_rootfs_plan(cfg([
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "ro", "rslave"]},
        {"destination": "/m", "type": "tmpfs", "source": "t", "options": ["remount", "ro"]},
    ]), str(tmp_path))
    dev, sys_, m = rp.mounts
    assert [x.index for x in rp.mounts] == [0, 1, 2]
    assert dev.mount_flags == L.MS_NOSUID | L.MS_STRICTATIME and dev.data == "mode=755,size=65536k"
    assert sys_.mount_flags == L.MS_NOSUID | L.MS_RDONLY and sys_.propagation == (L.MS_SLAVE | L.MS_REC,)
    assert sys_.fallback_bind == "/sys"
    assert m.mount_flags == L.MS_REMOUNT | L.MS_RDONLY


def test_tmpcopyup_readonly_is_mounted_writable_then_remounted(tmp_path):
    rp = build_rootfs_plan(cfg([{"destination": "/etc", "type": "tmpfs", "source": "tmpfs",
                                 "options": ["tmpcopyup", "ro", "nosuid", "size=1m"]}]), str(tmp_path))
    m = rp.mounts[0]
    assert m.tmpcopyup and m.data == "size=1m"
    assert m.mount_flags == L.MS_NOSUID
    assert m.remount_flags == L.MS_NOSUID | L.MS_RDONLY | L.MS_REMOUNT


def test_cgroup_type(tmp_path):
    c = cfg([{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "ro"]}])
    v2 = build_rootfs_plan(c, str(tmp_path), cgroup2=True).mounts[0]
    assert v2.fstype == "cgroup2" and not v2.bind and v2.mount_flags == L.MS_NOSUID | L.MS_RDONLY
    v1 = build_rootfs_plan(c, str(tmp_path), cgroup2=False).mounts[0]
    # never mount v1 hierarchies: bind the host's view, read-only all the way down
    assert v1.bind and v1.recursive and v1.source == "/sys/fs/cgroup"
    assert v1.mount_flags == L.MS_BIND | L.MS_REC and v1.attr_set & L.MOUNT_ATTR_RDONLY


def test_host_cgroup2_detection(tmp_path):
    mi = tmp_path / "mountinfo"
    mi.write_text("1 0 0:1 / / rw - ext4 /dev/x rw\n"
                  "2 1 0:2 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
                  "3 2 0:3 / /sys/fs/cgroup rw - cgroup2 none rw\n")
    assert mounts.host_cgroup2(str(mi))
    mi.write_text("2 1 0:2 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n")
    assert not mounts.host_cgroup2(str(mi))
    assert not mounts.host_cgroup2(str(tmp_path / "missing"))


def test_dev_bind_mount_disables_dev_setup(tmp_path):
    assert build_rootfs_plan(cfg(), str(tmp_path)).setup_dev
    rp = build_rootfs_plan(cfg([{"destination": "/dev", "source": "/dev", "options": ["rbind"]}]),
                           str(tmp_path))
    assert not rp.setup_dev
    rp = build_rootfs_plan(cfg([{"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}]), str(tmp_path))
    assert rp.setup_dev


def test_devices_default_and_config(tmp_path):
    rp = build_rootfs_plan(cfg(devices=[
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o600, "uid": 1, "gid": 2},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o640},
        {"path": "/run/fifo", "type": "p"},
    ]), str(tmp_path))
    by_path = {d.path: d for d in rp.devices}
    assert {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"} <= set(by_path)
    assert len(rp.devices) == 8                          # /dev/null given once, by the config
    assert by_path["/dev/null"].mode == 0o640 and not by_path["/dev/null"].default
    assert by_path["/dev/tty"].default and (by_path["/dev/tty"].major, by_path["/dev/tty"].minor) == (5, 0)
    fuse = by_path["/dev/fuse"]
    assert (fuse.type, fuse.major, fuse.minor, fuse.mode, fuse.uid, fuse.gid) == ("c", 10, 229, 0o600, 1, 2)
    assert by_path["/run/fifo"].type == "p"


def test_config_errors_name_the_json_path(tmp_path):
    bad = cfg([{"destination": "/x", "source": "/x", "options": ["bind", "idmap"],
                "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]},
               {"destination": "/y", "source": "y"},
               {"destination": "/z", "type": "tmpfs", "options": ["idmap"]}],
              devices=[{"path": "dev/rel", "type": "c", "major": 1, "minor": 1},
                       {"path": "/dev/q", "type": "x"}],
              maskedPaths=["relative"], readonlyPaths=["/ok", "also/relative"],
              rootfsPropagation="sideways")
    with pytest.raises(ConfigError) as ei:
        build_rootfs_plan(bad, str(tmp_path))
    text = str(ei.value)
    for needle in ("mounts[0]: uidMappings and gidMappings must be given together",
                   "mounts[1].type", "mounts[2].options: 'idmap' needs", "linux.devices[0].path",
                   "linux.devices[1].type", "linux.maskedPaths[0]", "linux.readonlyPaths[1]",
                   "linux.rootfsPropagation"):
        assert needle in text, needle
    assert len(ei.value.problems) >= 8


def test_idmap_with_user_namespace_needs_no_mappings(tmp_path):
    c = cfg([{"destination": "/x", "source": "/x", "options": ["rbind", "ridmap"]}],
            namespaces=[{"type": "user"}, {"type": "mount"}])
    m = build_rootfs_plan(c, str(tmp_path)).mounts[0]
    assert m.idmap == "ridmap" and m.uid_mappings == ()
    c = cfg([{"destination": "/x", "source": "/x", "options": ["bind", "idmap"],
              "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 10}],
              "gidMappings": [{"containerID": 0, "hostID": 2000, "size": 10}]}])
    m = build_rootfs_plan(c, str(tmp_path)).mounts[0]
    assert m.uid_mappings == (mounts.IdMapping(0, 1000, 10),)
    assert m.gid_mappings == (mounts.IdMapping(0, 2000, 10),)


def test_propagation_of_root(tmp_path):
    rp = build_rootfs_plan(cfg(), str(tmp_path))
    assert rp.prepare_propagation == L.MS_SLAVE | L.MS_REC and rp.root_propagation == 0
    for name, flag in PROPAGATION_CASES.items():
        rp = build_rootfs_plan(cfg(rootfsPropagation=name), str(tmp_path))
        assert rp.prepare_propagation == rp.root_propagation == flag


def test_masked_readonly_flags_and_frozen(tmp_path):
    rp = build_rootfs_plan(cfg(maskedPaths=["/proc/kcore", "/proc/../sys/firmware"],
                               readonlyPaths=["/proc/sys"], namespaces=[{"type": "user"}]),
                           str(tmp_path), no_pivot=True, console=True)
    assert rp.masked_paths == ("/proc/kcore", "/sys/firmware")
    assert rp.readonly_paths == ("/proc/sys",)
    assert rp.no_pivot and rp.console and rp.userns
    with pytest.raises(dataclasses.FrozenInstanceError):
        rp.readonly = True
    with pytest.raises(dataclasses.FrozenInstanceError):
        rp.devices[0].mode = 0
    assert isinstance(rp.mounts, tuple) and isinstance(rp.devices, tuple)


def test_describe_is_plain_ordered_data(tmp_path):
    from pyoci.specgen import default_config
    c = default_config(["sh"])
    c["mounts"].append({"destination": "/data", "source": "data", "options": ["rbind", "rro", "shared"]})
    rp = build_rootfs_plan(c, str(tmp_path), console=True, cgroup2=True)
    d = rp.describe()
    assert json.loads(json.dumps(d)) == d                     # JSON-able, nothing but plain data
    steps = [x["step"] for x in d]
    assert steps[0] == "root" and d[0]["propagation"] == "rslave" and d[0]["readonly"] is True
    assert [x["destination"] for x in d if x["step"] == "mount"] == [m["destination"] for m in c["mounts"]]
    assert steps.index("pivot_root") > steps.index("console") > steps.index("device")
    assert steps.index("masked_path") > steps.index("pivot_root")
    shm = next(x for x in d if x.get("destination") == "/dev/shm")
    assert shm["flags"] == ["nosuid", "nodev", "noexec"] and shm["data"] == "mode=1777,size=65536k"
    data = next(x for x in d if x.get("destination") == "/data")
    assert data["source"] == str(tmp_path / "data") and data["propagation"] == ["shared"]
    assert data["recursive_attrs"]["set"] == ["rdonly"]
    cg = next(x for x in d if x.get("destination") == "/sys/fs/cgroup")
    assert cg["fstype"] == "cgroup2"
    assert {"step": "symlink", "path": "/dev/ptmx", "target": "pts/ptmx"} in d
    assert build_rootfs_plan(c, str(tmp_path), no_pivot=True, cgroup2=True).describe()[-1]["step"] != "pivot_root"


def test_proc_destinations(tmp_path):
    P = mounts.proc_destination_problem
    assert P("/proc", False, "proc") is None and P("/proc", True, "") is None
    assert "can only be a proc" in P("/proc", False, "tmpfs")
    assert P("/proc/uptime", True, "") is None and P("/proc/sys/kernel/ns_last_pid", True, "") is None
    assert "inside /proc" in P("/proc/sys", False, "tmpfs")
    assert P("/procfoo", False, "tmpfs") is None and P("/etc/proc", False, "tmpfs") is None
    with pytest.raises(ConfigError) as ei:
        build_rootfs_plan(cfg([{"destination": "/proc", "type": "proc", "source": "proc"},
                               {"destination": "/proc/../proc/kcore", "source": "/x", "options": ["bind"]},
                               {"destination": "/proc", "type": "tmpfs", "source": "tmpfs"}]), str(tmp_path))
    assert [p.split(":")[0] for p in ei.value.problems] == ["mounts[1].destination", "mounts[2].destination"]
