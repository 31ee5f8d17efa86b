"""config.json + command-line options → a frozen LaunchPlan (pure data).

Everything is decided here, before any fork: which namespaces to make or join, the mount
plan, the process plan (identity, capabilities, limits), the compiled seccomp program,
the cgroup path, the network plan, the hooks. The child only carries the plan out.
`describe()` is what `--debug` and `pyoci explain` print, so the explanation is the plan.
"""
from __future__ import annotations

import os
from pyoci._record import dataclass, field


from pyoci.namespaces import NamespacePlan, build_namespace_plan


@dataclass(frozen=True)
class Options:
    """The create/run/exec flags that shape a launch."""
    container_id: str
    bundle: str
    root_dir: str
    pid_file: str | None = None
    console_socket: str | None = None
    preserve_fds: int = 0
    no_pivot: bool = False
    no_new_keyring: bool = False
    detach: bool = True
    network: str | None = None        # `--network bridge|none`: the org.pyoci.network annotation


@dataclass(frozen=True)
class LaunchPlan:
    id: str
    bundle: str
    root_dir: str
    state_dir: str
    config_version: str
    namespaces: NamespacePlan
    hostname: str | None
    domainname: str | None
    rootfs: object                       # mounts.RootfsPlan
    process: object                      # security.ProcessPlan
    seccomp: object = None             # seccomp.SeccompProgram | None
    cgroup_path: str | None = None    # relative to the cgroup2 mount
    resources: dict | None = None     # linux.resources (parent side only)
    network: object = None             # network.NetworkPlan | None
    hooks: dict = field(default_factory=dict)
    annotations: dict = field(default_factory=dict)
    console_socket: str | None = None
    preserve_fds: int = 0
    new_keyring: bool = True
    terminal: bool = False
    warnings: tuple[str, ...] = ()

    def describe(self) -> dict:
        def d(x):
            return x.describe() if hasattr(x, "describe") else x
        out = {
            "id": self.id, "bundle": self.bundle, "stateDir": self.state_dir,
            "namespaces": self.namespaces.describe(),
            "hostname": self.hostname, "domainname": self.domainname,
            "rootfs": d(self.rootfs), "process": d(self.process),
            "seccomp": self.seccomp.summary() if self.seccomp is not None else None,
            "cgroup": {"path": self.cgroup_path, "resources": self.resources},
            "network": d(self.network) if self.network is not None else
            ("loopback only" if "network" in self.namespaces.new else "host or joined namespace"),
            "hooks": {k: [h.get("path") for h in v] for k, v in self.hooks.items() if v},
            "terminal": self.terminal, "consoleSocket": self.console_socket,
            "preserveFds": self.preserve_fds, "newKeyring": self.new_keyring,
        }
        return out


def build_plan(config: dict, opts: Options, warnings: list[str] | None = None) -> LaunchPlan:
    from pyoci import mounts, security
    from pyoci.cgroups import resolve_path

    linux = config.get("linux") or {}
    process = config.get("process") or {}
    warnings = list(warnings or [])
    terminal = bool(process.get("terminal"))
    ns = build_namespace_plan(linux)

    rootfs = mounts.build_rootfs_plan(config, opts.bundle, no_pivot=opts.no_pivot, console=terminal)
    pp = security.build_process_plan(process, linux)
    security.check_host_support(pp)
    warnings.extend(getattr(pp, "warnings", ()) or ())

    seccomp_prog = None
    if linux.get("seccomp"):
        from pyoci import seccomp
        seccomp_prog = seccomp.compile_filter(linux["seccomp"])
        warnings.extend(seccomp_prog.warnings)

    net = None
    # plan_network returns None without netDevices and without the bridge annotation:
    # then network.py is not imported at all
    if linux.get("netDevices") is not None or (config.get("annotations") or {}).get("org.pyoci.network"):
        from pyoci import network
        net = network.plan_network(config)   # also reports netDevices without a netns (spec#145)

    # A container gets a cgroup when it has its own resources or cgroupsPath, and always
    # by default (runc does), so pause/kill --all/ps work.
    cgroup_path = resolve_path(linux.get("cgroupsPath"), opts.container_id)

    hooks = {k: list(v) for k, v in (config.get("hooks") or {}).items() if v}
    return LaunchPlan(
        id=opts.container_id,
        bundle=opts.bundle,
        root_dir=opts.root_dir,
        state_dir=os.path.join(opts.root_dir, opts.container_id),
        config_version=config.get("ociVersion", ""),
        namespaces=ns,
        hostname=config.get("hostname"),
        domainname=config.get("domainname"),
        rootfs=rootfs,
        process=pp,
        seccomp=seccomp_prog,
        cgroup_path=cgroup_path,
        resources=linux.get("resources"),
        network=net,
        hooks=hooks,
        annotations=dict(config.get("annotations") or {}),
        console_socket=opts.console_socket,
        preserve_fds=opts.preserve_fds,
        new_keyring=not opts.no_new_keyring,
        terminal=terminal,
        warnings=tuple(warnings),
    )
