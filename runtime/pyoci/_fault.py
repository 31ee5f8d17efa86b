"""Fault injection for the reliability tests, in a module of its own so that `start` and
`delete` need not import pyoci.process (and with it the whole launch machinery, ~10 ms)."""
import os


def fault(point: str) -> None:
    """PYOCI_FAULT=<point> kills this pyoci process with SIGKILL at that point of the lifecycle
    (see tests/reliability/)."""
    if os.environ.get("PYOCI_FAULT") == point:
        os.kill(os.getpid(), 9)
