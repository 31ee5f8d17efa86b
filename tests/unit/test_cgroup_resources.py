"""OCI linux.resources → cgroup v2 files: the conversion tables (pure, no root)."""
from __future__ import annotations

import pytest

from pyoci.cgroups import resolve_path
from pyoci.cgroups.resources import (blkio_weight_to_io_weight, convert_resources,
                                     cpu_shares_to_weight, memory_swap_to_v2, parse_bytes,
                                     required_controllers, resources_from_update_flags)
from pyoci.errors import ConfigError, UsageError

MiB = 1 << 20


def conv(res, present=None):
    """present=None: every optional file exists; else only the names in `present`."""
    has = None if present is None else (lambda n: n in present)
    return convert_resources(res, has_file=has)


# --- formulas --------------------------------------------------------------------------
@pytest.mark.parametrize("shares,weight", [(0, 0), (1, 1), (2, 1), (3, 2), (10, 4), (100, 17),
                                           (512, 59), (1024, 100), (2048, 174), (4096, 303),
                                           (262143, 10000), (262144, 10000), (10 ** 6, 10000)])
def test_cpu_shares_to_weight(shares, weight):
    assert cpu_shares_to_weight(shares) == weight


@pytest.mark.parametrize("w,v", [(0, 0), (10, 1), (100, 910), (500, 4950), (1000, 10000)])
def test_blkio_weight_to_io_weight(w, v):
    assert blkio_weight_to_io_weight(w) == v


@pytest.mark.parametrize("swap,mem,out", [(0, -1, -1), (-1, 100, -1), (0, 100, 0), (300, -1, 300),
                                          (300, 100, 200), (100, 100, 0)])
def test_memory_swap_to_v2(swap, mem, out):
    assert memory_swap_to_v2(swap, mem) == out


@pytest.mark.parametrize("swap,mem,msg", [(300, 0, "needs a memory limit"),
                                          (50, 100, "below the memory limit"),
                                          (300, -5, "invalid memory")])
def test_memory_swap_to_v2_errors(swap, mem, msg):
    with pytest.raises(ValueError, match=msg):
        memory_swap_to_v2(swap, mem)


# --- memory ------------------------------------------------------------------------------
def test_memory_fields():
    out = conv({"memory": {"limit": 64 * MiB, "reservation": 32 * MiB, "swap": 128 * MiB}})
    assert out == {"memory.swap.max": str(64 * MiB), "memory.max": str(64 * MiB),
                   "memory.low": str(32 * MiB)}
    assert list(out)[0] == "memory.swap.max"   # swap first, as runc writes it


def test_memory_swap_equal_to_limit_disables_swap():
    assert conv({"memory": {"limit": 64 * MiB, "swap": 64 * MiB}})["memory.swap.max"] == "0"


def test_memory_unlimited():
    assert conv({"memory": {"limit": -1}}) == {"memory.swap.max": "max", "memory.max": "max"}
    # without swap accounting the file is missing; "max" then means nothing to do
    assert conv({"memory": {"limit": -1}}, present=set()) == {"memory.max": "max"}


def test_memory_swap_without_swap_accounting_is_still_an_error_when_limited():
    out = conv({"memory": {"limit": 64 * MiB, "swap": 128 * MiB}}, present=set())
    assert out["memory.swap.max"] == str(64 * MiB)   # written, so the missing file is reported


def test_memory_zero_values_are_unset():
    assert conv({"memory": {"limit": 0, "reservation": 0}}) == {}
    assert conv({"memory": {"checkBeforeUpdate": True}}) == {}


@pytest.mark.parametrize("field,value", [("kernel", 1024), ("kernelTCP", 1024), ("swappiness", 10),
                                         ("disableOOMKiller", True), ("useHierarchy", False)])
def test_memory_v1_only_settings_are_errors(field, value):
    with pytest.raises(ConfigError) as ei:
        conv({"memory": {field: value}})
    assert ei.value.problems[0].startswith(f"linux.resources.memory.{field}:")


def test_memory_harmless_v1_values_are_accepted():
    assert conv({"memory": {"useHierarchy": True, "disableOOMKiller": False}}) == {}


def test_memory_swap_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"linux.resources.memory.swap: .*below"):
        conv({"memory": {"limit": 100, "swap": 50}})


