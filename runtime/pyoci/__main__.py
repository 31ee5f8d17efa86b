import os
import sys


def main() -> None:
    from pyoci.cli import main as cli_main
    try:
        code = cli_main(sys.argv[1:])
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (`pyoci list | head -1`): end quietly, like a Go binary on EPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    sys.exit(code)


if __name__ == "__main__":
    main()
