#!/usr/bin/env bash
# A local Google Cloud Datastore emulator for cronlease development.
#
#   scripts/emulator.sh start [PORT]    start on 127.0.0.1:PORT (default 8081), wait until healthy
#   scripts/emulator.sh stop [PORT]     stop the emulator this script started on PORT
#   scripts/emulator.sh status [PORT]   is it running and healthy?
#   scripts/emulator.sh env [PORT]      print the environment for clients:
#                                       eval "$(scripts/emulator.sh env)"
#
# The emulator runs in its own process group (setsid); its pgid is kept in
# ${XDG_RUNTIME_DIR:-/tmp}/cronlease-emulator-PORT.pid, its data dir (in-memory store, plus the
# log emulator.log) in cronlease-emulator-PORT.dir next to it. `stop` ends only that group.
#
# Environment: CRONLEASE_EMULATOR (launcher path), JAVA (java binary),
# EMULATOR_START_TIMEOUT (seconds to wait for health, default 30).
set -euo pipefail

DEFAULT_EMULATOR=/usr/lib/google-cloud-sdk/platform/cloud-datastore-emulator/cloud_datastore_emulator
EMULATOR=${CRONLEASE_EMULATOR:-$DEFAULT_EMULATOR}
PROJECT_ID=cronlease-dev
RUN_DIR=${XDG_RUNTIME_DIR:-/tmp}
START_TIMEOUT=${EMULATOR_START_TIMEOUT:-30}

die() {
    echo "emulator.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start [PORT] | stop [PORT] | status [PORT] | env [PORT]   (default port 8081)" >&2
    exit 2
}

