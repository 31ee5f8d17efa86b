"""Network stage, for real.

Every namespace here is made by the test: a forked child that unshares CLONE_NEWNET holds it
(`Netns`). One of them plays the HOST (setup/teardown get `host_netns=`), so the machine's own
interfaces are never touched; links die with their namespace. Traffic only flows between these
namespaces, and every ping is bounded (-c 1 -W 1, a few tries).

The plan_network and /etc/hosts tests at the top are pure and need no root.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from pyoci import network
from pyoci.errors import ConfigError, StageError
from pyoci.ipam import Ipam

NETNS = [{"type": "network"}]


def _cfg(annotations=None, netdevices=None, namespaces=NETNS, hostname=None):
    cfg = {"linux": {"namespaces": list(namespaces)}}
    if annotations is not None:
        cfg["annotations"] = annotations
    if netdevices is not None:
        cfg["linux"]["netDevices"] = netdevices
    if hostname:
        cfg["hostname"] = hostname
    return cfg


# ----------------------------------------------------------------------------------------------
# plan_network (pure)
# ----------------------------------------------------------------------------------------------
def test_plan_none_when_only_lo():
    assert network.plan_network(_cfg()) is None
    assert network.plan_network({}) is None
    assert network.plan_network(_cfg(annotations={"org.pyoci.network": "none"})) is None
    assert network.plan_network(_cfg(netdevices={})) is None


def test_plan_net_devices():
    plan = network.plan_network(_cfg(netdevices={"eth1": {"name": "ctr0"}, "eth2": {},
                                                 "eth3": {"name": "net%d"}}))
    assert plan.devices == (network.NetDevice("eth1", "ctr0"), network.NetDevice("eth2", "eth2"),
                            network.NetDevice("eth3", "net%d"))
    assert plan.bridge is None
    with pytest.raises(Exception):
        plan.devices = ()  # frozen


def test_plan_bridge_defaults_and_overrides():
    plan = network.plan_network(_cfg(annotations={"org.pyoci.network": "bridge"}, hostname="web"))
    assert plan.bridge == network.BridgeMode("pyoci0", "10.213.0.0/24")
    assert plan.hostname == "web"
    plan = network.plan_network(_cfg(annotations={"org.pyoci.network": "bridge",
                                                  "org.pyoci.network.bridge": "br-test",
                                                  "org.pyoci.network.subnet": "192.168.77.9/26"}))
    assert plan.bridge == network.BridgeMode("br-test", "192.168.77.0/26")


@pytest.mark.parametrize("cfg, message", [
    (_cfg(netdevices={"eth1": {"name": "a/b"}}), "linux.netDevices.eth1.name: must not contain '/'"),
    (_cfg(netdevices={"eth1": {"name": "x" * 16}}), "linux.netDevices.eth1.name: must be at most 15"),
    (_cfg(netdevices={"eth1": {"name": "n%s"}}), "linux.netDevices.eth1.name: may hold only one '%d'"),
    (_cfg(netdevices={"eth1": {"name": "n%d%d"}}), "may hold only one '%d'"),
    (_cfg(netdevices={"e%d": {}}), "linux.netDevices.e%d: host interface name must not contain '%'"),
    (_cfg(netdevices={"eth1": {"name": "c0"}, "eth2": {"name": "c0"}}),
     "linux.netDevices.eth2.name: 'c0' is also the name of linux.netDevices.eth1"),
    (_cfg(netdevices={"eth1": {"name": "lo"}}), "linux.netDevices.eth1.name: 'lo' already exists"),
    (_cfg(netdevices={"eth1": {}}, namespaces=[]), "linux.netDevices: needs a network namespace"),
    (_cfg(annotations={"org.pyoci.network": "nat"}), "annotations.org.pyoci.network: must be"),
    (_cfg(annotations={"org.pyoci.network": "bridge"}, namespaces=[]), "bridge mode needs a network"),
    (_cfg(annotations={"org.pyoci.network": "bridge"},
          namespaces=[{"type": "network", "path": "/run/netns/x"}]), "needs a new network namespace"),
    (_cfg(annotations={"org.pyoci.network": "bridge", "org.pyoci.network.subnet": "10.1.2.0/31"}),
     "annotations.org.pyoci.network.subnet: prefix length must be 8..30"),
    (_cfg(annotations={"org.pyoci.network": "bridge", "org.pyoci.network.subnet": "8.8.8.0/24"}),
     "8.8.8.0/24 is not a private range"),
    (_cfg(annotations={"org.pyoci.network": "bridge", "org.pyoci.network.subnet": "banana"}),
     "annotations.org.pyoci.network.subnet: must be an IPv4 subnet"),
    (_cfg(annotations={"org.pyoci.network": "bridge", "org.pyoci.network.bridge": "a bridge"}),
     "annotations.org.pyoci.network.bridge: bridge name must not contain ' '"),
    (_cfg(annotations={"org.pyoci.network": "bridge"}, netdevices={"eth1": {"name": "eth0"}}),
     "which linux.netDevices also uses"),
])
def test_plan_errors_name_the_json_path(cfg, message):
    with pytest.raises(ConfigError) as ei:
        network.plan_network(cfg)
    assert message in str(ei.value)


def test_importing_network_does_not_import_pyroute2():
    code = ("import sys, pyoci.network as n; n.plan_network({'linux': {'namespaces': "
            "[{'type': 'network'}]}, 'annotations': {'org.pyoci.network': 'bridge'}}); "
            "print('pyroute2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "False", out.stderr


# ----------------------------------------------------------------------------------------------
# /etc/hosts in the rootfs (pure files, resolved inside the rootfs)
# ----------------------------------------------------------------------------------------------
def test_hosts_line_replaced_not_duplicated(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n10.0.0.9\tother\n")
    assert network._write_hosts(str(rootfs), "10.213.0.5", ["web", "c1"]) == "written"
    assert network._write_hosts(str(rootfs), "10.213.0.6", ["web", "c1"]) == "written"
    lines = (rootfs / "etc" / "hosts").read_text().splitlines()
    assert lines[:2] == ["127.0.0.1\tlocalhost", "10.0.0.9\tother"]
    assert lines[2].split()[:3] == ["10.213.0.6", "web", "c1"]
    assert len(lines) == 3


def test_hosts_symlink_never_leaves_the_rootfs(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "hosts").write_text("precious\n")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    # both an absolute and a ..-climbing link to the host file: resolved inside the rootfs
    for target in (str(outside / "hosts"), "../../outside/hosts"):
        link = rootfs / "etc" / "hosts"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target)
        res = network._write_hosts(str(rootfs), "10.213.0.5", ["c1"])
        assert res.startswith("skipped"), res
        assert (outside / "hosts").read_text() == "precious\n"


def test_hosts_skipped_without_etc(tmp_path):
    (tmp_path / "rootfs").mkdir()
    assert network._write_hosts(str(tmp_path / "rootfs"), "10.213.0.5", ["c1"]).startswith("skipped")


# ----------------------------------------------------------------------------------------------
# helpers for the root tests
# ----------------------------------------------------------------------------------------------
class Netns:
    """A network namespace held by a forked child until close() (at most 300 s)."""

    def __init__(self):
        r, w = os.pipe()
        hold_r, hold_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                from pyoci.linux import libc
                libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGKILL)
                os.close(r)
                os.close(hold_w)
                libc.unshare(libc.CLONE_NEWNET)
                os.write(w, b"k")
                os.close(w)
                select.select([hold_r], [], [], 300)
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        os.close(hold_r)
        ok = os.read(r, 1)
        os.close(r)
        self.pid, self._hold = pid, hold_w
        if ok != b"k":
            self.close()
            raise RuntimeError("netns holder failed to unshare")
        self.path = f"/proc/{pid}/ns/net"

    def close(self):
        if self._hold is not None:
            os.close(self._hold)
            self._hold = None
            os.waitpid(self.pid, 0)

    def sh(self, *argv, check=True, timeout=10):
        p = subprocess.run(["nsenter", f"--net={self.path}", *argv], capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{argv} in {self.path}: {p.returncode} {p.stderr}")
        return p

    def links(self) -> dict[str, dict]:
        return {l["ifname"]: l for l in json.loads(self.sh("ip", "-j", "addr", "show").stdout)}

    def ping(self, ip: str, tries: int = 5) -> bool:
        for _ in range(tries):
            if self.sh("/bin/busybox", "ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0:
                return True
        return False


@pytest.fixture
def netns():
    made = []

    def make():
        ns = Netns()
        made.append(ns)
        return ns
    yield make
    for ns in reversed(made):
        ns.close()


def _addrs(link: dict) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])}


def _bridge_cfg(bridge="tbr0", subnet="10.213.7.0/24", hostname=None):
    return _cfg(annotations={"org.pyoci.network": "bridge", "org.pyoci.network.bridge": bridge,
                             "org.pyoci.network.subnet": subnet}, hostname=hostname)


# ----------------------------------------------------------------------------------------------
# loopback
# ----------------------------------------------------------------------------------------------
@pytest.mark.root
def test_loopback_up_without_pyroute2():
    code = ("import sys; from pyoci import network; network.loopback_up(); network.loopback_up(); "
            "assert 'pyroute2' not in sys.modules, 'pyroute2 imported'")
    p = subprocess.run(["unshare", "-n", "sh", "-c",
                        f"{sys.executable} -c \"{code}\" && ip -j link show lo && "
                        "/bin/busybox ping -c 1 -W 1 127.0.0.1"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    lo = json.loads(p.stdout.splitlines()[0])[0]
    assert "UP" in lo["flags"]
    assert "1 packets received" in p.stdout


# ----------------------------------------------------------------------------------------------
# netDevices (spec#144-148)
# ----------------------------------------------------------------------------------------------
@pytest.mark.root
def test_net_devices_moved_renamed_up_with_addresses(netns, tmp_path):
    host, ctr = netns(), netns()
    host.sh("ip", "link", "add", "tdev0", "mtu", "1400", "type", "veth", "peer", "name", "tdev0p")
    host.sh("ip", "addr", "add", "10.77.0.1/24", "dev", "tdev0")
    host.sh("ip", "addr", "add", "10.77.1.1/24", "dev", "tdev0")
    host.sh("ip", "addr", "add", "fd00:77::1/64", "dev", "tdev0", "nodad")
    host.sh("ip", "link", "add", "tdev1", "type", "veth", "peer", "name", "tdev1p")
    host.sh("ip", "link", "add", "tdev2", "type", "veth", "peer", "name", "tdev2p")
    ctr.sh("ip", "link", "add", "net0", "type", "veth", "peer", "name", "other0")  # net0 taken
    plan = network.plan_network(_cfg(netdevices={"tdev0": {"name": "moved0"}, "tdev1": {"name": "net%d"},
                                                 "tdev2": None}))
    info = network.setup(plan, ctr.pid, "c1", str(tmp_path), host_netns=host.path)

    links = ctr.links()
    assert "moved0" in links and "UP" in links["moved0"]["flags"]
    assert {"10.77.0.1/24", "10.77.1.1/24", "fd00:77::1/64"} <= _addrs(links["moved0"])
    assert links["moved0"]["mtu"] == 1400  # attributes kept
    # the template let the kernel pick the first free name (net0 was taken)
    templ = [d for d in info["devices"] if d["host_name"] == "tdev1"][0]["name"]
    assert templ.startswith("net") and templ != "net0" and templ in links
    assert "UP" in links[templ]["flags"]
    assert "tdev2" in links and "UP" in links["tdev2"]["flags"]  # name defaults to the host name
    hl = host.links()
    assert not {"tdev0", "tdev1", "tdev2"} & set(hl)
    assert {d["name"] for d in info["devices"]} == {"moved0", templ, "tdev2"}
    assert json.loads(json.dumps(info)) == info

    network.teardown(info, "c1", str(tmp_path), host_netns=host.path)
    assert "moved0" in ctr.links()  # never moved back (spec#148)


@pytest.mark.root
def test_net_device_name_clash_and_missing_device(netns, tmp_path):
    host, ctr = netns(), netns()
    host.sh("ip", "link", "add", "tdev0", "type", "veth", "peer", "name", "tdev0p")
    ctr.sh("ip", "link", "add", "eth5", "type", "veth", "peer", "name", "eth5p")
    plan = network.plan_network(_cfg(netdevices={"tdev0": {"name": "eth5"}}))
    with pytest.raises(StageError, match=r"linux.netDevices.tdev0.name: an interface named 'eth5' "
                                         r"already exists in the container"):
        network.setup(plan, ctr.pid, "c1", str(tmp_path), host_netns=host.path)
    assert "tdev0" in host.links()  # not moved

    plan = network.plan_network(_cfg(netdevices={"nosuch0": {}}))
    with pytest.raises(StageError, match=r"linux.netDevices.nosuch0: no interface named 'nosuch0'"):
        network.setup(plan, ctr.pid, "c1", str(tmp_path), host_netns=host.path)


@pytest.mark.root
def test_setup_refuses_the_hosts_own_namespace(netns, tmp_path):
    host = netns()
    host.sh("ip", "link", "add", "tdev0", "type", "veth", "peer", "name", "tdev0p")
    plan = network.plan_network(_cfg(netdevices={"tdev0": {}}))
    with pytest.raises(StageError, match="has no network namespace of its own"):
        network.setup(plan, host.pid, "c1", str(tmp_path), host_netns=host.path)
    assert "tdev0" in host.links()


# ----------------------------------------------------------------------------------------------
# bridge mode
# ----------------------------------------------------------------------------------------------
def _state_dirs(root, *ids):
    for cid in ids:
        os.makedirs(os.path.join(root, cid), exist_ok=True)


@pytest.mark.root
def test_bridge_two_containers_ping_each_other_and_the_host(netns, tmp_path):
    host, a, b = netns(), netns(), netns()
    root = str(tmp_path / "state")
    _state_dirs(root, "ca", "cb")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    plan = network.plan_network(_bridge_cfg(hostname="alpha"))

    ia = network.setup(plan, a.pid, "ca", root, rootfs=str(rootfs), host_netns=host.path)
    ib = network.setup(plan, b.pid, "cb", root, host_netns=host.path)
    assert json.loads(json.dumps(ia)) == ia
    assert ia["bridge_created"] is True and ib["bridge_created"] is False
    assert ia["gateway"] == "10.213.7.1" and ia["prefixlen"] == 24
    assert ia["ip"] != ib["ip"]

    hl = host.links()
    assert "10.213.7.1/24" in _addrs(hl["tbr0"]) and "UP" in hl["tbr0"]["flags"]
    for info in (ia, ib):
        assert hl[info["veth"]].get("master") == "tbr0"
    assert host.sh("cat", "/proc/sys/net/ipv4/conf/tbr0/forwarding").stdout.strip() == "0"
    la = a.links()
    assert f"{ia['ip']}/24" in _addrs(la["eth0"]) and "UP" in la["eth0"]["flags"]
    route = json.loads(a.sh("ip", "-j", "route", "show", "default").stdout)
    assert route and route[0]["gateway"] == "10.213.7.1" and route[0]["dev"] == "eth0"

    assert a.ping(ib["ip"]), "container a cannot reach container b"
    assert b.ping(ia["ip"]), "container b cannot reach container a"
    assert a.ping("10.213.7.1"), "container a cannot reach the host bridge"
    assert host.ping(ib["ip"]), "the host cannot reach container b"

    hosts = (rootfs / "etc" / "hosts").read_text().splitlines()
    assert ia["hosts"] == "written"
    assert any(l.split()[:3] == [ia["ip"], "alpha", "ca"] for l in hosts)

    ipam = Ipam(root, "10.213.7.0/24")
    assert ipam.leases() == {ia["ip"]: "ca", ib["ip"]: "cb"}

    network.teardown(ia, "ca", root)  # host_netns comes from info
    hl = host.links()
    assert ia["veth"] not in hl and "tbr0" in hl  # bridge still used by cb
    assert ipam.leases() == {ib["ip"]: "cb"}
    network.teardown(ib, "cb", root)
    network.teardown(ib, "cb", root)  # idempotent
    hl = host.links()
    assert ib["veth"] not in hl and "tbr0" not in hl  # last lease gone, we made it: deleted
    assert ipam.leases() == {}
    with ipam.locked():
        assert ipam.bridge_marker() is None
    assert not [l for l in hl if l.startswith("pyv")]


@pytest.mark.root
def test_existing_bridge_is_reused_and_kept(netns, tmp_path):
    host, a = netns(), netns()
    root = str(tmp_path / "state")
    _state_dirs(root, "ca")
    host.sh("ip", "link", "add", "tbr1", "type", "bridge")
    plan = network.plan_network(_bridge_cfg(bridge="tbr1", subnet="172.30.9.0/24"))
    info = network.setup(plan, a.pid, "ca", root, host_netns=host.path)
    assert info["bridge_created"] is False
    assert "172.30.9.1/24" in _addrs(host.links()["tbr1"])
    assert a.ping("172.30.9.1")
    network.teardown(info, "ca", root)
    assert "tbr1" in host.links()  # not ours: kept
    assert info["veth"] not in host.links()


@pytest.mark.root
def test_non_bridge_with_bridge_name_is_an_error(netns, tmp_path):
    host, a = netns(), netns()
    root = str(tmp_path / "state")
    _state_dirs(root, "ca")
    host.sh("ip", "link", "add", "tbr2", "type", "veth", "peer", "name", "tbr2p")
    plan = network.plan_network(_bridge_cfg(bridge="tbr2"))
    with pytest.raises(StageError, match="'tbr2' exists in the host network namespace but is a veth"):
        network.setup(plan, a.pid, "ca", root, host_netns=host.path)
    assert Ipam(root, "10.213.7.0/24").leases() == {}  # rolled back
    assert "eth0" not in a.links()


@pytest.mark.root
def test_teardown_without_info_after_a_crash(netns, tmp_path):
    """A create killed after setup but before it saved the info: delete --force only knows the id."""
    host, a = netns(), netns()
    root = str(tmp_path / "state")
    _state_dirs(root, "ca")
    plan = network.plan_network(_bridge_cfg())
    info = network.setup(plan, a.pid, "ca", root, host_netns=host.path)
    assert info["veth"] in host.links()
    # setting up the same id again (retry after a crash) reuses the lease and replaces the veth
    a.sh("ip", "link", "del", "eth0")
    again = network.setup(plan, a.pid, "ca", root, host_netns=host.path)
    assert again["ip"] == info["ip"] and again["veth"] == info["veth"]
    network.teardown({}, "ca", root, host_netns=host.path)
    hl = host.links()
    assert info["veth"] not in hl and "tbr0" not in hl
    assert Ipam(root, "10.213.7.0/24").leases() == {}
    assert "eth0" not in a.links()  # the peer went with the host end


@pytest.mark.root
def test_30_concurrent_setups_get_distinct_addresses(netns, tmp_path):
    import pyroute2  # noqa: F401  (once, before forking the workers)
    n = 30
    host = netns()
    ctrs = [netns() for _ in range(n)]
    root = str(tmp_path / "state")
    ids = [f"c{i}" for i in range(n)]
    _state_dirs(root, *ids)
    plan = network.plan_network(_bridge_cfg())
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    workers = []
    for cid, ctr in zip(ids, ctrs):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                os.close(r)
                os.close(go_w)
                os.read(go_r, 1)
                info = network.setup(plan, ctr.pid, cid, root, host_netns=host.path)
                os.write(w, (json.dumps(info) + "\n").encode())
                code = 0
            except BaseException as e:
                os.write(2, f"{cid}: {e}\n".encode())
            finally:
                os._exit(code)
        workers.append(pid)
    os.close(w)
    os.close(go_r)
    os.close(go_w)  # start them all at once
    out = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([r], [], [], 5)
        if ready:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            out += chunk
    os.close(r)
    codes = [os.waitpid(p, 0)[1] for p in workers]
    assert codes == [0] * n
    infos = [json.loads(l) for l in out.decode().splitlines()]
    assert len(infos) == n
    ips = {i["ip"] for i in infos}
    assert len(ips) == n
    assert sum(1 for i in infos if i["bridge_created"]) == 1
    hl = host.links()
    assert {i["veth"] for i in infos} <= set(hl)
    by_ns = {i["netns"]: i for i in infos}
    leases = Ipam(root, "10.213.7.0/24").leases()
    assert leases == {by_ns[ctr.path]["ip"]: cid for cid, ctr in zip(ids, ctrs)}
    # spot-check traffic between two of them
    first, last = infos[0], infos[-1]
    a = next(ctr for ctr in ctrs if ctr.path == first["netns"])
    assert a.ping(last["ip"])
    for cid, ctr in zip(ids, ctrs):
        network.teardown(by_ns[ctr.path], cid, root)
    hl = host.links()
    assert not [l for l in hl if l.startswith("pyv")] and "tbr0" not in hl
    assert Ipam(root, "10.213.7.0/24").leases() == {}


# ----------------------------------------------------------------------------------------------
# end to end through the CLI: pyoci itself runs inside a test-made "host" netns
# ----------------------------------------------------------------------------------------------
def _net_bundle(path, rootfs_src, args, hostname, subnet="10.213.9.0/24", bridge="tbr9"):
    from helpers.bundle import Bundle
    b = Bundle.make(path, rootfs_src, args=args)
    b.config["hostname"] = hostname
    b.config.setdefault("annotations", {}).update({
        "org.pyoci.network": "bridge", "org.pyoci.network.bridge": bridge,
        "org.pyoci.network.subnet": subnet})
    caps = b.process.setdefault("capabilities", {})
    for kind in ("bounding", "effective", "permitted"):
        caps[kind] = sorted(set(caps.get(kind, [])) | {"CAP_NET_RAW"})
    return b.save()


def _pyoci_in(host: Netns, runtime, *args, timeout=60, check=True):
    """Run pyoci inside the test-made host netns. Output goes to files, not pipes: a detached
    container keeps the stdio it inherits open."""
    import tempfile
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.run(["nsenter", f"--net={host.path}", *runtime.argv(*args)], stdin=subprocess.DEVNULL,
                           stdout=out, stderr=err, text=True, timeout=timeout)
        out.seek(0)
        err.seek(0)
        p.stdout, p.stderr = out.read(), err.read()
    if check and p.returncode != 0:
        raise AssertionError(f"pyoci {' '.join(args)} exited {p.returncode}\n"
                             f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def _kill_leftovers(root: str) -> None:
    """Kill (by pid) container processes of this test that a failed run may have left."""
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if root.encode() in cmd and int(p) != os.getpid():
            try:
                os.kill(int(p), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.root
def test_cli_two_containers_ping_each_other_and_the_host(netns, runtime, tmp_path, busybox_rootfs):
    host = netns()
    a = _net_bundle(tmp_path / "a", busybox_rootfs, ["/bin/sleep", "60"], "alpha")
    try:
        _pyoci_in(host, runtime, "run", "-d", "--bundle", str(a.path), "ca")
        st = json.loads(_pyoci_in(host, runtime, "state", "ca").stdout)
        assert st["status"] == "running"
        ip_a = st["annotations"]["org.pyoci.network.ip"]
        assert ip_a.startswith("10.213.9.")
        assert ip_a in _pyoci_in(host, runtime, "list").stdout
        assert host.ping(ip_a), "the host cannot reach container ca"

        script = (f"ping -c 1 -W 1 {ip_a} && ping -c 1 -W 1 10.213.9.1 && "
                  "ip -o -4 addr show dev eth0 && cat /etc/hosts")
        b = _net_bundle(tmp_path / "b", busybox_rootfs, ["/bin/sh", "-c", script], "beta")
        p = _pyoci_in(host, runtime, "run", "--bundle", str(b.path), "cb", check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"64 bytes from {ip_a}" in p.stdout and "64 bytes from 10.213.9.1" in p.stdout
        own = [l for l in p.stdout.splitlines() if "# pyoci-network" in l]
        assert own and own[0].split()[1:3] == ["beta", "cb"]
        assert f"inet {own[0].split()[0]}/24" in p.stdout  # /etc/hosts holds its own address
        assert "cb" not in runtime.ids()  # run removed it
        assert len(Ipam(runtime.root, "10.213.9.0/24").leases()) == 1
        _pyoci_in(host, runtime, "delete", "--force", "ca")
    finally:
        try:
            for cid in runtime.ids():
                _pyoci_in(host, runtime, "delete", "--force", cid, check=False, timeout=30)
        finally:
            _kill_leftovers(runtime.root)
    links = host.links()
    assert not [l for l in links if l.startswith("pyv")] and "tbr9" not in links
    assert Ipam(runtime.root, "10.213.9.0/24").leases() == {}


@pytest.mark.root
def test_cli_kill_9_during_create_then_delete_force_leaves_nothing(netns, runtime, tmp_path,
                                                                   busybox_rootfs):
    """A createRuntime hook (it runs after the network stage) SIGKILLs the creating pyoci."""
    host = netns()
    a = _net_bundle(tmp_path / "a", busybox_rootfs, ["/bin/sleep", "60"], "alpha")
    a.config.setdefault("hooks", {})["createRuntime"] = [
        {"path": "/bin/sh", "args": ["sh", "-c", "kill -9 $PPID"], "timeout": 10}]
    a.save()
    try:
        p = _pyoci_in(host, runtime, "create", "--bundle", str(a.path), "ca", check=False)
        assert p.returncode == -signal.SIGKILL, p.stderr
        leases = Ipam(runtime.root, "10.213.9.0/24").leases()
        assert list(leases.values()) == ["ca"]
        assert runtime.ids() == ["ca"]  # a half-made container for delete --force to clean
        _pyoci_in(host, runtime, "delete", "--force", "ca", timeout=30)
    finally:
        _kill_leftovers(runtime.root)
    links = host.links()
    assert not [l for l in links if l.startswith("pyv")] and "tbr9" not in links
    assert Ipam(runtime.root, "10.213.9.0/24").leases() == {}
    assert runtime.ids() == []


@pytest.mark.root
def test_bridge_shared_with_another_root_is_not_deleted_under_it(netns, tmp_path):
    host, a, b = netns(), netns(), netns()
    root1, root2 = str(tmp_path / "r1"), str(tmp_path / "r2")
    _state_dirs(root1, "ca")
    _state_dirs(root2, "cb")
    ia = network.setup(network.plan_network(_bridge_cfg(subnet="10.213.7.0/24")), a.pid, "ca", root1,
                       host_netns=host.path)
    ib = network.setup(network.plan_network(_bridge_cfg(subnet="10.213.8.0/24")), b.pid, "cb", root2,
                       host_netns=host.path)
    assert ia["bridge_created"] and not ib["bridge_created"]
    assert {"10.213.7.1/24", "10.213.8.1/24"} <= _addrs(host.links()["tbr0"])
    network.teardown(ia, "ca", root1)
    assert "tbr0" in host.links()  # root1 made it, but cb (root2) is still a port
    assert b.ping("10.213.8.1")
    network.teardown(ib, "cb", root2)
    assert "tbr0" in host.links()  # root2 never owned it
    assert ib["veth"] not in host.links()


@pytest.mark.root
def test_cli_30_concurrent_creates_get_distinct_addresses(netns, runtime, tmp_path, busybox_rootfs):
    host = netns()
    n = 30
    ids = [f"n{i}" for i in range(n)]
    bundles = [_net_bundle(tmp_path / cid, busybox_rootfs, ["/bin/sleep", "60"], cid) for cid in ids]
    logs = [open(tmp_path / f"{cid}.log", "w+") for cid in ids]
    try:
        procs = [subprocess.Popen(["nsenter", f"--net={host.path}",
                                   *runtime.argv("run", "-d", "--bundle", str(b.path), cid)],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
                 for cid, b, log in zip(ids, bundles, logs)]
        codes = [p.wait(timeout=120) for p in procs]
        for log in logs:
            log.seek(0)
        assert codes == [0] * n, [log.read() for log in logs]
        states = [json.loads(_pyoci_in(host, runtime, "state", cid).stdout) for cid in ids]
        assert all(s["status"] == "running" for s in states)
        ips = {s["annotations"]["org.pyoci.network.ip"] for s in states}
        assert len(ips) == n
        assert set(Ipam(runtime.root, "10.213.9.0/24").leases()) == ips
        veths = [l for l in host.links() if l.startswith("pyv")]
        assert len(veths) == n
        first, last = states[0], states[-1]
        assert host.ping(first["annotations"]["org.pyoci.network.ip"])
        assert host.ping(last["annotations"]["org.pyoci.network.ip"])
        dels = [subprocess.Popen(["nsenter", f"--net={host.path}", *runtime.argv("delete", "--force", cid)],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL) for cid in ids]
        assert [p.wait(timeout=120) for p in dels] == [0] * n
    finally:
        for log in logs:
            log.close()
        try:
            for cid in runtime.ids():
                _pyoci_in(host, runtime, "delete", "--force", cid, check=False, timeout=30)
        finally:
            _kill_leftovers(runtime.root)
    links = host.links()
    assert not [l for l in links if l.startswith("pyv")] and "tbr9" not in links
    assert Ipam(runtime.root, "10.213.9.0/24").leases() == {}
    assert runtime.ids() == []
