#!/usr/bin/env bash
# Run a command (the test suite) with a real Kafka and a real PostgreSQL up, and the test variables
# exported. Services that already run, or that KIDNEYCT_TEST_* already point to, are used as they
# are; those this script started are stopped again when the command ends.
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
