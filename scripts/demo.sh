#!/usr/bin/env bash
# shellcheck disable=SC2317  # cleanup/on_signal/on_error are called from traps
# The demo: a Datastore emulator and three cronlease nodes sharing jobs.toml, their output
# interleaved on this terminal. However it ends, it stops everything it started: Ctrl-C,
# SIGTERM, SIGHUP (a closed terminal), a node exiting, or an error of its own. The nodes get
# SIGTERM and up to 15 s to hand their leases over, then the emulator is stopped. This holds
# with its output piped (`scripts/demo.sh 2>&1 | tee demo.log`): a message that cannot be
# written (the reader died with the Ctrl-C, the terminal is gone) is dropped, never fatal.
#
#   scripts/demo.sh                       # NODES=3 CONFIG=jobs.toml
#   NODES=5 CONFIG=my.toml scripts/demo.sh
#   CRONLEASE_BIN=target/debug/cronlease scripts/demo.sh   # that binary, no release build
#   HTTP_PORT=9200 scripts/demo.sh        # dashboards on 9200, 9201, ... (default 9101, ...)
#
# Each node serves its dashboard on 127.0.0.1 (HTTP_PORT + its index - 1, or another free port
# when that one is taken); the script prints their URLs. The nodes share a token that opens
# the dashboards and their buttons (Pause, Resume, Run now): CRONLEASE_HTTP_TOKEN if set, else
# a random one that the script prints.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

NODES=${NODES:-3}
CONFIG=${CONFIG:-jobs.toml}
GRACE=15 # seconds the nodes get to exit after SIGTERM
BIN=${CRONLEASE_BIN:-target/release/cronlease}
HTTP_PORT=${HTTP_PORT:-9101}

# Never fatal: with stdout/stderr on a dead pipe or a hung-up terminal the write just fails
# (and its error message goes to /dev/null).
say() { printf 'demo: %s\n' "$*" >&2 2>/dev/null || true; }

PORT=""
PIDS=()
HTTP_PORTS=()
TOKEN_MADE=0
CLEANED=0

