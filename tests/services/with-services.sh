#!/usr/bin/env bash
# Run a command (the test suite) with a real Kafka and a real PostgreSQL up, and the test variables
# exported. Services that already run, or that KIDNEYCT_TEST_* already point to, are used as they
# are; those this script started are stopped again when the command ends.
# With KIDNEYCT_TEST_SERVICES=containers, both come from testcontainers on the private Docker engine
# of docker.sh instead (started here if needed, and stopped again).
#
#   tests/services/with-services.sh .venv/bin/python -m pytest
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
started=()

cleanup() {
    for service in "${started[@]}"; do
        bash "$HERE/$service.sh" stop || true
    done
}
trap cleanup EXIT

ensure() {
    local service="$1"
    if ! bash "$HERE/$service.sh" status >/dev/null 2>&1; then
        bash "$HERE/$service.sh" start
        started+=("$service")
    fi
}

# KIDNEYCT_TEST_SERVICES=containers (CI): Kafka and PostgreSQL through testcontainers on the private
# engine of docker.sh, with the stand-in images of tests/images/build.sh, instead of native processes.
if [[ "${KIDNEYCT_TEST_SERVICES:-native}" == containers ]]; then
    ensure docker
    start=$SECONDS
    bash "$HERE/../images/build.sh" services
    echo "with-services.sh: service images ready in $((SECONDS - start))s" >&2
    eval "$(bash "$HERE/docker.sh" env)"
    unset KIDNEYCT_TEST_KAFKA_BOOTSTRAP KIDNEYCT_TEST_DATABASE_URL
    echo "with-services.sh: Kafka and PostgreSQL through testcontainers on $DOCKER_HOST" >&2
    set +e
    "$@"
    status=$?
    set -e
    exit "$status"
fi

if [[ -z "${KIDNEYCT_TEST_KAFKA_BOOTSTRAP:-}" ]]; then
    ensure kafka
    export KIDNEYCT_TEST_KAFKA_BOOTSTRAP="127.0.0.1:${KIDNEYCT_KAFKA_PORT:-19092}"
fi
if [[ -z "${KIDNEYCT_TEST_DATABASE_URL:-}" ]]; then
    ensure postgres
    KIDNEYCT_TEST_DATABASE_URL="$(bash "$HERE/postgres.sh" url)"
    export KIDNEYCT_TEST_DATABASE_URL
fi
echo "with-services.sh: KIDNEYCT_TEST_KAFKA_BOOTSTRAP=$KIDNEYCT_TEST_KAFKA_BOOTSTRAP" >&2
echo "with-services.sh: KIDNEYCT_TEST_DATABASE_URL=$KIDNEYCT_TEST_DATABASE_URL" >&2

set +e
"$@"
status=$?
set -e
exit "$status"
