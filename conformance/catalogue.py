"""The catalogue: one entry per requirement of runtime-spec v1.3.0 (spec#N = item N of the
project's numbered checklist), with its level and either a black-box check or the reason it
cannot be checked on a Linux host.

Checks register themselves with ``@check(N, ...)``; a check raises harness.Fail / harness.Skip.
``fails_on`` records where the check was seen to fail (a runtime, or a deliberately broken
config/runtime variant), which shows the check can tell a broken runtime from a good one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# area -> (first item, last item)
AREAS = [
    ("General, bundle, errors", 1, 12),
    ("State", 13, 20),
    ("Lifecycle", 21, 31),
    ("Operations", 32, 51),
    ("Hooks", 52, 61),
    ("Process", 62, 74),
    ("Rlimits", 75, 79),
    ("Capabilities", 80, 82),
    ("Root filesystem", 83, 86),
    ("Mounts", 87, 96),
    ("Mount propagation", 97, 98),
    ("Namespaces", 99, 106),
    ("User namespaces", 107, 108),
    ("Time namespace", 109, 109),
    ("Devices", 110, 116),
    ("Cgroups", 117, 132),
    ("Sysctl", 133, 133),
    ("Seccomp", 134, 139),
    ("Masked/readonly paths", 140, 142),
    ("Personality", 143, 143),
    ("netDevices", 144, 148),
    ("intelRdt", 149, 157),
    ("memoryPolicy", 158, 158),
    ("Features document", 159, 165),
]

# N | spec file §section | level | the requirement, in our words
_TABLE = """
1|bundle.md|MUST|The runtime reads the configuration from a file named exactly config.json at the top of the bundle.
2|glossary.md|MUST, MUST NOT|The configuration is UTF-8 JSON and an object may not repeat a member name.
3|runtime.md §Errors|MUST|A failed operation leaves the host as it found it (logging aside).
4|runtime.md §Warnings|MUST|A warning never changes what the operation does; it carries on.
5|runtime.md §Operations|MUST|The runtime offers state, create, start, kill and delete.
6|runtime.md §Operations|MUST|Whoever created a container can run every operation on it.
7|config.md §Extensibility|MUST|Properties the runtime does not know are ignored, not rejected.
8|config.md §Valid values|MUST|Invalid or unsupported values are an error.
9|config.md §Specification version|MUST|ociVersion is a SemVer 2.0.0 string; versions of one major are compatible.
10|config.md §Annotations|MUST, SHOULD|Annotations map non-empty string keys to string values; unknown keys are ignored.
11|config.md §Annotations|MUST NOT|Config authors may only use the listed org.opencontainers.image.* keys in that namespace.
12|config.md §Annotations|SHOULD|Stopping the container uses the signal named by org.opencontainers.image.stopSignal.
13|runtime.md §State|MUST|The state carries ociVersion.
14|runtime.md §State|MUST|The state carries the container id, unique on the host.
15|runtime.md §State|MUST|The state carries status, one of creating, created, running, stopped.
16|runtime.md §State|MUST|created/running/stopped mean what they say about the user program.
17|runtime.md §State|MUST|The state carries the pid while created or running.
18|runtime.md §State|MUST|The state carries the absolute bundle path.
19|runtime.md §State|(defined)|Without config annotations the state has no annotations or an empty map.
20|runtime.md §State|MUST|The state document validates against the state schema.
21|runtime.md §Lifecycle step 2|MUST|create builds the environment from config.json, or fails.
22|runtime.md §Lifecycle step 2|MUST, MUST NOT|All resources exist after create, and the user program has not run yet.
23|runtime.md §Lifecycle step 3|MUST NOT|Changing config.json after create does not change the container.
24|runtime.md §Lifecycle step 4|MUST|prestart hooks run; a failure fails the operation and tears the container down.
25|runtime.md §Lifecycle step 5|MUST|createRuntime hooks run; a failure fails the operation and tears the container down.
26|runtime.md §Lifecycle step 6|MUST|createContainer hooks run; a failure fails the operation and tears the container down.
27|runtime.md §Lifecycle step 8|MUST|startContainer hooks run; a failure fails start and tears the container down.
28|runtime.md §Lifecycle step 9|MUST|start executes the user program.
29|runtime.md §Lifecycle step 10|MUST|poststart hooks run; since 1.3.0 a failure fails start and stops the container.
30|runtime.md §Lifecycle step 12|MUST|Deleting undoes what create did.
31|runtime.md §Lifecycle step 13|MUST|poststop hooks run after destruction; a failing one only warns.
32|runtime.md §Query State|MUST|state without an id is an error.
33|runtime.md §Query State|MUST|state of an unknown container is an error.
34|runtime.md §Query State|MUST|state prints the State document.
35|runtime.md §Create|MUST|create without a bundle or an id is an error.
36|runtime.md §Create|MUST, MUST NOT|create with a duplicate or invalid id fails and makes nothing.
37|runtime.md §Create|MUST|create makes a new container.
38|runtime.md §Create|MUST|create applies every property except process.
39|runtime.md §Create|MUST NOT|process.args is not applied before start.
40|runtime.md §Create|MUST|create fails, making nothing, when a property cannot be applied.
41|runtime.md §Start|MUST|start without an id is an error.
42|runtime.md §Start|MUST|start of a container that is not created fails and changes nothing.
43|runtime.md §Start|MUST|start runs the user program.
44|runtime.md §Start|MUST|start fails when process is not set.
45|runtime.md §Kill|MUST|kill without an id is an error.
46|runtime.md §Kill|MUST|kill of a container neither created nor running fails and changes nothing.
47|runtime.md §Kill|MUST|kill delivers the named signal to the container process.
48|runtime.md §Delete|MUST|delete without an id is an error.
49|runtime.md §Delete|MUST|delete of a container that is not stopped fails and changes nothing.
50|runtime.md §Delete|MUST|delete removes everything create made.
51|runtime.md §Delete|MUST NOT|delete leaves alone what the container used but did not make; the id can be reused.
52|config.md §POSIX-platform Hooks|MUST|A hook path is absolute; args, env and timeout are optional.
53|config.md §POSIX-platform Hooks|MUST|A hook timeout is positive and aborts the hook after that many seconds.
54|config.md §POSIX-platform Hooks|MUST|Hooks of one kind run in the listed order.
55|config.md §POSIX-platform Hooks|MUST|Each hook reads the container state on stdin.
56|config.md §Prestart|MUST|prestart runs during create, before createRuntime, in the runtime namespace.
57|config.md §CreateRuntime|MUST|createRuntime runs during create in the runtime namespace.
58|config.md §CreateContainer|MUST|createContainer runs during create after createRuntime, in the container namespace.
59|config.md §StartContainer|MUST|startContainer runs during start, before the user program, inside the container.
60|config.md §Poststart|MUST|poststart runs after the user program starts and before start returns.
61|config.md §Poststop|MUST|poststop runs after the container is deleted and before delete returns.
62|config.md §Process|MUST|process must be there when start is called.
63|config.md §Process|MUST|consoleSize is ignored without a terminal.
64|config.md §Process|(defined)|terminal: true gives the process a pty on its stdio, and /dev/console.
65|config.md §Process|MUST|cwd is absolute and becomes the working directory.
66|config.md §Process|MUST|args[0] is looked up like execvp; env is the environment.
67|config.md §User|MUST|uid, gid and additionalGids are applied in the container namespace.
68|config.md §User|SHOULD|Without umask the caller's umask is kept.
69|config.md §Linux Process|MUST, MUST NOT|oomScoreAdj is written when set and left alone otherwise.
70|config.md §Linux Process|(defined)|noNewPrivileges sets no_new_privs.
71|config.md §Linux Process|(defined)|apparmorProfile and selinuxLabel are applied to the process.
72|config.md §Scheduler|MUST|scheduler.policy is applied; unset numeric fields mean 0.
73|config.md §IO Priority|MUST|ioPriority class and priority are applied.
74|config.md §Exec CPU affinity|(defined), SHOULD NOT|execCPUAffinity is for exec'd processes only, never for init.
75|config.md §POSIX process|MUST|An rlimit type the kernel does not know is an error.
76|config.md §POSIX process|MUST|getrlimit of each configured type works inside the container.
77|config.md §POSIX process|MUST|The soft limit is applied.
78|config.md §POSIX process|MUST|The hard limit is applied.
79|config.md §POSIX process|MUST|A duplicated rlimit type is an error.
80|config.md §Linux Process|MUST|An unknown or ungrantable capability is logged as a warning.
81|config.md §Linux Process|SHOULD NOT|An ungrantable capability does not fail the container.
82|config.md §Linux Process|(defined)|The five capability sets are exactly the configured ones.
83|config.md §Root|MUST|root and root.path are required on Linux.
84|config.md §Root|(defined), SHOULD|root.path may be absolute or bundle-relative.
85|config.md §Root|MUST|root.path must name an existing directory.
86|config.md §Root|MUST|root.readonly makes the root filesystem read-only (default writable).
87|config.md §Mounts|MUST|Mounts are made in the listed order.
88|config.md §Mounts|SHOULD, MUST|A relative destination is taken relative to /.
89|config.md §Mounts|(defined)|Bind sources may be bundle-relative; bind/rbind in options make a bind mount.
90|config.md §Linux mount options|MUST|The required mount options are implemented.
91|config.md §Linux mount options|SHOULD|The recommended (recursive, symfollow) mount options are implemented.
92|config.md §Linux mount options|SHOULD|Unknown options are passed to mount(2) as filesystem data.
93|config.md §Linux mount options|MUST, SHOULD|idmap/ridmap give the mount an id-mapping.
94|config.md §Linux mount options|MUST|idmap without mappings and without a user namespace is an error.
95|config.md §Mounts|MUST|Mount uidMappings and gidMappings come together.
96|config-linux.md §Default Filesystems|SHOULD|/proc, /sys, /dev/pts and /dev/shm are available.
97|config-linux.md §Rootfs Mount Propagation|(defined)|rootfsPropagation sets the root's shared-subtree mode.
98|config.md §Linux mount options|MUST|Propagation options on mounts are supported.
99|config-linux.md §Namespaces|SHOULD|All eight namespace types are supported.
100|config-linux.md §Namespaces|MUST|A namespace path is absolute.
101|config-linux.md §Namespaces|MUST|With a path the container joins that namespace.
102|config-linux.md §Namespaces|MUST|A path of another namespace type is an error.
103|config-linux.md §Namespaces|MUST|Without a path a new namespace is made.
104|config-linux.md §Namespaces|MUST|Types not listed are shared with the runtime.
105|config-linux.md §Namespaces|MUST|A repeated namespace type is an error.
106|config.md §Hostname/Domainname|(defined)|hostname and domainname are set in the container's UTS namespace.
107|config-linux.md §User namespace mappings|MUST|uidMappings/gidMappings become the user namespace maps.
108|config-linux.md §User namespace mappings|SHOULD NOT|The runtime does not chown the rootfs to suit the mapping.
109|config-linux.md §Offset for Time Namespace|(defined)|timeOffsets shift the container's clocks in a time namespace.
110|config-linux.md §Devices|MUST|Each configured device exists in the container.
111|config-linux.md §Devices|MUST|Device type, numbers, mode and owner are as configured.
112|config-linux.md §Devices|MUST|A conflicting file at a device path is an error.
113|config-linux.md §Devices|SHOULD NOT|Two devices with the same type/major/minor are not configured.
114|config-linux.md §Default Devices|MUST|The standard device nodes, /dev/console and /dev/ptmx are provided.
115|runtime-linux.md §Dev symbolic links|MUST|/dev/fd, /dev/stdin, /dev/stdout and /dev/stderr link into /proc/self/fd.
116|runtime-linux.md §File descriptors|(defined)|Only stdin, stdout and stderr are open in the container by default.
117|config-linux.md §Control groups|MUST|If the runtime vets the cgroup and the cgroup is unfit, create fails.
118|config-linux.md §Cgroups path|MUST|An absolute cgroupsPath is relative to the cgroup mount.
119|config-linux.md §Cgroups path|MUST|One cgroupsPath always means one cgroup; missing cgroups are created.
120|config-linux.md §Cgroup ownership|SHOULD NOT|No chown of the cgroup without a new cgroup namespace.
121|config-linux.md §Cgroup ownership|SHOULD, SHOULD NOT|The cgroup is chowned exactly when a writable cgroup mount is configured.
122|config-linux.md §Cgroup ownership|SHOULD, MUST|Only the directory and the delegated files are chowned.
123|config-linux.md §Device allowlist|MUST|Device rules are applied in order with the documented defaults.
124|config-linux.md §Memory|(defined)|memory limits are applied (or the create fails when they cannot be).
125|config-linux.md §Memory|MUST|checkBeforeUpdate refuses a limit below current usage.
126|config-linux.md §CPU|MUST|cpu settings are applied (quota >= burst), or the create fails.
127|config-linux.md §Block IO|MUST|blockIO settings are applied, or the create fails.
128|config-linux.md §Huge page limits|(defined)|hugepageLimits set the hugetlb (rsvd) limit for the page size.
129|config-linux.md §Pids|SHOULD|pids.limit is applied (0 is a real limit, -1 is max), or the create fails.
130|config-linux.md §RDMA|MUST|rdma entries are applied, or the create fails.
131|config-linux.md §Unified|MUST|unified keys are written as files; a missing controller is an error.
132|config-linux.md §Unified|MUST|v1-only settings that cannot be converted for v2 are an error.
133|config-linux.md §Sysctl|(defined)|linux.sysctl values are set for the container.
134|config-linux.md §Seccomp|MUST|seccomp uses libseccomp names; defaultAction is required.
135|config-linux.md §Seccomp|MUST|errnoRet on a non-errno action is an error; the default errno is EPERM.
136|config-linux.md §Seccomp|MUST|Syscall rules name at least one syscall; argument filters are honoured.
137|config-linux.md §Seccomp|MUST NOT|listenerMetadata without listenerPath is refused.
138|config-linux.md §Seccomp|MUST, MUST NOT|The listener gets one state per connection, then the connection is closed.
139|config-linux.md §Seccomp|MUST|The listener gets the container process state as JSON with the fds in SCM_RIGHTS.
140|config-linux.md §Masked Paths|MUST|maskedPaths cannot be read in the container.
141|config-linux.md §Readonly Paths|MUST|readonlyPaths are read-only in the container.
142|config-linux.md §Mount Label|(defined)|mountLabel sets the SELinux context of the container's mounts.
143|config-linux.md §Personality|MUST|personality.domain LINUX32 makes the container see a 32-bit machine.
144|config-linux.md §Network Devices|MUST|Each netDevices interface is moved into the container netns, renamed if asked.
145|config-linux.md §Network Devices|MUST|A name clash in the container netns is an error (unless %d).
146|config-linux.md §Network Devices|MUST|The moved interface keeps its permanent addresses.
147|config-linux.md §Network Devices|MUST|The moved interface is up.
148|config-linux.md §Network Devices|MUST NOT|The runtime does not move the interface back out on delete.
149|config-linux.md §IntelRdt|MUST|With intelRdt, the pid goes into the CLOS tasks; no resctrl mounted is an error.
150|config-linux.md §IntelRdt|MUST NOT|Without intelRdt, resctrl is not touched.
151|config-linux.md §IntelRdt|MUST|closID "/" is the default CLOS; no closID means a <id> directory.
152|config-linux.md §IntelRdt|SHOULD, MUST|L3/MB schemas and schemata entries are single lines with the right prefix.
153|config-linux.md §IntelRdt|MUST, MUST NOT|Schemas are written in the order L3, MB, schemata, and only when set.
154|config-linux.md §IntelRdt|MUST|An existing CLOS directory with a different schemata is an error.
155|config-linux.md §IntelRdt|MUST|A closID without schemas must already exist.
156|config-linux.md §IntelRdt|MUST, MUST NOT|delete removes only a CLOS directory the runtime made for the id.
157|config-linux.md §IntelRdt|MUST|enableMonitoring makes and later removes mon_groups/<id>.
158|config-linux.md §Memory policy|MUST|memoryPolicy mode/nodes/flags are applied with set_mempolicy.
159|features.md|SHOULD|The features document is fixed at build time.
160|features.md|MUST, MUST NOT|ociVersionMin/Max are present, ordered and accepted.
161|features.md|MUST NOT|No properties from outside the named spec version; null is not "empty".
162|features.md|MUST, SHOULD|Listed hooks work and listed mount options are recognized.
163|features-linux.md|MUST|Listed namespaces, capabilities and seccomp names are recognized.
164|features-linux.md|MUST|mountExtensions.idmap.enabled is true when mount mappings are honoured.
165|features.md|(defined)|features annotations follow the annotation rules.
"""

# why an item cannot be judged black-box on this Linux host
REASONS = {
    11: "a rule for whoever writes config.json (which annotation keys to use); the spec gives the runtime "
        "nothing to do about it, so there is no runtime behaviour to observe",
    76: "on Linux getrlimit() of a resource the kernel knows cannot fail, and unknown types are refused "
        "at create (spec#75); the values themselves are judged by spec#77 and spec#78",
    113: "a rule for config authors (do not configure two devices with the same numbers); the spec does not "
         "say what a runtime does when it happens",
    150: "needs Intel RDT hardware (a mounted resctrl) to observe that the runtime does not touch it; "
         "this x86 VM has no RDT",
    151: "needs Intel RDT hardware (resctrl) to see which CLOS directory the pid lands in",
    152: "needs Intel RDT hardware (resctrl): the schemas are only written there",
    153: "needs Intel RDT hardware (resctrl) to observe the order of schemata writes",
    154: "needs Intel RDT hardware (resctrl) with a pre-configured CLOS directory",
    155: "needs Intel RDT hardware (resctrl) with a pre-configured CLOS directory",
    156: "needs Intel RDT hardware (resctrl) to see which directories delete removes",
    157: "needs Intel RDT hardware with monitoring (resctrl mon_groups)",
}


@dataclass
class Item:
    n: int
    source: str
    level: str
    text: str
    area: str = ""
    reason: str | None = None
    check: Callable | None = None
    fails_on: str = ""
    mutants: list = field(default_factory=list)  # broken-runtime variants (mutant.py) that must fail the check


ITEMS: dict[int, Item] = {}


def _area_of(n: int) -> str:
    for name, lo, hi in AREAS:
        if lo <= n <= hi:
            return name
    return "?"


for _line in _TABLE.strip().splitlines():
    _n, _src, _lvl, _txt = _line.split("|", 3)
    _i = int(_n)
    if _i in ITEMS:
        raise RuntimeError(f"spec#{_i} listed twice in the catalogue")
    ITEMS[_i] = Item(_i, _src, _lvl, _txt, _area_of(_i), REASONS.get(_i))


def check(*items: int, fails_on: str = ""):
    """Register the decorated function as the check for the given items."""
    def deco(fn):
        for n in items:
            it = ITEMS[n]
            if it.check is not None:
                raise RuntimeError(f"spec#{n} has two checks: {it.check.__name__} and {fn.__name__}")
            if it.reason is not None:
                raise RuntimeError(f"spec#{n} has both a check and a reason")
            it.check = fn
            it.fails_on = fails_on
        return fn
    return deco


_loaded = False


def load_checks() -> dict[int, Item]:
    global _loaded
    from . import checks  # noqa: F401  (registers every check)
    if not _loaded:
        from .mutant import TARGETS
        for name, targets in sorted(TARGETS.items()):
            for n in targets:
                ITEMS[n].mutants.append(name)
        _loaded = True
    return ITEMS
