import gc
import os
import sys

# Verbs that start processes inside a container. Their pyoci process first re-executes itself
# from a sealed in-memory copy of the interpreter, so no process of ours (the intermediate,
# the container init before its final execve, a `#!/proc/self/exe` program it runs) has the
# host's interpreter file as /proc/self/exe: nothing in a container can ever open it for
# writing (CVE-2019-5736 class). runc does the same with a sealed copy of itself.
_SEALED_VERBS = {"create", "run", "exec"}


def _verb(argv: list[str]) -> str | None:
    takes_value = {"--root", "--log", "--log-format", "--criu", "--rootless"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            return None
        if a.startswith("-"):
            if a.lstrip("-").split("=", 1)[0] in {t.lstrip("-") for t in takes_value} and "=" not in a:
                i += 1
            i += 1
            continue
        return a
    return None


def _reexec_sealed() -> None:
    try:
        if os.readlink("/proc/self/exe").startswith("/memfd:"):
            return                              # already running from the sealed copy
        import fcntl
        fd = os.memfd_create("pyoci-python", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        with open(os.path.realpath(sys.executable), "rb") as f:
            data = f.read()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK |
                    fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    except OSError as e:
        sys.stderr.write(f"pyoci: cannot make a sealed copy of the interpreter: {e}\n")
        sys.exit(1)
    # argv[0] stays the venv's interpreter path, so Python finds the same prefix and packages
    script = sys.argv[0]
    args = [sys.executable] + (["-m", "pyoci"] if script.endswith("__main__.py") else [script])
    os.execve(f"/proc/self/fd/{fd}", args + sys.argv[1:], os.environ)


def main() -> None:
    if _verb(sys.argv[1:]) in _SEALED_VERBS and os.environ.get("PYOCI_UNSEALED") != "1":
        _reexec_sealed()
    # a pyoci call is short-lived and makes few reference cycles: the cyclic GC would only
    # run many times over the modules being imported (~5 ms)
    gc.disable()
    from pyoci.cli import main as cli_main
    try:
        code = cli_main(sys.argv[1:])
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (`pyoci list | head -1`): end quietly, like a Go binary on EPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    # skip interpreter finalization (module teardown, a last collection: ~7 ms)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    os._exit(code or 0)


if __name__ == "__main__":
    main()
