#!/usr/bin/env bash
# The full check, as CI runs it: formatting, clippy, build, then every test (unit tests and
# integration tests against real Datastore emulators, which the tests start themselves).
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -E 'binary(bad_config)'   # extra arguments go to cargo nextest (or cargo test)
#
# Needs: cargo (with rustfmt and clippy), Java 11+, the Cloud Datastore emulator
# (CRONLEASE_EMULATOR overrides its path). Installs the other servers and tools the tests use
# when they are missing (scripts/deps.sh: libfaketime, jq, redis-server, zookeeper, promtool,
# chromium and chromedriver;
# root or passwordless sudo). Checks and unit-tests the Prometheus alerting rules with promtool. Uses cargo-nextest if installed, else cargo test.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEFAULT_EMULATOR=/usr/lib/google-cloud-sdk/platform/cloud-datastore-emulator/cloud_datastore_emulator
export CRONLEASE_EMULATOR=${CRONLEASE_EMULATOR:-$DEFAULT_EMULATOR}

die() {
    echo "test.sh: $*" >&2
    exit 1
}

step() {
    echo
    echo "==> $*"
    "$@"
}

# Prerequisites, with what to do about each missing one.
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust from https://rustup.rs"
cargo fmt --version >/dev/null 2>&1 || die "rustfmt not found: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy not found: rustup component add clippy"
command -v "${JAVA:-java}" >/dev/null 2>&1 ||
    die "java not found: the Datastore emulator needs Java 11+ (e.g. apt-get install openjdk-17-jre-headless)"
[[ -x $CRONLEASE_EMULATOR ]] ||
    die "Datastore emulator not found at $CRONLEASE_EMULATOR: install google-cloud-cli-datastore-emulator (apt) or run 'gcloud components install cloud-datastore-emulator', or set CRONLEASE_EMULATOR to the cloud_datastore_emulator launcher"

echo "cargo:    $(cargo --version)"
echo "java:     $("${JAVA:-java}" -version 2>&1 | head -n 1)"
echo "emulator: $CRONLEASE_EMULATOR"

step scripts/deps.sh
step promtool check rules deploy/prometheus/alerts.yaml
step promtool test rules deploy/prometheus/alerts_test.yaml
# --syntax-only: the scrape config names a token file that exists only where it is deployed.
step promtool check config --syntax-only deploy/prometheus/scrape.yaml
step cargo fmt --all -- --check
step cargo clippy --all-targets -- -D warnings
step cargo build --all-targets

if cargo nextest --version >/dev/null 2>&1; then
    step cargo nextest run --no-fail-fast "$@"
else
    echo
    echo "cargo-nextest not found (cargo install cargo-nextest --locked); falling back to cargo test"
    step cargo test --no-fail-fast "$@"
fi
