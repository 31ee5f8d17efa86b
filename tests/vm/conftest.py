"""tests/vm run only inside the VM lane (scripts/vm-lane sets PYOCI_IN_VM=1 in a guest whose
cgroup2 offers every controller); everywhere else they are skipped."""
from __future__ import annotations

import os

import pytest


def in_vm() -> bool:
    if os.environ.get("PYOCI_IN_VM") != "1":
        return False
    try:
        with open("/sys/fs/cgroup/cgroup.controllers") as f:
            return "memory" in f.read().split()
    except OSError:
        return False


def pytest_collection_modifyitems(config, items):
    if in_vm():
        return
    skip = pytest.mark.skip(reason="runs only in the VM lane (scripts/vm-lane)")
    for item in items:
        if "vm" in item.keywords:
            item.add_marker(skip)
