"""The network stage.

Three entry points, on two sides of the fork:

* ``loopback_up()`` -- CHILD, inside its fresh network namespace: bring ``lo`` up with two
  ioctls on an AF_INET socket (no pyroute2: its import costs ~350 ms).
* ``plan_network(config)`` -- PARENT, pure, before fork: ``linux.netDevices`` (runtime-spec
  1.3.0) and the opt-in own-IP mode (annotation ``org.pyoci.network=bridge``) become a frozen
  ``NetworkPlan``, or None when there is nothing to do beyond ``lo``.
* ``setup(plan, pid, container_id, root_dir, rootfs=None, host_netns=None)`` -- PARENT, once
  the child has its network namespace (``/proc/<pid>/ns/net``); returns a JSON-serialisable
  info dict that records what was created. ``teardown(info, container_id, root_dir)`` undoes
  it, idempotently, and also copes with an empty info (a create killed before it saved state).

Own-IP (bridge) mode: a host bridge (default ``pyoci0``; created if missing, address = first
host of the subnet), a veth pair whose host end is a bridge port and whose peer is ``eth0`` in
the container, an address leased from ``pyoci.ipam`` under ``<root_dir>/.ipam``, a default route
through the bridge, and an ``/etc/hosts`` line for the container in its rootfs. Nothing leaves
the machine: no NAT, and IPv4 forwarding is switched off on a bridge this runtime creates, so
packets from containers are bridged to each other or delivered to the host, never routed on.

pyroute2 is imported lazily, inside setup/teardown only (so are hashlib and ipaddress: the
child imports this module for loopback_up on every container with a new netns).
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import struct
from contextlib import contextmanager
from pyoci._record import dataclass

from pyoci.errors import ConfigError, PyociError, StageError, SyscallError

STAGE = "network"

ANN_MODE = "org.pyoci.network"            # "bridge" enables own-IP mode; "none"/absent: off
ANN_BRIDGE = "org.pyoci.network.bridge"   # host bridge name
ANN_SUBNET = "org.pyoci.network.subnet"   # IPv4 subnet of the bridge
ANN_IP = "org.pyoci.network.ip"           # set by the integrator from info["ip"]
DEFAULT_BRIDGE = "pyoci0"
DEFAULT_SUBNET = "10.213.0.0/24"
CONTAINER_IFNAME = "eth0"
HOSTS_MARK = "# pyoci-network"

IFNAMSIZ = 16
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFA_F_PERMANENT = 0x80
RT_SCOPE_UNIVERSE = 0


# ---------------------------------------------------------------------------------------------
# child side
# ---------------------------------------------------------------------------------------------
# `lo` up lives in a module of its own (the child must not pay this module's imports)
from pyoci._lo import loopback_up  # noqa: E402,F401  (network.loopback_up stays the public name)


# ---------------------------------------------------------------------------------------------
# plan (parent, pure)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NetDevice:
    host_name: str   # interface name in the runtime's (host) netns
    name: str        # name in the container netns; may hold one "%d" (the kernel picks)


@dataclass(frozen=True)
class BridgeMode:
    bridge: str      # host bridge name
    subnet: str      # normalised IPv4 network, e.g. "10.213.0.0/24"


@dataclass(frozen=True)
class NetworkPlan:
    devices: tuple[NetDevice, ...] = ()
    bridge: BridgeMode | None = None
    hostname: str | None = None       # config "hostname", for the /etc/hosts line
    netns_path: str | None = None     # linux.namespaces[network].path when joining one


def ifname_problem(name: object, template_ok: bool = False) -> str | None:
    """Why `name` is not a valid Linux interface name (the kernel's dev_valid_name rules), or None."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name.encode()) >= IFNAMSIZ:
        return f"must be at most {IFNAMSIZ - 1} bytes"
    if name in (".", ".."):
        return "must not be '.' or '..'"
    for ch in name:
        if ch == "/" or ch == ":" or ch.isspace():
            return f"must not contain {ch!r}"
    if "%" in name:
        p = name.index("%")
        if not template_ok:
            return "must not contain '%'"
        if name[p + 1:p + 2] != "d" or "%" in name[p + 2:]:
            return "may hold only one '%d' template"
    return None


def plan_network(config: dict) -> NetworkPlan | None:
    """Network work beyond `lo` that config asks for, or None. Raises ConfigError naming the
    JSON path and the rule for every problem."""
    import ipaddress
    linux = config.get("linux") or {}
    annotations = config.get("annotations") or {}
    problems: list[str] = []

    netns = None
    for ns in linux.get("namespaces") or []:
        if isinstance(ns, dict) and ns.get("type") == "network":
            netns = ns
    netns_path = (netns or {}).get("path") or None

    devices: list[NetDevice] = []
    raw = linux.get("netDevices")
    if raw is not None:
        if not isinstance(raw, dict):
            problems.append("linux.netDevices: must be an object mapping host interface names")
            raw = {}
        elif raw and netns is None:
            problems.append("linux.netDevices: needs a network namespace in linux.namespaces "
                            "(interfaces cannot be moved into the runtime's own namespace)")
        targets: dict[str, str] = {}
        for host_name, dev in raw.items():
            why = ifname_problem(host_name)
            if why:
                problems.append(f"linux.netDevices.{host_name}: host interface name {why}")
                continue
            if dev is None:
                dev = {}
            if not isinstance(dev, dict):
                problems.append(f"linux.netDevices.{host_name}: must be an object")
                continue
            name = dev.get("name") or host_name
            why = ifname_problem(name, template_ok=True)
            if why:
                problems.append(f"linux.netDevices.{host_name}.name: {why}")
                continue
            if "%" not in name:
                if name in targets:
                    problems.append(f"linux.netDevices.{host_name}.name: {name!r} is also the name "
                                    f"of linux.netDevices.{targets[name]}")
                    continue
                if name == "lo":
                    problems.append(f"linux.netDevices.{host_name}.name: 'lo' already exists in "
                                    "every network namespace")
                    continue
                targets[name] = host_name
            devices.append(NetDevice(host_name, name))

    bridge = None
    mode = annotations.get(ANN_MODE)
    if mode not in (None, "", "none", "bridge"):
        problems.append(f"annotations.{ANN_MODE}: must be \"bridge\" or \"none\", not {mode!r}")
    elif mode == "bridge":
        if netns is None:
            problems.append(f"annotations.{ANN_MODE}: bridge mode needs a network namespace in "
                            "linux.namespaces")
        elif netns_path:
            problems.append(f"annotations.{ANN_MODE}: bridge mode needs a new network namespace, "
                            f"not the existing one at {netns_path}")
        br = annotations.get(ANN_BRIDGE) or DEFAULT_BRIDGE
        why = ifname_problem(br)
        if why:
            problems.append(f"annotations.{ANN_BRIDGE}: bridge name {why}")
        sub = annotations.get(ANN_SUBNET) or DEFAULT_SUBNET
        subnet = None
        try:
            subnet = ipaddress.IPv4Network(sub, strict=False)
        except (ValueError, TypeError) as e:
            problems.append(f"annotations.{ANN_SUBNET}: must be an IPv4 subnet like "
                            f"{DEFAULT_SUBNET} ({e})")
        if subnet is not None:
            if subnet.prefixlen > 30 or subnet.prefixlen < 8:
                problems.append(f"annotations.{ANN_SUBNET}: prefix length must be 8..30, "
                                f"not {subnet.prefixlen}")
            elif not subnet.is_private:
                problems.append(f"annotations.{ANN_SUBNET}: {subnet} is not a private range "
                                "(use e.g. 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)")
        if any(d.name == CONTAINER_IFNAME for d in devices):
            problems.append(f"annotations.{ANN_MODE}: bridge mode names the container end "
                            f"{CONTAINER_IFNAME}, which linux.netDevices also uses")
        if subnet is not None and not why:
            bridge = BridgeMode(br, str(subnet))

    if problems:
        raise ConfigError(problems)
    if not devices and bridge is None:
        return None
    hostname = config.get("hostname") or None
    return NetworkPlan(tuple(devices), bridge, hostname if isinstance(hostname, str) else None,
                       netns_path)


# ---------------------------------------------------------------------------------------------
# parent side: helpers
# ---------------------------------------------------------------------------------------------
def host_veth_name(root_dir: str, container_id: str) -> str:
    """Deterministic host-side veth name (so teardown finds it even without saved info)."""
    import hashlib
    digest = hashlib.sha256(f"{os.path.abspath(root_dir)}\0{container_id}".encode()).hexdigest()
    return "pyv" + digest[:12]


@contextmanager
def _in_netns(path: str):
    """Run the block with this thread in the network namespace at `path`."""
    from pyoci.linux import libc
    me = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SyscallError("open", e.errno or 0, path, stage=STAGE) from None
        try:
            try:
                libc.setns(fd, libc.CLONE_NEWNET, path)
            except SyscallError as e:
                raise e.with_stage(STAGE)
        finally:
            os.close(fd)
        try:
            yield
        finally:
            libc.setns(me, libc.CLONE_NEWNET, "/proc/thread-self/ns/net")
    finally:
        os.close(me)


def _ipr(netns_path: str | None):
    """An IPRoute bound to the netns at `netns_path` (None: the current one)."""
    from pyroute2 import IPRoute
    if netns_path is None:
        return IPRoute()
    with _in_netns(netns_path):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                             socket.NETLINK_ROUTE)
    return IPRoute(fileno=sock.detach())