# Stop what this script started: the nodes by the pids it recorded, then the emulator (by its
# port's pid file: scripts/emulator.sh stops its whole process group, launcher and java).
# Idempotent, and it cannot be cut short: no set -e, further signals ignored (and a write to
# a closed pipe fails instead of killing the script).
cleanup() {
    trap '' INT TERM HUP PIPE
    set +e
    ((CLEANED)) && return 0
    CLEANED=1
    ((${#PIDS[@]})) || [[ -n $PORT ]] || return 0 # nothing started
    local pid alive deadline
    if ((${#PIDS[@]})); then
        say "stopping ${#PIDS[@]} node(s) (SIGTERM, up to ${GRACE}s)"
        for pid in "${PIDS[@]}"; do
            kill -TERM "$pid" 2>/dev/null
        done
        deadline=$((SECONDS + GRACE))
        while :; do
            alive=()
            for pid in "${PIDS[@]}"; do
                kill -0 "$pid" 2>/dev/null && alive+=("$pid")
            done
            ((${#alive[@]} == 0)) && break
            if ((SECONDS >= deadline)); then
                say "node(s) ${alive[*]} did not exit within ${GRACE}s: SIGKILL"
                kill -KILL "${alive[@]}" 2>/dev/null
                break
            fi
            sleep 0.2
        done
        for pid in "${PIDS[@]}"; do
            wait "$pid" 2>/dev/null
        done
    fi
    if [[ -n $PORT ]]; then
        bash scripts/emulator.sh stop "$PORT" >&2 ||
            say "could not stop the emulator on port $PORT (scripts/emulator.sh stop $PORT)"
    fi
    say "all stopped"
}

on_signal() {
    trap '' INT TERM HUP PIPE
    say "$1: shutting down"
    cleanup
    exit "$2"
}

on_error() {
    say "failed (status $1) at line $2"
}

trap cleanup EXIT
trap 'on_error $? $LINENO' ERR
trap 'on_signal SIGINT 130' INT
trap 'on_signal SIGTERM 143' TERM
trap 'on_signal SIGHUP 129' HUP
# Our own output going nowhere (the reader of a pipe exited): stop as well. A trap rather than
# ignoring SIGPIPE, so the nodes and the emulator still start with the default action.
trap 'on_signal SIGPIPE 141' PIPE

[[ $NODES =~ ^[1-9][0-9]*$ ]] || { say "NODES must be a positive number, not '$NODES'"; exit 2; }
if ! [[ $HTTP_PORT =~ ^[1-9][0-9]{0,4}$ ]] || ((HTTP_PORT + NODES > 65536)); then
    say "HTTP_PORT must be a port number (with room for $NODES), not '$HTTP_PORT'"
    exit 2
fi
[[ -f $CONFIG ]] || { say "config file '$CONFIG' not found (set CONFIG=path/to/jobs.toml)"; exit 2; }

if [[ -n ${CRONLEASE_BIN:-} ]]; then
    [[ -x $BIN ]] || { say "CRONLEASE_BIN='$BIN' is not an executable file"; exit 2; }
else
    say "building (cargo build --release)"
    cargo build --release
fi

# Fail early, before starting anything, on a bad config.
"$BIN" check --config "$CONFIG" >/dev/null

# Our own emulator on a free port (retrying if another process takes the port first).
for _ in 1 2 3 4 5; do
    candidate=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null && continue # in use
    PORT=$candidate
    bash scripts/emulator.sh start "$PORT" >&2 && break
    PORT=""
done
[[ -n $PORT ]] || { say "could not start the Datastore emulator"; exit 1; }

export DATASTORE_EMULATOR_HOST=127.0.0.1:$PORT
export DATASTORE_PROJECT_ID=cronlease-dev

# The dashboards ask for a token (at least 16 characters; an operate token: it also works the
# buttons); the nodes read it from the environment.
if [[ -z ${CRONLEASE_HTTP_TOKEN:-} ]]; then
    CRONLEASE_HTTP_TOKEN=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
    export CRONLEASE_HTTP_TOKEN
    TOKEN_MADE=1
fi

# Whether something listens on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port for node $1's dashboard: HTTP_PORT + $1 - 1 if it is free, else a random free one;
# never the emulator's or another node's.
http_port() {
    local candidate=$((HTTP_PORT + $1 - 1)) tries
    for ((tries = 0; tries < 50; tries++)); do
        if [[ $candidate != "$PORT" && " ${HTTP_PORTS[*]} " != *" $candidate "* ]] &&
            ! listening "$candidate"; then
            printf '%s\n' "$candidate"
            return 0
        fi
        candidate=$((20000 + RANDOM % 40000))
    done
    return 1
}

# Each node in its own process group (setsid): a Ctrl-C on the terminal reaches only this
# script, which then stops the nodes in order (SIGTERM, wait) instead of them all at once.
# Its dashboard on a loopback port of its own: the node binds it first thing, so wait until it
# listens; one that exits first lost its port to another process: try another port.
for ((i = 1; i <= NODES; i++)); do
    for attempt in 1 2 3; do
        http=$(http_port "$i") || { say "no free port for node $i's dashboard"; exit 1; }
        setsid "$BIN" run --config "$CONFIG" --log-format pretty --http "127.0.0.1:$http" </dev/null &
        pid=$!
        PIDS+=("$pid")
        deadline=$((SECONDS + 20))
        while kill -0 "$pid" 2>/dev/null && ! listening "$http" && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            listening "$http" || { say "node $i (pid $pid) does not listen on 127.0.0.1:$http"; exit 1; }
            HTTP_PORTS+=("$http")
            break
        fi
        status=0
        wait "$pid" || status=$?
        unset 'PIDS[-1]'
        # 2: a bad configuration (e.g. a token of fewer than 16 characters): no retry helps.
        ((status != 2)) || { say "node $i exited at start-up (status 2: see its message)"; exit 2; }
        ((attempt < 3)) || { say "node $i exited at start-up (status $status, 3 tries)"; exit 1; }
        say "node $i exited at start-up (status $status; port $http taken?): trying another port"
    done
done
say "${NODES} node(s) running (pids ${PIDS[*]}) against the emulator on $DATASTORE_EMULATOR_HOST; Ctrl-C stops everything"
for ((i = 1; i <= NODES; i++)); do
    say "dashboard of node $i: http://127.0.0.1:${HTTP_PORTS[i - 1]}/"
done
if ((TOKEN_MADE)); then
    say "token the dashboards ask for (it also works Pause, Resume, Run now): $CRONLEASE_HTTP_TOKEN"
else
    say "the dashboards ask for the token in CRONLEASE_HTTP_TOKEN"
fi
say "the cluster at a glance, from another terminal:"
say "  DATASTORE_EMULATOR_HOST=$DATASTORE_EMULATOR_HOST $BIN status --config $CONFIG"

# Run until a signal arrives or a node exits on its own (then stop the rest).
status=0
wait -n "${PIDS[@]}" || status=$?
say "a node exited (status $status): stopping the demo"
exit "$status"
