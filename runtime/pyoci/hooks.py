"""Hooks: which kind runs where and when, and how one hook is run.

| kind            | who runs it                  | namespace        | when                                   |
|-----------------|------------------------------|------------------|----------------------------------------|
| prestart        | runtime (create)             | runtime          | after namespaces exist, before pivot   |
| createRuntime   | runtime (create)             | runtime          | right after prestart                   |
| createContainer | container init (create)      | container        | after mounts, before pivot_root        |
| startContainer  | container init (start)       | container        | after start, before the user program   |
| poststart       | runtime (start)              | runtime          | after the user program started         |
| poststop        | runtime (delete)             | runtime          | after the container is gone            |

Each hook gets the container state JSON on stdin, exactly `args` (args[0] is argv[0]) and
`env`, and is killed when its `timeout` (seconds) runs out. A failing hook is an error for
every kind but poststop, which only warns and lets the rest run (runtime-spec 1.3.0).
"""
from __future__ import annotations

import json
import os
import signal

from pyoci.errors import HookError

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def run_hook(kind: str, index: int, hook: dict, state: dict) -> None:
    import subprocess  # lazily: most containers have no hooks (process.py preloads it for the child)
    path = hook["path"]
    args = hook.get("args") or [path]
    env = {}
    for kv in hook.get("env") or []:
        k, _, v = kv.partition("=")
        env[k] = v
    timeout = hook.get("timeout")
    data = json.dumps(state).encode()
    where = f"{kind} hook #{index} ({path})"
    try:
        p = subprocess.Popen(args, executable=path, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                             start_new_session=True)
    except OSError as e:
        raise HookError(f"{where}: {e.strerror.lower() if e.strerror else e}") from None
    try:
        out, err = p.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            p.kill()
        p.communicate()
        raise HookError(f"{where}: timed out after {timeout}s") from None
    except BrokenPipeError:
        out, err = p.communicate()
    if p.returncode != 0:
        detail = (err or out or b"").decode(errors="replace").strip()
        how = (f"killed by signal {-p.returncode}" if p.returncode < 0 else f"exit status {p.returncode}")
        raise HookError(f"{where}: {how}" + (f", stdout/stderr: {detail}" if detail else ""))


def run_hooks(kind: str, hooks: list[dict] | None, state: dict, warn=None) -> None:
    """Run every hook of `kind` in order. poststop failures are passed to `warn` and the rest run."""
    for i, h in enumerate(hooks or []):
        try:
            run_hook(kind, i, h, state)
        except HookError as e:
            if kind == "poststop":
                if warn:
                    warn(str(e))
                continue
            raise
