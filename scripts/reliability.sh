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
} >"$OUT"
echo "==> reliability.sh: wrote $OUT" >&2
cat "$OUT"
