"""A small IPv4 address manager for the own-IP (bridge) network mode.

Leases are plain files under ``<root_dir>/.ipam/<subnet>/`` (the subnet with ``/`` written as
``_``, e.g. ``10.213.0.0_24``). Each lease file is named by the address it holds and contains one
JSON object: ``{"id": <container id>, "pid": <pid of the allocating pyoci>, "start": <its start
time in clock ticks>}``. Every change happens under an exclusive flock on ``<dir>/lock``, so
concurrent creates never get the same address.

A lease is *stale* (and is reclaimed when an address is needed) when the container's state dir
``<root_dir>/<id>`` does not exist AND the pyoci process that allocated it is gone. The second
condition covers the window in which a create has leased an address but has not yet written its
state dir; the first covers a ``kill -9`` of pyoci followed by removal of the state.
The lock file is never removed (removing a flock'ed file would let two processes each lock a
different inode), so ``<root_dir>/.ipam`` stays once used; it is hidden from container listings.

The first host address of the subnet is the gateway (the host-side bridge); the network and
broadcast addresses are never handed out.

Stdlib only; cheap to import.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
from contextlib import contextmanager
from pyoci._record import dataclass

from pyoci.errors import StageError, SyscallError

IPAM_DIR = ".ipam"
LOCK_NAME = "lock"
BRIDGE_MARKER = "bridge"  # file recording a bridge this runtime created for the subnet


def subnet_key(subnet: str) -> str:
    """Directory name for a subnet: '10.213.0.0/24' -> '10.213.0.0_24'."""
    return str(ipaddress.IPv4Network(subnet)).replace("/", "_")


def _proc_start_time(pid: int) -> int | None:
    """Start time of a process (clock ticks since boot), or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return None
    try:
        return int(st[st.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Lease:
    address: str      # "10.213.0.2"
    prefixlen: int    # 24
    gateway: str      # "10.213.0.1"
    container_id: str

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


class Ipam:
    """Leases of one subnet under one runtime root."""

    def __init__(self, root_dir: str, subnet: str):
        try:
            net = ipaddress.IPv4Network(subnet)
        except ValueError as e:
            raise StageError("network", f"ipam: invalid subnet {subnet!r}: {e}") from None
        if net.prefixlen > 30:
            raise StageError("network", f"ipam: subnet {subnet} is too small (prefix must be <= 30)")
        self.root_dir = root_dir
        self.network = net
        self.gateway = net.network_address + 1
        self.dir = os.path.join(root_dir, IPAM_DIR, subnet_key(subnet))

    # --- locking ---------------------------------------------------------------------------
    @contextmanager
    def locked(self):
        """Exclusive lock over this subnet's leases (and its bridge marker)."""
        try:
            os.makedirs(self.dir, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(self.dir, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise SyscallError("open", e.errno, os.path.join(self.dir, LOCK_NAME), stage="network") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self
        finally:
            os.close(fd)  # closing drops the flock

    # --- lease files (call these with the lock held) -----------------------------------------
    def _read(self, name: str) -> dict | None:
        try:
            with open(os.path.join(self.dir, name)) as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def leases(self) -> dict[str, str]:
        """address -> container id of every lease file (lock should be held for a stable view)."""
        out = {}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return out
        for name in names:
            try:
                ipaddress.IPv4Address(name)
            except ValueError:
                continue
            data = self._read(name)
            if data is not None:
                out[name] = str(data.get("id", ""))
        return out

    def _stale(self, data: dict) -> bool:
        cid = data.get("id")
        if not cid or not isinstance(cid, str):
            return True  # unreadable lease: nobody can own it
        if os.path.exists(os.path.join(self.root_dir, cid)):
            return False
        pid, start = data.get("pid"), data.get("start")
        if isinstance(pid, int) and pid > 0 and _proc_start_time(pid) == start:
            return False  # the allocating pyoci is still running (state dir not written yet)
        return True

    def _write_lease(self, address: str, container_id: str, exclusive: bool) -> None:
        path = os.path.join(self.dir, address)
        tmp = os.path.join(self.dir, f".tmp.{address}.{os.getpid()}")
        me = os.getpid()
        body = json.dumps({"id": container_id, "pid": me, "start": _proc_start_time(me)})
        try:
            with open(tmp, "w") as f:
                f.write(body)
            if exclusive:
                os.link(tmp, path)  # fails with EEXIST if taken
                os.unlink(tmp)
            else:
                os.replace(tmp, path)
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise SyscallError("link" if exclusive else "rename", e.errno, path, stage="network") from None

    def _lease(self, address: str, container_id: str) -> Lease:
        return Lease(address, self.network.prefixlen, str(self.gateway), container_id)

    def allocate(self, container_id: str) -> Lease:
        """Lease a free address for `container_id` (lock must NOT be held: this takes it).
        An existing lease of the same container is returned again."""
        with self.locked():
            return self.allocate_locked(container_id)

    def allocate_locked(self, container_id: str) -> Lease:
        current = self.leases()
        for addr, cid in current.items():
            if cid == container_id:
                return self._lease(addr, container_id)
        stale = []
        for host in self.network.hosts():
            if host == self.gateway:
                continue
            addr = str(host)
            if addr not in current:
                self._write_lease(addr, container_id, exclusive=True)
                return self._lease(addr, container_id)
            data = self._read(addr)
            if data is not None and self._stale(data):
                stale.append(addr)
        # the subnet is full of live leases except for stale ones: reclaim the first
        for addr in stale:
            self._write_lease(addr, container_id, exclusive=False)
            return self._lease(addr, container_id)
        raise StageError("network", f"ipam: no free address left in {self.network} "
                                    f"({len(current)} leases under {self.dir})")

    def release_locked(self, container_id: str) -> list[str]:
        """Remove every lease of `container_id`; returns the released addresses."""
        released = []
        for addr, cid in self.leases().items():
            if cid == container_id:
                try:
                    os.unlink(os.path.join(self.dir, addr))
                    released.append(addr)
                except FileNotFoundError:
                    pass
        return released

    def release(self, container_id: str) -> list[str]:
        if not os.path.isdir(self.dir):
            return []
        with self.locked():
            return self.release_locked(container_id)

    def reclaim_stale_locked(self) -> list[str]:
        """Drop every stale lease (crash recovery); returns the freed addresses."""
        freed = []
        for addr in list(self.leases()):
            data = self._read(addr)
            if data is not None and self._stale(data):
                try:
                    os.unlink(os.path.join(self.dir, addr))
                    freed.append(addr)
                except FileNotFoundError:
                    pass
        return freed

    # --- bridge ownership marker (lock held) -------------------------------------------------
    def bridge_marker(self) -> str | None:
        try:
            with open(os.path.join(self.dir, BRIDGE_MARKER)) as f:
                return f.read().strip() or None
        except OSError:
            return None

    def set_bridge_marker(self, bridge: str | None) -> None:
        path = os.path.join(self.dir, BRIDGE_MARKER)
        if bridge is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        with open(path, "w") as f:
            f.write(bridge + "\n")


def subnets_with_leases_of(root_dir: str, container_id: str) -> list[str]:
    """Every subnet (as 'a.b.c.d/n') under root_dir that holds a lease of container_id."""
    base = os.path.join(root_dir, IPAM_DIR)
    try:
        keys = os.listdir(base)
    except FileNotFoundError:
        return []
    out = []
    for key in keys:
        subnet = key.replace("_", "/")
        try:
            ipam = Ipam(root_dir, subnet)
        except StageError:
            continue
        if container_id in ipam.leases().values():
            out.append(subnet)
    return out
