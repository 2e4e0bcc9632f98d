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
# log emulator.log) in cronlease-emulator-PORT.dir next to it. `stop` ends only that group (the
# launcher is a shell script whose java child is in the same group), and waits until it is gone.
#
# Nothing is left half-started: if `start` fails, or is interrupted (Ctrl-C, SIGTERM, SIGHUP)
# before the emulator is healthy, it stops what it started. `stop` is not interrupted by Ctrl-C,
# SIGTERM or SIGHUP. Neither dies of a closed stdout or stderr (`| head`, a closed terminal): a
# message that cannot be written is dropped.
#
# Environment: CRONLEASE_EMULATOR (launcher path), JAVA (java binary),
# EMULATOR_START_TIMEOUT (seconds to wait for health, default 30).
set -euo pipefail

DEFAULT_EMULATOR=/usr/lib/google-cloud-sdk/platform/cloud-datastore-emulator/cloud_datastore_emulator
EMULATOR=${CRONLEASE_EMULATOR:-$DEFAULT_EMULATOR}
PROJECT_ID=cronlease-dev
RUN_DIR=${XDG_RUNTIME_DIR:-/tmp}
START_TIMEOUT=${EMULATOR_START_TIMEOUT:-30}
INDEX_FILE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/index.yaml

# Messages: a write that fails (a closed pipe or terminal) is dropped, never fatal.
out() { printf '%s\n' "$*" 2>/dev/null || true; }
err() { printf 'emulator.sh: %s\n' "$*" >&2 2>/dev/null || true; }
# The end of the emulator's log on stderr (for failures).
log_tail() {
    if [[ -f $1 ]]; then
        tail -n 20 -- "$1" >&2 2>/dev/null || true
    fi
}

die() {
    err "$*"
    exit 1
}

# A write to a closed pipe must not kill this script before it has cleaned up: with a trap
# (rather than ignoring SIGPIPE, which children would inherit) the write just fails.
trap ':' PIPE

