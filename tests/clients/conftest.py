"""Fixtures of the real-client lanes (podman, containerd); see lanes.py for the design."""
from __future__ import annotations

import os

import pytest

from clients import lanes

DURATIONS: dict[str, list[float]] = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "clients: real-client lanes: podman and containerd drive the runtime")


def _need(*tools: str) -> None:
    missing = lanes.missing_tools(*tools)
    if missing:
        pytest.skip(f"missing client tools: {', '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("the client lanes need root")


@pytest.fixture(scope="session")
def client_runtime() -> str:
    return lanes.runtime_under_test()


def _open_lane(runtime: str) -> lanes.Lane:
    base = lanes.make_lane_dir()
    lane = lanes.Lane(base, runtime)
    try:
        lane.make_netns()
    except BaseException:
        lane.unmount_leftovers()
        lanes.remove_lane_dir(base)
        raise
    return lane


def _close_lane(lane: lanes.Lane, problems: list[str], name: str) -> None:
    lane.unmount_leftovers()
    lanes.remove_lane_dir(lane.base)
    if problems:
        pytest.fail(f"{name} lane teardown: " + "\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def podman_lane(client_runtime):
    """A podman set up privately (config, storage, events, locks under a temp dir) with the
    busybox image imported; yields the Podman driver."""
    _need("podman", "conmon", "nsenter", "unshare", "ip", "setsid", "tar")
    lane = _open_lane(client_runtime)
    problems: list[str] = []
    pm = None
    try:
        pm = lanes.Podman(lane)
        tar = lanes.build_busybox_rootfs_tar(lane.base / "img")
        pm.import_image(tar)
        yield pm
    finally:
        if pm is not None:
            problems += pm.teardown()
        _close_lane(lane, problems, "podman")


@pytest.fixture(scope="session")
def busybox_archive(podman_lane, tmp_path_factory):
    """The busybox image as a docker-archive (podman save), for ctr image import."""
    dest = tmp_path_factory.mktemp("client-image") / "busybox-docker.tar"
    podman_lane.save_image(dest)
    return dest


@pytest.fixture(scope="session")
def containerd_lane(client_runtime, busybox_archive):
    """A containerd daemon started in the lane's netns with its own config/root/state/sockets
    and the image imported; stopped by pid at the end."""
    _need("containerd", "ctr", "containerd-shim-runc-v2", "nsenter", "unshare", "ip", "setsid")
    lane = _open_lane(client_runtime)
    problems: list[str] = []
    cd = None
    try:
        cd = lanes.Containerd(lane)
        cd.start()
        cd.import_image(busybox_archive)
        yield cd
    finally:
        if cd is not None:
            problems += cd.teardown()
        _close_lane(lane, problems, "containerd")


@pytest.fixture
def podman(podman_lane, request):
    """Per scenario: brackets the runtime log keeper, removes the scenario's containers."""
    lane = podman_lane.lane
    _check_budget(lane, "podman")
    lane.begin()
    podman_lane.mark()
    try:
        yield podman_lane
    finally:
        r = podman_lane.cleanup()
        lane.end()
        if r is not None and r.rc != 0:
            raise lane.failure("cleanup: podman rm -f of the scenario's containers failed", r)
        leaks = podman_lane.leaks(podman_lane.container_ids())
        if leaks:
            raise lane.failure("cleanup: " + "; ".join(leaks))


@pytest.fixture
def ctr(containerd_lane):
    lane = containerd_lane.lane
    _check_budget(lane, "containerd")
    lane.begin()
    try:
        yield containerd_lane
    finally:
        leaks = containerd_lane.cleanup()
        lane.end()
        if leaks:
            raise lane.failure("cleanup: " + "; ".join(leaks))


def _check_budget(lane: lanes.Lane, name: str) -> None:
    if lane.budget_left() <= 0:
        pytest.fail(f"not run: the {name} lane spent its time budget ({lanes.LANE_BUDGET:.0f}s, "
                    "PYOCI_CLIENT_LANE_BUDGET) on earlier scenarios", pytrace=False)


def pytest_runtest_logreport(report):
    # lane time = setup + call + teardown of its tests (the session fixtures' setup and teardown
    # are part of the first and last test)
    for lane, module in (("podman", "test_podman_lane.py"), ("containerd", "test_containerd_lane.py")):
        if module in report.nodeid:
            d = DURATIONS.setdefault(lane, [0.0, 0, 0])
            d[0] += report.duration
            if report.when == "call":
                d[1] += 1
                d[2] += report.failed


def pytest_terminal_summary(terminalreporter):
    if not DURATIONS:
        return
    try:
        rt = lanes.runtime_under_test()
    except AssertionError:
        rt = "?"
    terminalreporter.write_sep("-", f"client lanes against {rt}")
    for name, (secs, n, failed) in DURATIONS.items():
        terminalreporter.write_line(f"{name} lane: {n} scenarios, {failed} failed, {secs:.1f}s "
                                    "(with the lane's setup and teardown)")
