#!/usr/bin/env bash
# A real Apache Kafka broker (KRaft, single node, loopback) for kidneyct's tests, run from the
# broker's jars on Maven Central with Java 17. No Docker, no Kafka distribution tarball.
#
#   tests/services/kafka.sh fetch    download the jars (Maven) into the services dir, once
#   tests/services/kafka.sh start    fetch if needed, format the storage once, start, wait until it answers
#   tests/services/kafka.sh stop     stop the broker started by `start`
#   tests/services/kafka.sh status   exit 0 when it runs and answers
#   tests/services/kafka.sh libs     print the folder of the jars (for kafka_process.py)
#
# Environment: KIDNEYCT_SERVICES_DIR (default <repo>/.services), KIDNEYCT_KAFKA_PORT (19092),
# KIDNEYCT_KAFKA_CONTROLLER_PORT (19093), KIDNEYCT_KAFKA_START_TIMEOUT (seconds, 90),
# KIDNEYCT_KAFKA_HEAP (384m), KIDNEYCT_PYTHON (a Python with kafka-python for the protocol check;
# default <repo>/.venv/bin/python when it exists).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
KAFKA_VERSION="3.9.1"
SERVICES_DIR="${KIDNEYCT_SERVICES_DIR:-$REPO/.services}"
LIBS="$SERVICES_DIR/kafka-$KAFKA_VERSION/libs"
PORT="${KIDNEYCT_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${KIDNEYCT_KAFKA_CONTROLLER_PORT:-19093}"
RUN_DIR="$SERVICES_DIR/kafka-run-$PORT"
PID_FILE="$RUN_DIR/kafka.pid"
LOG_FILE="$RUN_DIR/kafka.log"
TIMEOUT="${KIDNEYCT_KAFKA_START_TIMEOUT:-90}"
HEAP="${KIDNEYCT_KAFKA_HEAP:-384m}"
PYTHON="${KIDNEYCT_PYTHON:-}"
if [[ -z "$PYTHON" && -x "$REPO/.venv/bin/python" ]]; then
    PYTHON="$REPO/.venv/bin/python"
fi

say() { echo "kafka.sh: $*" >&2; }

fetch() {
    if [[ -f "$LIBS/.complete" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || { say "mvn not found (apt-get install maven)"; exit 1; }
    command -v java >/dev/null || { say "java not found (apt-get install openjdk-17-jre-headless)"; exit 1; }
    say "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIBS"
    rm -rf "$LIBS"
    mkdir -p "$LIBS"
    mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$LIBS" -DincludeScope=runtime
    ls "$LIBS"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null
    touch "$LIBS/.complete"
}

running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    # The pid must still be our broker, not a recycled pid.
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka"; then
        echo "$pid"
        return 0
    fi
    return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

answers() {
    # TCP is not enough: the broker must answer a metadata request.
    port_open || return 1
    if [[ -n "$PYTHON" ]] && "$PYTHON" -c "import kafka" 2>/dev/null; then
        "$PYTHON" "$HERE/kafka_process.py" ping "127.0.0.1:$PORT" --timeout 5 >/dev/null 2>&1
    else
        grep -q "Kafka Server started" "$LOG_FILE" 2>/dev/null
    fi
}

start() {
    if pid="$(running_pid)" && answers; then
        say "already running (pid $pid) on 127.0.0.1:$PORT"
        return 0
    fi
    fetch
    mkdir -p "$RUN_DIR/data"
    sed -e "s#@PORT@#$PORT#g" -e "s#@CONTROLLER_PORT@#$CONTROLLER_PORT#g" -e "s#@LOG_DIR@#$RUN_DIR/data#g" \
        "$HERE/kafka-server.properties.in" >"$RUN_DIR/server.properties"
    local java_opts=(-Xms64m "-Xmx$HEAP" -XX:+UseSerialGC -Djava.awt.headless=true
        "-Dlog4j.configuration=file:$HERE/kafka-log4j.properties" "-Dkafka.logs.dir=$RUN_DIR")
    if [[ ! -f "$RUN_DIR/data/meta.properties" ]]; then
        # A cluster id is 16 random bytes, base64url without padding; passed as --cluster-id=ID
        # because an id may start with "-", which the tool's argparse would take for an option.
        local cluster_id
        cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
        java "${java_opts[@]}" -cp "$LIBS/*" kafka.tools.StorageTool format \
            --cluster-id="$cluster_id" -c "$RUN_DIR/server.properties" --ignore-formatted >"$RUN_DIR/format.log" 2>&1 \
            || { say "storage format failed:"; cat "$RUN_DIR/format.log" >&2; exit 1; }
    fi
    if port_open; then
        say "port $PORT is taken by another process; set KIDNEYCT_KAFKA_PORT"
        exit 1
    fi
    : >"$LOG_FILE"
    # setsid: the broker outlives this script and the shell that called it.
    setsid java "${java_opts[@]}" -cp "$LIBS/*" kafka.Kafka "$RUN_DIR/server.properties" \
        >>"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    local deadline=$((SECONDS + TIMEOUT))
    until answers; do
        if ! running_pid >/dev/null; then
            say "broker exited; last log lines:"
            tail -n 40 "$LOG_FILE" >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            say "broker did not answer within ${TIMEOUT}s; last log lines:"
            tail -n 40 "$LOG_FILE" >&2
            exit 1
        fi
        sleep 0.5
    done
    say "Kafka $KAFKA_VERSION answers on 127.0.0.1:$PORT (pid $(cat "$PID_FILE"), log $LOG_FILE)"
}

stop() {
    local pid
    if ! pid="$(running_pid)"; then
        say "not running"
        rm -f "$PID_FILE"
        return 0
    fi
    kill -TERM "$pid"
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            say "broker did not stop within 60s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$PID_FILE"
    say "stopped"
}

status() {
    local pid
    if pid="$(running_pid)" && answers; then
        say "running (pid $pid) on 127.0.0.1:$PORT"
        return 0
    fi
    say "not running"
    return 1
}

case "${1:-}" in
fetch) fetch ;;
start) start ;;
stop) stop ;;
status) status ;;
libs) fetch && echo "$LIBS" ;;
*)
    echo "usage: $0 fetch|start|stop|status|libs" >&2
    exit 2
    ;;
esac