usage() {
    printf '%s\n' "usage: $0 start [PORT] | stop [PORT] | status [PORT] | env [PORT]   (default port 8081)" >&2 2>/dev/null || true
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
        read -r stat 2>/dev/null <"$p/stat" || continue # a builtin: no fork per process
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

# What `start` has made so far (undone by start_failed until the emulator is healthy).
START_PGID=""
START_DATA=""

# EXIT trap while `start` is under way: stop and remove whatever it started. Runs once.
start_failed() {
    trap '' INT TERM HUP
    set +e
    trap - EXIT
    # A signal right after `setsid ... &`, before START_PGID=$!, runs this trap in between.
    [[ -z $START_PGID ]] && START_PGID=${!:-}
    stop_quietly
}

start() {
    require_tools
    if [[ -f $PID_FILE ]]; then
        local old
        old=$(<"$PID_FILE")
        if [[ $old =~ ^[0-9]+$ ]] && [[ -n $(group_members "$old") ]] && healthy; then
            out "emulator already running on 127.0.0.1:$PORT (pgid $old)"
            return 0
        fi
        err "removing stale $PID_FILE"
        stop_quietly
    fi
    port_open && die "port $PORT on 127.0.0.1 is already in use"

    # From here on, any way out other than success (an error, set -e, a signal) cleans up.
    trap start_failed EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP

    mkdir -p "$RUN_DIR"
    START_DATA=$(mktemp -d "${TMPDIR:-/tmp}/cronlease-emulator-$PORT.XXXXXX")
    echo "$START_DATA" >"$DIR_FILE"
    local log=$START_DATA/emulator.log
    "$EMULATOR" create "$START_DATA/project" >"$log" 2>&1 || {
        log_tail "$log"
        die "'$EMULATOR create' failed"
    }

    # In its own session and process group: a Ctrl-C meant for the caller does not reach it,
    # and `stop` ends the launcher and its java child together. A background child of a
    # script is not a group leader, so setsid does not fork: $! is the group's leader.
    # The composite indexes of index.yaml and no others, as real Datastore: a query needing
    # one the file lacks fails. Without it the emulator recomputes "recommended" indexes from
    # its whole query history on every commit, which slows commits to seconds once thousands
    # of distinct queries were made (a failover of 10,000 jobs).
    setsid "$EMULATOR" start --host=127.0.0.1 --port="$PORT" --store_on_disk=False \
        --consistency=1.0 --require_indexes --store_index_configuration_on_disk=false \
        --index_file="$INDEX_FILE" "$START_DATA/project" </dev/null >>"$log" 2>&1 &
    START_PGID=$!
    echo "$START_PGID" >"$PID_FILE"
    out "starting the Datastore emulator on 127.0.0.1:$PORT (pgid $START_PGID, log $log)"

    local deadline=$((SECONDS + START_TIMEOUT))
    until healthy; do
        if ! kill -0 "$START_PGID" 2>/dev/null; then
            log_tail "$log"
            die "the emulator exited during start-up (log above)"
        fi
        if ((SECONDS >= deadline)); then
            log_tail "$log"
            die "the emulator did not answer GET / with Ok within ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
    [[ -n $(group_members "$START_PGID") ]] ||
        die "the emulator answers on port $PORT but not from process group $START_PGID (another server on the port?)"
    # Started: from now on it runs until `stop`.
    trap - EXIT INT TERM HUP
    out "emulator ready: export DATASTORE_EMULATOR_HOST=127.0.0.1:$PORT DATASTORE_PROJECT_ID=$PROJECT_ID"
}

# Wait up to $2 seconds until group $1 has no emulator process left; fail if some remain.
group_gone_within() {
    local pgid=$1 deadline=$((SECONDS + $2))
    while [[ -n $(group_members "$pgid") ]]; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# Stop the recorded group (if any) and wait until it is gone, remove the pid file and the data
# dir. The group is the one this script started (the pid file, or START_PGID during `start`);
# it is signalled only while one of its members is an emulator process (the group id cannot be
# reused while a member lives). Never fails.
stop_quietly() {
    local - # set +e for this function only: it does its best and never stops half-way
    set +e
    local pgid=$START_PGID data=$START_DATA
    [[ -z $pgid && -f $PID_FILE ]] && pgid=$(<"$PID_FILE")
    [[ -z $data && -f $DIR_FILE ]] && data=$(<"$DIR_FILE")
    if [[ $pgid =~ ^[0-9]+$ ]] && [[ -n $(group_members "$pgid") ]]; then
        # Politely if it answers (it then exits at once), else SIGTERM, then SIGKILL, to the
        # whole group: the launcher script and its java child.
        if ! { http POST /shutdown >/dev/null && group_gone_within "$pgid" 10; }; then
            [[ -n $(group_members "$pgid") ]] && kill -TERM -- "-$pgid" 2>/dev/null
            if ! group_gone_within "$pgid" 5; then
                [[ -n $(group_members "$pgid") ]] && kill -KILL -- "-$pgid" 2>/dev/null
                group_gone_within "$pgid" 5
            fi
        fi
    fi
    rm -f "$PID_FILE" "$DIR_FILE"
    if [[ $data == "${TMPDIR:-/tmp}"/cronlease-emulator-"$PORT".* && -d $data ]]; then
        rm -rf -- "$data"
    fi
    return 0
}

stop() {
    # Finish once begun: half a stop would leave the java child running.
    trap '' INT TERM HUP
    if [[ ! -f $PID_FILE ]]; then
        out "no emulator recorded for port $PORT ($PID_FILE does not exist)"
        return 0
    fi
    local pgid
    pgid=$(<"$PID_FILE")
    stop_quietly
    if [[ $pgid =~ ^[0-9]+$ && -n $(group_members "$pgid") ]]; then
        die "processes of group $pgid are still running"
    fi
    out "emulator on 127.0.0.1:$PORT stopped"
}

status() {
    local pgid=""
    [[ -f $PID_FILE ]] && pgid=$(<"$PID_FILE")
    if [[ $pgid =~ ^[0-9]+$ ]] && [[ -n $(group_members "$pgid") ]]; then
        if healthy; then
            out "running on 127.0.0.1:$PORT (pgid $pgid), healthy"
        else
            out "running on 127.0.0.1:$PORT (pgid $pgid), NOT answering GET /"
            return 1
        fi
    else
        out "not running on 127.0.0.1:$PORT"
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
env) out "export DATASTORE_EMULATOR_HOST=127.0.0.1:$PORT DATASTORE_PROJECT_ID=$PROJECT_ID" ;;
*) usage ;;
esac