def _nl(call: str, what: str | None, fn, *args, **kw):
    """Run a pyroute2 request; turn NetlinkError/OSError into a SyscallError for people."""
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        return fn(*args, **kw)
    except NetlinkError as e:
        raise SyscallError(f"netlink {call}", e.code, what, stage=STAGE) from None
    except OSError as e:
        raise SyscallError(f"netlink {call}", e.errno or 0, what, stage=STAGE) from None


def _lookup(ipr, name: str) -> int | None:
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        idx = ipr.link_lookup(ifname=name)
    except NetlinkError as e:
        if e.code in (errno.ENODEV, errno.ENOENT):
            return None
        raise SyscallError("netlink link get", e.code, name, stage=STAGE) from None
    return idx[0] if idx else None


def _names(ipr) -> dict[str, int]:
    return {l.get("ifname"): l["index"] for l in _nl("link dump", None, ipr.link, "dump")}


def _ports(ipr, bridge_index: int) -> list[str]:
    """Names of the links enslaved to a bridge."""
    return [l.get("ifname") for l in _nl("link dump", None, ipr.link, "dump")
            if l.get("IFLA_MASTER") == bridge_index]


def _same_ns(a: str, b: str) -> bool:
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _write_sysctl(netns_path: str | None, key: str, value: str) -> None:
    """Write /proc/sys/<key> of the netns at `netns_path` (None: the current one).
    /proc/sys/net follows the network namespace of the opening thread."""
    path = "/proc/sys/" + key
    if netns_path is None:
        _write_file(path, value)
    else:
        with _in_netns(netns_path):
            _write_file(path, value)