# --- cpu --------------------------------------------------------------------------------
def test_cpu_fields():
    out = conv({"cpu": {"shares": 1024, "quota": 50000, "period": 100000, "burst": 10000,
                        "idle": 1, "cpus": "0-3,7", "mems": "0"}})
    assert out == {"cpu.weight": "100", "cpu.max": "50000 100000", "cpu.max.burst": "10000",
                   "cpu.idle": "1", "cpuset.cpus": "0-3,7", "cpuset.mems": "0"}


@pytest.mark.parametrize("quota,period,value", [(50000, 0, "50000"), (-1, 100000, "max 100000"),
                                                (0, 20000, "max 20000"), (-1, 0, "max")])
def test_cpu_max_forms(quota, period, value):
    assert conv({"cpu": {"quota": quota, "period": period}})["cpu.max"] == value


def test_cpu_unset_fields_write_nothing():
    assert conv({"cpu": {"shares": 0, "quota": 0, "period": 0, "cpus": "", "mems": ""}}) == {}


def test_cpu_burst_above_quota_is_an_error():
    with pytest.raises(ConfigError, match="linux.resources.cpu.burst"):
        conv({"cpu": {"quota": 1000, "burst": 2000}})


@pytest.mark.parametrize("field", ["realtimeRuntime", "realtimePeriod"])
def test_cpu_realtime_is_an_error(field):
    with pytest.raises(ConfigError, match=f"linux.resources.cpu.{field}: not supported"):
        conv({"cpu": {field: 1000}})


def test_cpu_idle_must_be_0_or_1():
    with pytest.raises(ConfigError, match="cpu.idle"):
        conv({"cpu": {"idle": 2}})


# --- pids -----------------------------------------------------------------------------
@pytest.mark.parametrize("limit,value", [(100, "100"), (0, "0"), (-1, "max")])
def test_pids(limit, value):
    assert conv({"pids": {"limit": limit}}) == {"pids.max": value}


def test_pids_unset():
    assert conv({"pids": {}}) == {}


# --- blockIO -------------------------------------------------------------------------------
def test_blockio_with_bfq():
    res = {"blockIO": {"weight": 500,
                       "weightDevice": [{"major": 8, "minor": 0, "weight": 300}],
                       "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                       "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2000}],
                       "throttleReadIOPSDevice": [{"major": 8, "minor": 16, "rate": 30}],
                       "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 40}]}}
    out = conv(res)
    assert out == {"io.bfq.weight": "500\n8:0 300",
                   "io.max": "8:0 rbps=1000 wbps=2000 wiops=40\n8:16 riops=30"}


def test_blockio_without_bfq_uses_io_weight_converted():
    out = conv({"blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0,
                                                              "weight": 100}]}}, present=set())
    assert out == {"io.weight": "4950\n8:0 910"}


@pytest.mark.parametrize("res,msg", [
    ({"leafWeight": 300}, "blockIO.leafWeight: not supported"),
    ({"weightDevice": [{"major": 8, "minor": 0, "leafWeight": 300}]}, "weightDevice[0].leafWeight"),
    ({"weightDevice": [{"major": 8, "minor": 0}]}, "needs weight or leafWeight"),
    ({"weight": 5}, "must be 10..1000"),
    ({"throttleReadBpsDevice": [{"major": 8, "rate": 1}]}, "needs major and minor"),
    ({"throttleReadBpsDevice": [{"major": 8, "minor": 0}]}, "rate"),
])
def test_blockio_errors(res, msg):
    with pytest.raises(ConfigError) as ei:
        conv({"blockIO": res})
    assert msg in str(ei.value)


# --- hugetlb, rdma, unified, network -----------------------------------------------------------
def test_hugepage_limits_with_rsvd():
    out = conv({"hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MiB},
                                   {"pageSize": "1GB", "limit": 0}]})
    assert out == {"hugetlb.2MB.max": str(4 * MiB), "hugetlb.2MB.rsvd.max": str(4 * MiB),
                   "hugetlb.1GB.max": "0", "hugetlb.1GB.rsvd.max": "0"}


def test_hugepage_limits_without_rsvd():
    assert conv({"hugepageLimits": [{"pageSize": "2MB", "limit": 2 * MiB}]}, present=set()) == \
        {"hugetlb.2MB.max": str(2 * MiB)}


@pytest.mark.parametrize("size", ["2M", "2mb", "two", "", None])
def test_hugepage_bad_size(size):
    with pytest.raises(ConfigError, match=r"hugepageLimits\[0\].pageSize"):
        conv({"hugepageLimits": [{"pageSize": size, "limit": 1}]})


