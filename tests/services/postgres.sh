#!/usr/bin/env bash
# A real PostgreSQL server for kidneyct's tests, from Debian's packages: its own data directory,
# its own port, loopback only, trust authentication (test use only), fsync off.
#
#   tests/services/postgres.sh start    initdb once, start, wait until pg_isready answers
#   tests/services/postgres.sh stop     stop it
#   tests/services/postgres.sh status   exit 0 when it answers
#   tests/services/postgres.sh url      print the SQLAlchemy URL of its `postgres` database
#
# Environment: KIDNEYCT_SERVICES_DIR (default <repo>/.services), KIDNEYCT_POSTGRES_PORT (15432),
# KIDNEYCT_POSTGRES_BIN (default: the newest /usr/lib/postgresql/*/bin).
# PostgreSQL refuses to run as root: as root the server runs as the `postgres` user.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PORT="${KIDNEYCT_POSTGRES_PORT:-15432}"
SERVICES_DIR="${KIDNEYCT_SERVICES_DIR:-$REPO/.services}"
BIN="${KIDNEYCT_POSTGRES_BIN:-}"
if [[ -z "$BIN" ]]; then
    BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
fi

say() { echo "postgres.sh: $*" >&2; }

[[ -x "$BIN/pg_ctl" ]] || { say "PostgreSQL not found (apt-get install postgresql)"; exit 1; }

RUN_AS=()
if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || { say "running as root needs the 'postgres' user (apt-get install postgresql)"; exit 1; }
    RUN_AS=(runuser -u postgres --)
fi

PG_DIR="$SERVICES_DIR/postgres-$PORT"
if ((${#RUN_AS[@]})); then
    mkdir -p "$SERVICES_DIR"
    # The postgres user must be able to reach its directory; a checkout under /root is not reachable.
    if ! "${RUN_AS[@]}" test -x "$SERVICES_DIR"; then
        PG_DIR="${TMPDIR:-/tmp}/kidneyct-postgres-$PORT"
    fi
fi
DATA="$PG_DIR/data"
LOG_FILE="$PG_DIR/postgres.log"

as_pg() { "${RUN_AS[@]}" "$@"; }

answers() { "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres; }

running() { [[ -f "$DATA/postmaster.pid" ]] && as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

start() {
    if running && answers; then
        say "already running on 127.0.0.1:$PORT ($DATA)"
        return 0
    fi
    mkdir -p "$PG_DIR"
    if ((${#RUN_AS[@]})); then
        chown postgres: "$PG_DIR"
    fi
    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        as_pg "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C --no-instructions >"$PG_DIR/initdb.log" 2>&1 \
            || { say "initdb failed:"; cat "$PG_DIR/initdb.log" >&2; exit 1; }
        # Test settings: loopback only, no durability cost, enough connections for parallel engines.
        cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PG_DIR'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
log_min_messages = warning
CONF
    fi
    if answers; then
        say "port $PORT is taken by another server; set KIDNEYCT_POSTGRES_PORT"
        exit 1
    fi
    # -w waits until the server accepts connections (or the timeout passes).
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$LOG_FILE" -w -t 60 start >/dev/null \
        || { say "start failed; last log lines:"; tail -n 30 "$LOG_FILE" >&2; exit 1; }
    local deadline=$((SECONDS + 60))
    until answers; do
        if ((SECONDS >= deadline)); then
            say "server did not answer within 60s"
            tail -n 30 "$LOG_FILE" >&2
            exit 1
        fi
        sleep 0.2
    done
    say "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') answers on 127.0.0.1:$PORT ($DATA)"
}

stop() {
    if ! running; then
        say "not running"
        return 0
    fi
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    say "stopped"
}

status() {
    if running && answers; then
        say "running on 127.0.0.1:$PORT ($DATA)"
        return 0
    fi
    say "not running"
    return 1
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
url) echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres" ;;
*)
    echo "usage: $0 start|stop|status|url" >&2
    exit 2
    ;;
esac