def _write_file(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SyscallError("open", e.errno or 0, path, stage=STAGE) from None
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise SyscallError("write", e.errno or 0, path, stage=STAGE) from None
    finally:
        os.close(fd)


def _permanent_global_addrs(ipr, index: int) -> list[dict]:
    """The IFA_F_PERMANENT, global-scope addresses of a link (spec#146)."""
    out = []
    for a in _nl("addr dump", None, ipr.addr, "dump", index=index):
        flags = a.get("IFA_FLAGS")
        if flags is None:
            flags = a["flags"]
        if a["scope"] != RT_SCOPE_UNIVERSE or not flags & IFA_F_PERMANENT:
            continue
        item = {"family": a["family"], "address": a.get("IFA_ADDRESS"), "prefixlen": a["prefixlen"]}
        if a.get("IFA_LOCAL") and a["family"] == socket.AF_INET:
            item["address"] = a.get("IFA_LOCAL")
            if a.get("IFA_ADDRESS") and a.get("IFA_ADDRESS") != a.get("IFA_LOCAL"):
                item["peer"] = a.get("IFA_ADDRESS")
        if a.get("IFA_BROADCAST"):
            item["broadcast"] = a.get("IFA_BROADCAST")
        out.append(item)
    return out


def _write_hosts(rootfs: str, ip: str, names: list[str]) -> str:
    """Put `ip names...` into <rootfs>/etc/hosts, resolved inside the rootfs (never through a
    symlink out of it). Returns "written" or "skipped: <why>"."""
    from pyoci.linux import libc
    try:
        dfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        return f"skipped: open {rootfs}: {os.strerror(e.errno or 0)}"
    try:
        try:
            fd = libc.openat2(dfd, "etc/hosts",
                              os.O_RDWR | os.O_CREAT | os.O_NOCTTY | os.O_NONBLOCK, 0o644,
                              libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_MAGICLINKS | libc.RESOLVE_NO_XDEV)
        except SyscallError as e:
            return f"skipped: {e}"
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return "skipped: etc/hosts is not a regular file"
            old = b""
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                old += chunk
            lines = [l for l in old.decode(errors="replace").splitlines() if HOSTS_MARK not in l]
            if not any(l.split()[:2] == ["127.0.0.1", "localhost"] for l in lines if l.strip()):
                lines.insert(0, "127.0.0.1\tlocalhost")
            lines.append(f"{ip}\t{' '.join(names)}\t{HOSTS_MARK}")
            data = ("\n".join(lines) + "\n").encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            return "written"
        except OSError as e:
            return f"skipped: etc/hosts: {os.strerror(e.errno or 0)}"
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


# ---------------------------------------------------------------------------------------------
# parent side: setup
# ---------------------------------------------------------------------------------------------
def setup(plan: NetworkPlan, pid: int, container_id: str, root_dir: str,
          rootfs: str | None = None, host_netns: str | None = None) -> dict:
    """Apply `plan` to the network namespace of `pid`. `host_netns` is the namespace that plays
    the host (None: the caller's own; tests pass a throwaway one). Returns the info dict:

        {"netns": "/proc/<pid>/ns/net", "host_netns": host_netns,
         "devices": [{"host_name", "name", "addresses"}],          # moved, never moved back
         "bridge": name, "subnet": "a.b.c.d/n", "bridge_created": bool,
         "veth": host-side veth, "ifname": "eth0", "ip": "a.b.c.d", "prefixlen": n,
         "gateway": "a.b.c.d", "hosts": "written" | "skipped: why"}

    (the bridge keys only in bridge mode). On failure, what was done for the bridge is undone
    (teardown) and a SyscallError/StageError with stage "network" is raised; moved devices stay
    in the container's namespace, where the kernel returns them to the host when it dies."""
    ns_path = f"/proc/{pid}/ns/net"
    info: dict = {"netns": ns_path, "host_netns": host_netns, "devices": []}
    host_ref = host_netns or "/proc/thread-self/ns/net"
    try:
        if _same_ns(ns_path, host_ref):
            raise StageError(STAGE, f"process {pid} has no network namespace of its own "
                                    "(refusing to configure the host's)")
    except OSError as e:
        raise SyscallError("stat", e.errno or 0, ns_path if not os.path.exists(ns_path) else host_ref,
                           stage=STAGE) from None
    # pin the container netns for the whole setup, even if the process dies meanwhile
    try:
        ns_fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SyscallError("open", e.errno or 0, ns_path, stage=STAGE) from None
    ns_pinned = f"/proc/self/fd/{ns_fd}"
    try:
        host = _ipr(host_netns)
        try:
            cont = _ipr(ns_pinned)
            try:
                for dev in plan.devices:
                    info["devices"].append(_move_device(host, cont, ns_fd, dev))
                if plan.bridge is not None:
                    try:
                        _setup_bridge(plan, host, cont, ns_fd, container_id, root_dir, rootfs,
                                      host_netns, info)
                    except BaseException:
                        try:
                            teardown(info, container_id, root_dir, host_netns=host_netns)
                        except PyociError:
                            pass
                        raise
            finally:
                cont.close()
        finally:
            host.close()
    finally:
        os.close(ns_fd)
    return info


def _move_device(host, cont, ns_fd: int, dev: NetDevice) -> dict:
    idx = _lookup(host, dev.host_name)
    if idx is None:
        raise StageError(STAGE, f"linux.netDevices.{dev.host_name}: no interface named "
                                f"{dev.host_name!r} in the runtime's network namespace")
    addrs = _permanent_global_addrs(host, idx)
    link = _nl("link get", dev.host_name, host.link, "get", index=idx)[0]
    mac = link.get("IFLA_ADDRESS")
    before = _names(cont)
    templated = "%" in dev.name
    if not templated and dev.name in before:
        raise StageError(STAGE, f"linux.netDevices.{dev.host_name}.name: an interface named "
                                f"{dev.name!r} already exists in the container's network namespace")
    # move and rename in one request: the kernel resolves a %d template in the target netns
    try:
        _nl("link set netns", dev.host_name, host.link, "set", index=idx, net_ns_fd=ns_fd,
            ifname=dev.name)
    except SyscallError as e:
        if e.errno == errno.EEXIST:
            raise StageError(STAGE, f"linux.netDevices.{dev.host_name}.name: an interface named "
                                    f"{dev.name!r} already exists in the container's network "
                                    "namespace") from None
        raise
    after = _names(cont)
    if templated:
        new = [n for n in after if n not in before]
        if len(new) > 1:  # pick ours by ifindex, then by MAC
            byidx = [n for n in new if after[n] == idx]
            new = byidx or [n for n in new
                            if _nl("link get", n, cont.link, "get", index=after[n])[0]
                            .get("IFLA_ADDRESS") == mac] or new
        if not new:
            raise StageError(STAGE, f"linux.netDevices.{dev.host_name}: moved, but not found in the "
                                    "container's network namespace")
        name = new[0]
    else:
        name = dev.name
    cidx = after.get(name)
    if cidx is None:
        raise StageError(STAGE, f"linux.netDevices.{dev.host_name}: moved, but {name!r} is not in "
                                "the container's network namespace")
    present = {(a.get("IFA_LOCAL") or a.get("IFA_ADDRESS"), a["prefixlen"])
               for a in _nl("addr dump", name, cont.addr, "dump", index=cidx)}
    for a in addrs:
        if (a["address"], a["prefixlen"]) in present:
            continue
        kw = {"index": cidx, "address": a["address"], "prefixlen": a["prefixlen"],
              "family": a["family"]}
        if "peer" in a:
            kw["local"], kw["address"] = a["address"], a["peer"]
        if "broadcast" in a:
            kw["broadcast"] = a["broadcast"]
        _nl("addr add", f"{name} {a['address']}/{a['prefixlen']}", cont.addr, "add", **kw)
    _nl("link set up", name, cont.link, "set", index=cidx, state="up")
    return {"host_name": dev.host_name, "name": name,
            "addresses": [f"{a['address']}/{a['prefixlen']}" for a in addrs]}


def _setup_bridge(plan: NetworkPlan, host, cont, ns_fd: int, container_id: str, root_dir: str,
                  rootfs: str | None, host_netns: str | None, info: dict) -> None:
    from pyoci.ipam import Ipam
    br = plan.bridge
    assert br is not None
    ipam = Ipam(root_dir, br.subnet)
    gw_cidr = f"{ipam.gateway}/{ipam.network.prefixlen}"
    info.update({"bridge": br.bridge, "subnet": br.subnet, "bridge_created": False})

    # lease + bridge under the IPAM lock, so a concurrent teardown never deletes the bridge
    # between our lease and our veth
    with ipam.locked():
        lease = ipam.allocate_locked(container_id)
        info.update({"ip": lease.address, "prefixlen": lease.prefixlen, "gateway": lease.gateway})
        bidx = _lookup(host, br.bridge)
        if bidx is None:
            try:
                _nl("link add", br.bridge, host.link, "add", ifname=br.bridge, kind="bridge")
                info["bridge_created"] = True
                ipam.set_bridge_marker(br.bridge)
            except SyscallError as e:
                if e.errno != errno.EEXIST:  # EEXIST: made meanwhile by a runtime with another root
                    raise
            bidx = _lookup(host, br.bridge)
            if bidx is None:
                raise StageError(STAGE, f"bridge {br.bridge} vanished right after it was created")
            if info["bridge_created"]:
                # nothing leaves the machine: never route packets that arrive from containers
                _write_sysctl(host_netns, f"net/ipv4/conf/{br.bridge}/forwarding", "0")
        if not info["bridge_created"]:
            kind = _nl("link get", br.bridge, host.link, "get", index=bidx)[0] \
                .get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
            if kind != "bridge":
                raise StageError(STAGE, f"{br.bridge!r} exists in the host network namespace but is "
                                        f"a {kind or 'non-bridge'} device, not a bridge")
        have = {(a.get("IFA_LOCAL") or a.get("IFA_ADDRESS"), a["prefixlen"])
                for a in _nl("addr dump", br.bridge, host.addr, "dump", index=bidx)}
        if (lease.gateway, lease.prefixlen) not in have:
            try:
                _nl("addr add", f"{br.bridge} {gw_cidr}", host.addr, "add", index=bidx,
                    address=lease.gateway, prefixlen=lease.prefixlen,
                    broadcast=str(ipam.network.broadcast_address))
            except SyscallError as e:
                if e.errno != errno.EEXIST:
                    raise
        _nl("link set up", br.bridge, host.link, "set", index=bidx, state="up")

    veth = host_veth_name(root_dir, container_id)
    info.update({"veth": veth, "ifname": CONTAINER_IFNAME})
    stale = _lookup(host, veth)
    if stale is not None:  # left by a crashed create of the same id
        _nl("link del", veth, host.link, "del", index=stale)
    if _lookup(cont, CONTAINER_IFNAME) is not None:
        raise StageError(STAGE, f"an interface named {CONTAINER_IFNAME!r} already exists in the "
                                "container's network namespace")
    _nl("link add veth", veth, host.link, "add", ifname=veth, kind="veth",
        peer={"ifname": CONTAINER_IFNAME, "net_ns_fd": ns_fd})
    vidx = _lookup(host, veth)
    if vidx is None:
        raise StageError(STAGE, f"veth {veth} vanished right after it was created")
    _nl("link set master", veth, host.link, "set", index=vidx, master=bidx)
    _nl("link set up", veth, host.link, "set", index=vidx, state="up")

    cidx = _lookup(cont, CONTAINER_IFNAME)
    if cidx is None:
        raise StageError(STAGE, f"{CONTAINER_IFNAME} is missing from the container's network "
                                "namespace after the veth was created")
    _nl("addr add", f"{CONTAINER_IFNAME} {lease.cidr}", cont.addr, "add", index=cidx,
        address=lease.address, prefixlen=lease.prefixlen,
        broadcast=str(ipam.network.broadcast_address))
    _nl("link set up", CONTAINER_IFNAME, cont.link, "set", index=cidx, state="up")
    lo = _lookup(cont, "lo")
    if lo is not None:
        _nl("link set up", "lo", cont.link, "set", index=lo, state="up")
    _nl("route add default", f"via {lease.gateway}", cont.route, "add", dst="0.0.0.0/0",
        gateway=lease.gateway, oif=cidx)

    info["hosts"] = "skipped: no rootfs given"
    if rootfs:
        names = []
        for n in (plan.hostname, container_id):
            if n and n not in names and not any(c.isspace() or c == "#" for c in n):
                names.append(n)
        info["hosts"] = _write_hosts(rootfs, lease.address, names) if names else "skipped: no name"


# ---------------------------------------------------------------------------------------------
# parent side: teardown
# ---------------------------------------------------------------------------------------------
def teardown(info: dict | None, container_id: str, root_dir: str,
             host_netns: str | None = None) -> None:
    """Undo setup: delete the host-side veth, release the container's leases, and delete the
    bridge when this runtime created it and no lease remains. Idempotent; works from a partial
    or empty info (then the veth name is derived from root_dir and container_id and every
    subnet under <root_dir>/.ipam is searched). Moved netDevices are left alone (spec#148)."""
    from pyoci.ipam import Ipam, subnets_with_leases_of
    info = info or {}
    if "host_netns" in info and host_netns is None:
        host_netns = info.get("host_netns")
    if host_netns is not None and not os.path.exists(host_netns):
        host_netns = ""  # the host netns is gone, and its links with it
    subnets = set(subnets_with_leases_of(root_dir, container_id))
    if info.get("subnet"):
        subnets.add(info["subnet"])
    bridge_mode = bool(subnets) or "veth" in info or not info
    if not bridge_mode:
        return

    host = None
    if host_netns != "":
        host = _ipr(host_netns)
    try:
        if host is not None:
            veth = info.get("veth") or host_veth_name(root_dir, container_id)
            idx = _lookup(host, veth)
            if idx is not None:
                try:
                    _nl("link del", veth, host.link, "del", index=idx)
                except SyscallError as e:
                    if e.errno not in (errno.ENODEV, errno.ENOENT):
                        raise
        for subnet in sorted(subnets):
            ipam = Ipam(root_dir, subnet)
            with ipam.locked():
                ipam.release_locked(container_id)
                ipam.reclaim_stale_locked()
                marker = ipam.bridge_marker()
                if marker and not ipam.leases():
                    if host is not None:
                        bidx = _lookup(host, marker)
                        if bidx is not None and _ports(host, bidx):
                            continue  # still has ports (another runtime root uses it): keep it
                        if bidx is not None:
                            try:
                                _nl("link del", marker, host.link, "del", index=bidx)
                            except SyscallError as e:
                                if e.errno not in (errno.ENODEV, errno.ENOENT):
                                    raise
                    ipam.set_bridge_marker(None)
    finally:
        if host is not None:
            host.close()