def test_rdma():
    out = conv({"rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000},
                         "mlx4_0": {"hcaObjects": 5}}})
    assert out == {"rdma.max": "mlx5_1 hca_handle=3 hca_object=10000\nmlx4_0 hca_object=5"}
    with pytest.raises(ConfigError, match="rdma.mlx5_1: needs hcaHandles or hcaObjects"):
        conv({"rdma": {"mlx5_1": {}}})


def test_unified_written_as_given_and_wins():
    out = conv({"pids": {"limit": 10}, "unified": {"pids.max": "20", "memory.high": "max",
                                                    "cgroup.max.depth": "3"}})
    assert out == {"pids.max": "20", "memory.high": "max", "cgroup.max.depth": "3"}
    assert required_controllers(out) == ["pids", "memory"]


@pytest.mark.parametrize("key", ["../x", "a/b", "nodot", ".."])
def test_unified_bad_keys(key):
    with pytest.raises(ConfigError, match="CONTROLLER.PARAMETER"):
        conv({"unified": {key: "1"}})


def test_network_is_an_error():
    with pytest.raises(ConfigError, match="linux.resources.network"):
        conv({"network": {"classID": 1}})


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as ei:
        conv({"memory": {"kernel": 1, "swappiness": 1}, "cpu": {"realtimeRuntime": 5}})
    assert len(ei.value.problems) == 3


def test_empty_and_devices_only():
    assert conv(None) == {} and conv({}) == {}
    assert conv({"devices": [{"allow": False, "access": "rwm"}]}) == {}


def test_required_controllers():
    files = conv({"memory": {"limit": 1 << 20}, "cpu": {"cpus": "0", "shares": 2},
                  "pids": {"limit": 1}, "blockIO": {"weight": 100},
                  "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]})
    assert sorted(required_controllers(files)) == ["cpu", "cpuset", "hugetlb", "io", "memory",
                                                   "pids"]


# --- update flags ---------------------------------------------------------------------------
def test_update_flags():
    r = resources_from_update_flags(memory="64m", memory_reservation="32M", memory_swap="-1",
                                    cpu_quota="50000", cpu_period=100000, cpu_share="512",
                                    cpuset_cpus="0-1", cpuset_mems="0", pids_limit="-1",
                                    blkio_weight="300", cpu_idle="1", cpu_burst="100")
    assert r == {"blockIO": {"weight": 300},
                 "cpu": {"period": 100000, "quota": 50000, "shares": 512, "burst": 100, "idle": 1,
                         "cpus": "0-1", "mems": "0"},
                 "memory": {"limit": 64 * MiB, "reservation": 32 * MiB, "swap": -1},
                 "pids": {"limit": -1}}
    assert conv(r, present={"memory.swap.max"})["memory.max"] == str(64 * MiB)


def test_update_flags_none_given():
    assert resources_from_update_flags() == {}


@pytest.mark.parametrize("kw,msg", [({"memory": "lots"}, "--memory"),
                                    ({"cpu_quota": "x"}, "--cpu-quota"),
                                    ({"l3_cache_schema": "L3:0=f"}, "Intel RDT"),
                                    ({"bogus_flag": 1}, "--bogus-flag")])
def test_update_flag_errors(kw, msg):
    with pytest.raises(UsageError, match=msg):
        resources_from_update_flags(**kw)


@pytest.mark.parametrize("s,n", [("1024", 1024), ("1k", 1024), ("64m", 64 * MiB), ("1g", 1 << 30),
                                 ("1.5g", 3 << 29), ("2MiB", 2 * MiB), ("-1", -1), (5, 5)])
def test_parse_bytes(s, n):
    assert parse_bytes(s, "--memory") == n


# --- cgroupsPath ------------------------------------------------------------------------------
@pytest.mark.parametrize("path,out", [(None, "/pyoci/c1"), ("", "/pyoci/c1"),
                                      ("/libpod_parent/libpod-abc", "/libpod_parent/libpod-abc"),
                                      ("/smoke/c1/", "/smoke/c1"), ("//a//./b", "/a/b"),
                                      ("mine/x", "/pyoci/mine/x")])
def test_resolve_path(path, out):
    assert resolve_path(path, "c1") == out


@pytest.mark.parametrize("path,msg", [("/a/../b", "'..'"), ("../x", "'..'"), ("/", "root cgroup"),
                                      ("system.slice:docker:abc", "systemd cgroup manager is not "
                                                                  "supported")])
def test_resolve_path_errors(path, msg):
    with pytest.raises(ConfigError, match=msg):
        resolve_path(path, "c1")
