#!/usr/bin/env bash
# `make compose-test`: docker-compose.yml end to end on the private engine of tests/services/docker.sh,
# with every image built here (tests/images/build.sh), then tests/compose/test_compose_stack.py.
# Stops the engine again when this script started it. Prints how long each part took.
#
#   tests/compose/compose-test.sh PYTHON [pytest args...]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PYTHON="${1:?usage: $0 PYTHON [pytest args...]}"
shift

started_engine=0
cleanup() {
    if ((started_engine)); then
        bash "$REPO/tests/services/docker.sh" stop || true
    fi
}
trap cleanup EXIT

part() {
    local name="$1" start=$SECONDS
    shift
    "$@"
    echo "compose-test: $name took $((SECONDS - start))s" >&2
}

if ! bash "$REPO/tests/services/docker.sh" status >/dev/null 2>&1; then
    part "engine start" bash "$REPO/tests/services/docker.sh" start
    started_engine=1
fi
part "image builds" bash "$REPO/tests/images/build.sh" all
eval "$(bash "$REPO/tests/services/docker.sh" env)"
export KIDNEYCT_COMPOSE_TEST=1
part "compose stack test" "$PYTHON" -m pytest -p no:cacheprovider -s "$HERE/test_compose_stack.py" "$@"
