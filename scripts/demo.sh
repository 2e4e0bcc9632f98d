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
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

NODES=${NODES:-3}
CONFIG=${CONFIG:-jobs.toml}
GRACE=15 # seconds the nodes get to exit after SIGTERM
BIN=${CRONLEASE_BIN:-target/release/cronlease}

# Never fatal: with stdout/stderr on a dead pipe or a hung-up terminal the write just fails
# (and its error message goes to /dev/null).
say() { printf 'demo: %s\n' "$*" >&2 2>/dev/null || true; }

PORT=""
PIDS=()
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

# Each node in its own process group (setsid): a Ctrl-C on the terminal reaches only this
# script, which then stops the nodes in order (SIGTERM, wait) instead of them all at once.
for ((i = 1; i <= NODES; i++)); do
    # --http on a free loopback port: each node logs its address, and `status` lists them.
    setsid "$BIN" run --config "$CONFIG" --log-format pretty --http 127.0.0.1:0 </dev/null &
    PIDS+=("$!")
done
say "${NODES} node(s) running (pids ${PIDS[*]}) against the emulator on $DATASTORE_EMULATOR_HOST; Ctrl-C stops everything"
say "the cluster at a glance, from another terminal:"
say "  DATASTORE_EMULATOR_HOST=$DATASTORE_EMULATOR_HOST $BIN status --config $CONFIG"

# Run until a signal arrives or a node exits on its own (then stop the rest).
status=0
wait -n "${PIDS[@]}" || status=$?
say "a node exited (status $status): stopping the demo"
exit "$status"
