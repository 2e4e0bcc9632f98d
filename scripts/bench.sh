#!/usr/bin/env bash
# Measure cronlease and write BENCHMARKS.md: tick precision, failover, store cost and
# footprint, start-up, scale-out. Starts its own Datastore emulator and nodes (release build).
#
#   scripts/bench.sh [--quick] [SECTION ...]     SECTION: precision failover cost cost-postgres startup scale operate notify dashboard https
#
# --quick runs fewer trials and shorter windows (a few minutes instead of about 20).
# Needs what scripts/test.sh needs (Java, the Datastore emulator, Rust).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo bench --bench cluster -- "$@"
