#!/usr/bin/env bash
# Installs what the tests need beyond the toolchain, Java and the Datastore emulator (which
# .ci/run sees to): libfaketime, used by the fault drills (tests/drills.rs) to give a node a
# skewed or DST-edge wall clock, jq, which scripts/reliability.sh uses, redis-server, zookeeper
# and postgresql (the Redis, ZooKeeper and PostgreSQL stores' tests), pgbouncer (the PostgreSQL
# store behind a transaction-mode pooler), openssl (test certificates), promtool (the alerting
# rules), and chromium with chromedriver (the dashboard's browser tests). Idempotent: installs
# only what is missing, and nothing when all is there. Works as root or through passwordless
# sudo (Debian/Ubuntu: apt-get).
#
#   scripts/deps.sh
set -euo pipefail

say() { echo "deps.sh: $*"; }

# The preload library, wherever the architecture puts it (x86_64-linux-gnu, aarch64-linux-gnu, ...).
find_libfaketime() {
    local lib
    for lib in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
        if [[ -f $lib ]]; then
            echo "$lib"
            return 0
        fi
    done
    if command -v dpkg >/dev/null 2>&1; then
        lib=$(dpkg -L libfaketime 2>/dev/null | grep -m1 '/libfaketime\.so\.1$' || true)
        if [[ -n $lib && -f $lib ]]; then
            echo "$lib"
            return 0
        fi
    fi
    return 1
}

as_root() {
    if [[ $(id -u) == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        say "need root or passwordless sudo to run: $*"
        return 1
    fi
}

missing=()
if lib=$(find_libfaketime); then
    say "libfaketime present: $lib"
else
    missing+=(faketime)
fi
# jq: scripts/reliability.sh tabulates the drills' JSON reports with it.
if command -v jq >/dev/null 2>&1; then
    say "jq present: $(command -v jq)"
else
    missing+=(jq)
fi
# redis-server: the Redis store's contract and cluster tests start their own (tests/common/redis_server.rs).
if command -v redis-server >/dev/null 2>&1 || [[ -x /usr/bin/redis-server ]]; then
    say "redis-server present: $(command -v redis-server || echo /usr/bin/redis-server)"
else
    missing+=(redis-server)
fi
# zookeeper: the ZooKeeper store's tests run a standalone server from its jars in /usr/share/java
# (tests/common/zookeeper_server.rs).
if [[ -f /usr/share/java/zookeeper.jar ]]; then
    say "zookeeper present: /usr/share/java/zookeeper.jar"
else
    missing+=(zookeeper)
fi
# postgresql: the PostgreSQL store's tests make a cluster of their own with its initdb and run
# it as the postgres user the package creates (tests/common/postgres_server.rs).
if compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null && id postgres >/dev/null 2>&1; then
    say "postgresql present: $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
else
    missing+=(postgresql)
fi
# pgbouncer: a test runs a cluster through PgBouncer in transaction mode
# (tests/common/pgbouncer.rs), which nothing may rely on session state behind.
if [[ -x /usr/sbin/pgbouncer ]] || command -v pgbouncer >/dev/null 2>&1; then
    say "pgbouncer present"
else
    missing+=(pgbouncer)
fi
# openssl (the command): the PostgreSQL TLS test makes its CA and server certificate with it.
if command -v openssl >/dev/null 2>&1; then
    say "openssl present"
else
    missing+=(openssl)
fi
# promtool (Debian package prometheus): scripts/test.sh checks and unit-tests the alerting rules
# in deploy/prometheus with it.
if command -v promtool >/dev/null 2>&1; then
    say "promtool present: $(command -v promtool)"
else
    missing+=(prometheus)
fi
# chromium and chromedriver: the dashboard's tests drive a real headless browser through
# WebDriver (tests/common/browser.rs); fonts-liberation gives its screenshots readable text.
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    say "chromium present: $(command -v chromium), $(command -v chromedriver)"
else
    missing+=(chromium chromium-driver fonts-liberation)
fi
if ((${#missing[@]} == 0)); then
    say "nothing to install"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || {
    say "missing: ${missing[*]}, and apt-get is not available: install them by hand (libfaketime.so.1 comes with the faketime package)"
    exit 1
}
say "installing ${missing[*]} (apt-get)"
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
lib=$(find_libfaketime) || { say "libfaketime.so.1 is still not found after installing faketime"; exit 1; }
command -v jq >/dev/null 2>&1 || { say "jq is still not found after installing it"; exit 1; }
[[ -x /usr/bin/redis-server ]] || command -v redis-server >/dev/null 2>&1 || { say "redis-server is still not found after installing it"; exit 1; }
[[ -f /usr/share/java/zookeeper.jar ]] || { say "zookeeper.jar is still not found after installing zookeeper"; exit 1; }
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || { say "postgres is still not found after installing postgresql"; exit 1; }
[[ -x /usr/sbin/pgbouncer ]] || { say "pgbouncer is still not found after installing it"; exit 1; }
command -v promtool >/dev/null 2>&1 || { say "promtool is still not found after installing prometheus"; exit 1; }
command -v chromedriver >/dev/null 2>&1 || { say "chromedriver is still not found after installing chromium-driver"; exit 1; }
say "installed ${missing[*]}; libfaketime: $lib"
