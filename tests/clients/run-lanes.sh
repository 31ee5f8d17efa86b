#!/bin/sh
# Run the real-client lanes (podman 4.3 + containerd 1.6) against a runtime.
#   tests/clients/run-lanes.sh                     # pyoci from <repo>/.venv (the default)
#   tests/clients/run-lanes.sh /usr/sbin/runc      # the reference
#   tests/clients/run-lanes.sh RUNTIME -k podman   # extra args go to pytest
# Needs root; pytest's conftest gives the lanes a private mount namespace with cgroup2.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    PYOCI_CLIENT_RUNTIME=$1; export PYOCI_CLIENT_RUNTIME; shift
fi
cd "$repo"
exec timeout 900 "$repo/.venv/bin/python" -m pytest tests/clients -p no:cacheprovider -q "$@"
