"""Shared fixtures.

Root tests run the runtime for real. The whole pytest process moves into a private mount
namespace with cgroup2 mounted at /sys/fs/cgroup (so the runtime sees a v2 host and can never
touch the machine's v1 hierarchies), and the session fails if anything leaked: mounts,
network namespaces, links, cgroups, processes or state dirs.
"""
from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from helpers import hostcheck  # noqa: E402
from helpers.v2ns import enter_private_v2_namespace  # noqa: E402

IS_ROOT = os.geteuid() == 0
V2NS = enter_private_v2_namespace() if IS_ROOT else None
if IS_ROOT:
    from pyoci.linux import libc as _libc
    _libc.prctl(_libc.PR_SET_CHILD_SUBREAPER, 1)


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs root and a private cgroup2 mount namespace")
    for item in items:
        if "root" in item.keywords and V2NS is None:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _host_stays_clean():
    before = hostcheck.snapshot()
    yield
    leaked = hostcheck.diff(before, hostcheck.snapshot())
    if leaked:
        pytest.fail("the test session leaked host resources:\n" + "\n".join(leaked), pytrace=False)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory):
    """A read-only-by-convention busybox rootfs shared by the session (tests must not write it)."""
    from pyoci.specgen import make_busybox_rootfs
    return make_busybox_rootfs(str(tmp_path_factory.mktemp("image") / "rootfs"))


@pytest.fixture
def bundle(tmp_path, busybox_rootfs):
    """A fresh bundle dir whose rootfs is a copy of the busybox rootfs; see helpers.bundle."""
    from helpers.bundle import Bundle
    return Bundle.make(tmp_path / "bundle", busybox_rootfs)


@pytest.fixture
def runtime(tmp_path):
    """A pyoci CLI runner with a private --root that is checked empty (and cleaned) at the end."""
    from helpers.runner import Runtime
    rt = Runtime(root=str(tmp_path / "state"))
    yield rt
    rt.cleanup()
