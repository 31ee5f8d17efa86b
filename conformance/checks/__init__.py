"""Every module here registers checks with catalogue.check."""
from . import general, lifecycle, hooks, process, rootfs, namespaces, devices, cgroups, security, features  # noqa: F401
