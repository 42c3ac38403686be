#!/usr/bin/env bash
# A private Docker engine for kidneyct's tests and CI: Debian's dockerd on its own socket, data root
# and exec root, with no default bridge and no iptables rules, so it shares nothing with a Docker
# engine that may already run on the machine (and never touches one it did not start).
#
#   tests/services/docker.sh install  install docker.io, debootstrap and docker-compose when missing (Debian, as root)
#   tests/services/docker.sh start    install if needed, start dockerd, wait until it answers
#   tests/services/docker.sh stop     stop the dockerd started by `start` (its containers go with it)
#   tests/services/docker.sh status   exit 0 when it runs and answers
#   tests/services/docker.sh host     print its DOCKER_HOST (unix://.../docker.sock)
#   tests/services/docker.sh env      print the exports for testcontainers and docker-compose
#
# Containers get only the networks a test creates (the engine has no default bridge), and published
# ports go through docker-proxy, so loopback publishing needs no firewall rules.
# Environment: KIDNEYCT_SERVICES_DIR (default <repo>/.services; the engine lives in its docker/),
# KIDNEYCT_DOCKER_DIR (overrides that folder), KIDNEYCT_DOCKER_START_TIMEOUT (seconds, 60).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SERVICES_DIR="${KIDNEYCT_SERVICES_DIR:-$REPO/.services}"
DIR="${KIDNEYCT_DOCKER_DIR:-$SERVICES_DIR/docker}"
SOCKET="$DIR/docker.sock"
PID_FILE="$DIR/dockerd.pid"
LOG_FILE="$DIR/dockerd.log"
TIMEOUT="${KIDNEYCT_DOCKER_START_TIMEOUT:-60}"
# docker-compose: Debian 12 has no Compose v2 plugin (docker-compose-plugin is Docker's own apt
# repository); its docker-compose 1.29 reads the same docker-compose.yml.
PACKAGES=(docker.io debootstrap docker-compose)
# Debian's daemon, not whatever `dockerd` comes first on the PATH.
DOCKERD=/usr/sbin/dockerd
DOCKER=/usr/bin/docker

say() { echo "docker.sh: $*" >&2; }

install() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    [[ "$(id -u)" == 0 ]] || { say "installing ${missing[*]} needs root"; exit 1; }
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    # The pid must still be our dockerd (our socket on its command line), not a recycled pid.
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "unix://$SOCKET"; then
        echo "$pid"
        return 0
    fi
    return 1
}

answers() { [[ -S "$SOCKET" ]] && "$DOCKER" -H "unix://$SOCKET" version >/dev/null 2>&1; }

start() {
    if pid="$(running_pid)" && answers; then
        say "already running (pid $pid) at unix://$SOCKET"
        return 0
    fi
    install
    [[ "$(id -u)" == 0 ]] || { say "dockerd needs root"; exit 1; }
    mkdir -p "$DIR/data" "$DIR/exec"
    rm -f "$SOCKET"
    : >"$LOG_FILE"
    # --bridge=none: no docker0 (another engine may own it); --iptables=false and friends: the host
    # firewall stays as it was; the managed containerd lives under --exec-root.
    setsid "$DOCKERD" \
        --host "unix://$SOCKET" \
        --data-root "$DIR/data" \
        --exec-root "$DIR/exec" \
        --pidfile "$DIR/dockerd.pidfile" \
        --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        --userland-proxy=true \
        >>"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    local deadline=$((SECONDS + TIMEOUT))
    until answers; do
        if ! running_pid >/dev/null; then
            say "dockerd exited; last log lines:"
            tail -n 30 "$LOG_FILE" >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            say "dockerd did not answer within ${TIMEOUT}s; last log lines:"
            tail -n 30 "$LOG_FILE" >&2
            exit 1
        fi
        sleep 0.5
    done
    say "Docker $("$DOCKER" -H "unix://$SOCKET" version -f '{{.Server.Version}}') answers at unix://$SOCKET (pid $(cat "$PID_FILE"), log $LOG_FILE)"
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        say "not running"
        rm -f "$PID_FILE"
        return 0
    fi
    # Containers of ours that still run are stopped by dockerd itself on SIGTERM.
    kill -TERM "$pid"
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            say "dockerd did not stop within 60s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$PID_FILE"
    # dockerd leaves its default network namespace mounted under our exec root; nobody else uses it.
    if mountpoint -q "$DIR/exec/netns/default" 2>/dev/null; then
        umount "$DIR/exec/netns/default" || true
    fi
    say "stopped"
}

status() {
    local pid
    if pid="$(running_pid)" && answers; then
        say "running (pid $pid) at unix://$SOCKET"
        return 0
    fi
    say "not running"
    return 1
}

print_env() {
    echo "export DOCKER_HOST=unix://$SOCKET"
    # The reaper container would need an image from a registry; fixtures stop their containers.
    echo "export TESTCONTAINERS_RYUK_DISABLED=true"
    echo "export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1"
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop ;;
status) status ;;
host) echo "unix://$SOCKET" ;;
env) print_env ;;
*)
    echo "usage: $0 install|start|stop|status|host|env" >&2
    exit 2
    ;;
esac