# http METHOD PATH: print the response body; fail if the emulator does not answer 2xx.
http() {
    local method=$1 path=$2
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 3 -X "$method" "http://127.0.0.1:$PORT$path" 2>/dev/null
    else
        # Plain bash fallback: HTTP/1.1 over /dev/tcp (the emulator keeps the connection open,
        # so read exactly Content-Length bytes).
        (
            exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
            printf '%s %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nContent-Length: 0\r\n\r\n' \
                "$method" "$path" "$PORT" >&3
            local status line length=0 body=""
            read -r -t 3 status <&3 || exit 1
            [[ $status == "HTTP/1."?" 2"* ]] || exit 1
            while read -r -t 3 line <&3 && [[ -n ${line%$'\r'} ]]; do
                line=${line%$'\r'}
                if [[ ${line,,} == content-length:* ]]; then
                    length=${line#*:}
                    length=${length// /}
                fi
            done
            if ((length > 0)); then
                read -r -t 3 -N "$length" body <&3 || true
            fi
            printf '%s' "$body"
        ) 2>/dev/null
    fi
}

healthy() {
    local body
    body=$(http GET /) && [[ $body == Ok* ]]
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

# Live (non-zombie) pids in process group $1 that belong to the emulator.
group_members() {
    local pgid=$1 stat rest state pgrp cmd p
    for p in /proc/[0-9]*; do
        stat=$(cat "$p/stat" 2>/dev/null) || continue
        rest=${stat##*) }
        read -r state _ pgrp _ <<<"$rest"
        [[ $pgrp == "$pgid" && $state != Z ]] || continue
        cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
        [[ $cmd == *CloudDatastore* || $cmd == *cloud_datastore_emulator* ]] || continue
        echo "${p#/proc/}"
    done
}

require_tools() {
    command -v "${JAVA:-java}" >/dev/null 2>&1 ||
        die "java not found: the Datastore emulator needs Java 11+ (e.g. apt-get install openjdk-17-jre-headless)"
    [[ -x $EMULATOR ]] ||
        die "Datastore emulator not found at $EMULATOR (install google-cloud-cli-datastore-emulator or 'gcloud components install cloud-datastore-emulator', or set CRONLEASE_EMULATOR)"
    command -v setsid >/dev/null 2>&1 || die "setsid not found (util-linux)"
}

start() {
    require_tools
    if [[ -f $PID_FILE ]]; then
        local old
        old=$(<"$PID_FILE")
        if [[ $old =~ ^[0-9]+$ ]] && [[ -n $(group_members "$old") ]] && healthy; then
            echo "emulator already running on 127.0.0.1:$PORT (pgid $old)"
            return 0
        fi
        echo "removing stale $PID_FILE" >&2
        stop_quietly
    fi
    port_open && die "port $PORT on 127.0.0.1 is already in use"

    mkdir -p "$RUN_DIR"
    local data
    data=$(mktemp -d "${TMPDIR:-/tmp}/cronlease-emulator-$PORT.XXXXXX")
    echo "$data" >"$DIR_FILE"
    local log=$data/emulator.log
    "$EMULATOR" create "$data/project" >"$log" 2>&1 || {
        tail -n 20 "$log" >&2
        die "'$EMULATOR create' failed"
    }

    # A background child of a script is not a group leader, so setsid does not fork:
    # $! is the new session's (and process group's) leader.
    setsid "$EMULATOR" start --host=127.0.0.1 --port="$PORT" --store_on_disk=False \
        --consistency=1.0 "$data/project" </dev/null >>"$log" 2>&1 &
    local pgid=$!
    echo "$pgid" >"$PID_FILE"
    echo "starting the Datastore emulator on 127.0.0.1:$PORT (pgid $pgid, log $log)"

    local deadline=$((SECONDS + START_TIMEOUT))
    until healthy; do
        if ! kill -0 "$pgid" 2>/dev/null; then
            tail -n 20 "$log" >&2
            stop_quietly
            die "the emulator exited during start-up (log above)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$log" >&2
            stop_quietly
            die "the emulator did not answer GET / with Ok within ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    [[ -n $(group_members "$pgid") ]] ||
        die "the emulator answers on port $PORT but not from process group $pgid (another server on the port?)"
    echo "emulator ready: export DATASTORE_EMULATOR_HOST=127.0.0.1:$PORT DATASTORE_PROJECT_ID=$PROJECT_ID"
}

# Stop the recorded group (if any), remove the pid file and the data dir. Never fails.
stop_quietly() {
    local pgid="" data=""
    [[ -f $PID_FILE ]] && pgid=$(<"$PID_FILE")
    [[ -f $DIR_FILE ]] && data=$(<"$DIR_FILE")
    if [[ $pgid =~ ^[0-9]+$ ]] && [[ -n $(group_members "$pgid") ]]; then
        http POST /shutdown >/dev/null || true
        local deadline=$((SECONDS + 10))
        while [[ -n $(group_members "$pgid") ]] && ((SECONDS < deadline)); do
            sleep 0.2
        done
        # Whatever is left of the group (the group id is ours while a member lives).
        if [[ -n $(group_members "$pgid") ]]; then
            kill -KILL -- "-$pgid" 2>/dev/null || true
        fi
    fi
    rm -f "$PID_FILE" "$DIR_FILE"
    if [[ $data == "${TMPDIR:-/tmp}"/cronlease-emulator-"$PORT".* && -d $data ]]; then
        rm -rf -- "$data"
    fi
}

stop() {
    if [[ ! -f $PID_FILE ]]; then
        echo "no emulator recorded for port $PORT ($PID_FILE does not exist)"
        return 0
    fi
    local pgid
    pgid=$(<"$PID_FILE")
    stop_quietly
    local deadline=$((SECONDS + 10))
    while [[ $pgid =~ ^[0-9]+$ && -n $(group_members "$pgid") ]] && ((SECONDS < deadline)); do
        sleep 0.1
    done
    [[ $pgid =~ ^[0-9]+$ && -n $(group_members "$pgid") ]] && die "processes of group $pgid are still running"
    echo "emulator on 127.0.0.1:$PORT stopped"
}

status() {
    local pgid=""
    [[ -f $PID_FILE ]] && pgid=$(<"$PID_FILE")
    if [[ $pgid =~ ^[0-9]+$ ]] && [[ -n $(group_members "$pgid") ]]; then
        if healthy; then
            echo "running on 127.0.0.1:$PORT (pgid $pgid), healthy"
        else
            echo "running on 127.0.0.1:$PORT (pgid $pgid), NOT answering GET /"
            return 1
        fi
    else
        echo "not running on 127.0.0.1:$PORT"
        return 1
    fi
}

[[ $# -ge 1 && $# -le 2 ]] || usage
COMMAND=$1
PORT=${2:-8081}
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
    die "bad port: $PORT"
fi
PID_FILE=$RUN_DIR/cronlease-emulator-$PORT.pid
DIR_FILE=$RUN_DIR/cronlease-emulator-$PORT.dir

case $COMMAND in
start) start ;;
stop) stop ;;
status) status ;;
env) echo "export DATASTORE_EMULATOR_HOST=127.0.0.1:$PORT DATASTORE_PROJECT_ID=$PROJECT_ID" ;;
*) usage ;;
esac
