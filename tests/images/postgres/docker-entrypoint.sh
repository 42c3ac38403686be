#!/bin/bash
# Entrypoint of the PostgreSQL stand-in, a short version of the official image's: as root, own the
# data folder and drop to `postgres`; on an empty PGDATA, initdb with POSTGRES_USER/POSTGRES_PASSWORD,
# create POSTGRES_DB and run /docker-entrypoint-initdb.d on a socket-only server; then run postgres.
set -euo pipefail

if [[ "${1:-}" != postgres ]]; then
    exec "$@"
fi
if [[ "$(id -u)" == 0 ]]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

user="${POSTGRES_USER:-postgres}"
database="${POSTGRES_DB:-$user}"
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    : "${POSTGRES_PASSWORD:?the PostgreSQL stand-in needs POSTGRES_PASSWORD, like the official image}"
    initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    # Socket only while initialising, so no client sees a half-made database.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    psql=(psql -v ON_ERROR_STOP=1 --username "$user" --no-password --no-psqlrc)
    if [[ "$database" != postgres ]]; then
        "${psql[@]}" --dbname postgres -c "CREATE DATABASE \"$database\"" >/dev/null
    fi
    for file in /docker-entrypoint-initdb.d/*; do
        case "$file" in
        *.sh) echo "running $file"; . "$file" ;;
        *.sql) echo "running $file"; "${psql[@]}" --dbname "$database" -f "$file" ;;
        *) ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "PostgreSQL init process complete; ready for start up."
fi
exec "$@"
