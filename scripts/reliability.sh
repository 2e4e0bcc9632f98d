#!/usr/bin/env bash
# Run the fault drills several times and write docs/RELIABILITY.md from what they report.
#
#   scripts/reliability.sh [RUNS]        (default 3)
#   CRONLEASE_CHAOS_SECS=300 scripts/reliability.sh 5    # longer chaos soaks (default 30 s)
#
# The chaos drill (tests/drills.rs) draws a new seed every run and reports it; replay one with
# CRONLEASE_CHAOS_SEED=N cargo nextest run --test drills -E 'test(chaos)'.
# Each drill (tests/drills.rs, tests/cluster.rs) asserts its guarantees and, when it passes,
# reports its figures as one JSON line (tests/common `report`). This script runs the two test
# binaries RUNS times with CRONLEASE_DRILL_REPORT set, then tabulates per drill: how many runs
# passed, and min / median / max of every figure. Needs what scripts/test.sh needs, plus jq and
# libfaketime (scripts/deps.sh installs them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNS=${1:-3}
OUT=docs/RELIABILITY.md
BINARIES=(cluster drills)
command -v jq >/dev/null || { echo "reliability.sh: jq is missing (scripts/deps.sh installs it)" >&2; exit 1; }

# Per-seed table of the chaos drill's reports (one JSON line per passing run) on stdin.
chaos_table() {
    jq -rs '
      [.[] | select(.drill == "chaos")] as $c
      | if ($c | length) == 0 then empty else
        "",
        "## Chaos drill, per run",
        "",
        "`chaos_random_faults_keep_the_run_records_right`: 4 nodes (each through its own proxy), 4 every-second jobs and one every-2-s job whose runs are always going (3 s timeout), faults drawn with the seed every 2-5 s for the stated seconds: kill -9 + restart, SIGSTOP 1-5 s, SIGTERM + restart, emulator stopped 2-4 s (on disk), a node cut off 2-5 s, a node restarted with its clock 30 s off. Every run below passed all its checks: no fire time ran twice, no record left `running`, every orphan of a killed node closed within lease + poll (+ 8 s slack for a store outage drawn meanwhile), no job process alive 1.5 s after its node, no tick dropped by a hand-over, every node exits 0 on the final SIGTERM. Replay a seed with `CRONLEASE_CHAOS_SEED=N cargo nextest run --test drills -E '"'"'test(chaos)'"'"'`.",
        "",
        "| seed | s | faults | ticks | duplicates | left running | orphans closed (of them timed from a kill: median / max ms after it) | job processes gone (max ms) | dropped by hand-over | outcomes |",
        "|---|---|---|---|---|---|---|---|---|---|",
        ($c[] | "| \(.seed) | \(.seconds) | \(.faults | to_entries | map("\(.key) \(.value)") | join(", ")) | \(.ticks_checked) | \(.duplicate_runs) | \(.runs_left_running) | \(.orphans_closed) (\(.orphans_timed // "-"): \(.orphan_close_median_ms) / \(.orphan_close_max_ms)) | \(.job_processes_gone_max_ms) | \(.ticks_dropped_by_handover) | \(.outcomes | to_entries | map("\(.key) \(.value)") | join(", ")) |")
      end'
}

mkdir -p "$(dirname "$OUT")"
# The raw reports stay next to the table (one JSON line per passing drill), and so does the log
# of the test runs, so a failure can be read afterwards.
report=${OUT%.md}.jsonl
log=${OUT%.md}.log
: >"$report"
: >"$log"
export CRONLEASE_DRILL_REPORT=$PWD/$report

args=()
for b in "${BINARIES[@]}"; do args+=(--test "$b"); done
failed_runs=0
for ((i = 1; i <= RUNS; i++)); do
    echo "==> reliability.sh: run $i of $RUNS: cargo nextest run ${args[*]}" >&2
    if ! cargo nextest run --no-fail-fast "${args[@]}" >>"$log" 2>&1; then
        failed_runs=$((failed_runs + 1))
        echo "==> reliability.sh: run $i had failures (see $log)" >&2
    fi
done
# Tests per binary, to count attempts (a failed test reports nothing).
attempts=$(cargo nextest list "${args[@]}" --message-format json 2>/dev/null |
    jq -c '[.["rust-suites"][] | .testcases | keys[]] | length')

{
    echo "# Reliability drills"
    echo
    echo "Produced by \`scripts/reliability.sh $RUNS\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -sr));"
    echo "the Datastore emulator, lease 3 s, renew 500 ms, poll 250 ms. Every drill asserts its"
    echo "guarantee (the test fails otherwise) and reports its figures only when it passed; a"
    echo "figure is shown as min / median / max over the passing runs. $RUNS runs of $attempts tests;"
    echo "runs with a failure: $failed_runs."
    echo
    echo "| drill | passed | figures (min / median / max) | reproduce |"
    echo "|---|---|---|---|"
    jq -rs --argjson runs "$RUNS" '
      def med: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
      def fmt: if type == "number" and (. != floor) then (. * 10 | round / 10) else . end;
      group_by(.drill)[] as $g
      | ($g[0]) as $first
      | ([$g[] | to_entries[] | select(.key | IN("drill","binary","test") | not)]
          | group_by(.key)
          | map(.[0].key as $k | [.[].value] as $v
              | if ($v | all(type == "number")) and ($v | min) == ($v | max) then
                  "\($k) \($v | min | fmt)"
                elif ($v | all(type == "number")) then
                  "\($k) \($v | min | fmt) / \($v | med | fmt) / \($v | max | fmt)"
                else "\($k) \($v | unique | map(tostring) | join(", "))" end)
          | join("; ")) as $figs
      | "| \($first.drill) | \($g | length) of \($runs) | \($figs) | `cargo nextest run --test \($first.binary) -E '"'"'test(=\($first.test))'"'"' --no-capture` |"
    ' "$report"
    chaos_table <"$report"
} >"$OUT"
echo "==> reliability.sh: wrote $OUT" >&2
cat "$OUT"
