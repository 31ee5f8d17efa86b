"""IPAM: file leases under <root>/.ipam/<subnet>/ with an flock. Pure file logic, no root."""
from __future__ import annotations

import ipaddress
import json
import os

import pytest

from pyoci.errors import StageError
from pyoci.ipam import Ipam, subnet_key, subnets_with_leases_of


def _state_dir(root, cid):
    os.makedirs(os.path.join(root, cid), exist_ok=True)


def test_subnet_key_and_gateway(tmp_path):
    assert subnet_key("10.213.0.0/24") == "10.213.0.0_24"
    ipam = Ipam(str(tmp_path), "10.213.0.0/24")
    assert str(ipam.gateway) == "10.213.0.1"
    assert ipam.dir == str(tmp_path / ".ipam" / "10.213.0.0_24")


def test_allocate_is_stable_per_container_and_distinct_across(tmp_path):
    root = str(tmp_path)
    ipam = Ipam(root, "10.213.0.0/24")
    for cid in ("a", "b", "c"):
        _state_dir(root, cid)
    a = ipam.allocate("a")
    b = ipam.allocate("b")
    assert a.address == "10.213.0.2" and a.prefixlen == 24 and a.gateway == "10.213.0.1"
    assert a.cidr == "10.213.0.2/24"
    assert b.address != a.address
    assert ipam.allocate("a") == a  # same container, same lease
    assert ipam.leases() == {a.address: "a", b.address: "b"}
    with open(os.path.join(ipam.dir, a.address)) as f:
        data = json.load(f)
    assert data["id"] == "a" and data["pid"] == os.getpid()


def test_never_hands_out_network_gateway_or_broadcast(tmp_path):
    root = str(tmp_path)
    ipam = Ipam(root, "192.168.50.0/29")  # hosts .1-.6, .1 is the gateway
    got = []
    for i in range(5):
        _state_dir(root, f"c{i}")
        got.append(ipam.allocate(f"c{i}").address)
    assert sorted(got) == [f"192.168.50.{n}" for n in range(2, 7)]
    _state_dir(root, "extra")
    with pytest.raises(StageError, match="no free address left in 192.168.50.0/29"):
        ipam.allocate("extra")


def test_release_frees_the_address(tmp_path):
    root = str(tmp_path)
    ipam = Ipam(root, "10.213.0.0/24")
    _state_dir(root, "a")
    a = ipam.allocate("a")
    assert ipam.release("a") == [a.address]
    assert ipam.leases() == {}
    assert not os.path.exists(os.path.join(ipam.dir, a.address))
    assert ipam.release("a") == []  # idempotent
    assert Ipam(root, "10.99.0.0/24").release("a") == []  # never used subnet: nothing, no dir
    assert not os.path.exists(os.path.join(root, ".ipam", "10.99.0.0_24"))


def _write_lease(ipam, addr, cid, pid, start):
    os.makedirs(ipam.dir, exist_ok=True)
    with open(os.path.join(ipam.dir, addr), "w") as f:
        json.dump({"id": cid, "pid": pid, "start": start}, f)


def _dead_pid():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_stale_lease_is_reclaimed_when_subnet_is_full(tmp_path):
    """kill -9 during create: the state dir is gone and the allocating pyoci is dead."""
    root = str(tmp_path)
    ipam = Ipam(root, "10.1.2.0/30")  # one usable address: .2
    _write_lease(ipam, "10.1.2.2", "crashed", _dead_pid(), 12345)
    _state_dir(root, "new")
    lease = ipam.allocate("new")
    assert lease.address == "10.1.2.2"
    assert ipam.leases() == {"10.1.2.2": "new"}


def test_lease_of_existing_container_is_not_reclaimed(tmp_path):
    root = str(tmp_path)
    ipam = Ipam(root, "10.1.2.0/30")
    _write_lease(ipam, "10.1.2.2", "alive", _dead_pid(), 1)
    _state_dir(root, "alive")  # state dir exists: the container lives
    _state_dir(root, "new")
    with pytest.raises(StageError, match="no free address"):
        ipam.allocate("new")
    with ipam.locked():
        assert ipam.reclaim_stale_locked() == []
    assert ipam.leases() == {"10.1.2.2": "alive"}


def test_lease_of_running_create_without_state_dir_is_not_reclaimed(tmp_path):
    """Between lease and state dir the allocating pyoci is alive: its lease must survive."""
    from pyoci.ipam import _proc_start_time
    root = str(tmp_path)
    ipam = Ipam(root, "10.1.2.0/30")
    _write_lease(ipam, "10.1.2.2", "creating", os.getpid(), _proc_start_time(os.getpid()))
    with ipam.locked():
        assert ipam.reclaim_stale_locked() == []
    # same pid number, different start time: a reused pid, the lease is stale
    _write_lease(ipam, "10.1.2.2", "creating", os.getpid(), -1)
    with ipam.locked():
        assert ipam.reclaim_stale_locked() == ["10.1.2.2"]


def test_subnets_with_leases_of(tmp_path):
    root = str(tmp_path)
    _state_dir(root, "a")
    Ipam(root, "10.5.0.0/24").allocate("a")
    Ipam(root, "10.6.0.0/24").allocate("b")
    assert subnets_with_leases_of(root, "a") == ["10.5.0.0/24"]
    assert subnets_with_leases_of(root, "zzz") == []
    assert subnets_with_leases_of(str(tmp_path / "nothing"), "a") == []


def test_bad_subnets(tmp_path):
    with pytest.raises(StageError, match="invalid subnet"):
        Ipam(str(tmp_path), "10.0.0.1/24x")
    with pytest.raises(StageError, match="too small"):
        Ipam(str(tmp_path), "10.0.0.0/31")


def test_bridge_marker(tmp_path):
    ipam = Ipam(str(tmp_path), "10.213.0.0/24")
    with ipam.locked():
        assert ipam.bridge_marker() is None
        ipam.set_bridge_marker("pyoci0")
        assert ipam.bridge_marker() == "pyoci0"
        ipam.set_bridge_marker(None)
        ipam.set_bridge_marker(None)
        assert ipam.bridge_marker() is None


def test_30_concurrent_allocations_are_distinct(tmp_path):
    """30 processes racing for addresses (each a separate pyoci): 30 distinct leases."""
    root = str(tmp_path)
    n = 30
    for i in range(n):
        _state_dir(root, f"c{i}")
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                os.close(go_w)
                os.read(go_r, 1)  # start together
                lease = Ipam(root, "10.213.0.0/24").allocate(f"c{i}")
                os.write(w, f"c{i} {lease.address}\n".encode())
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(w)
    os.close(go_r)
    os.close(go_w)  # EOF releases every child at once
    out = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        out += chunk
    os.close(r)
    codes = [os.waitpid(p, 0)[1] for p in pids]
    assert codes == [0] * n
    got = dict(line.split() for line in out.decode().splitlines())
    assert len(got) == n
    assert len(set(got.values())) == n
    net = ipaddress.IPv4Network("10.213.0.0/24")
    assert all(ipaddress.IPv4Address(a) in net and a not in ("10.213.0.0", "10.213.0.1")
               for a in got.values())
    assert Ipam(root, "10.213.0.0/24").leases() == {a: c for c, a in got.items()}
