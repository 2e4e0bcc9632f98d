#!/usr/bin/env bash
# Build the Debian package: target/debian/cronlease_<version>-<revision>_<arch>.deb
#
#   scripts/package.sh                    # release build, man pages, completions, cargo deb
#   scripts/package.sh --deb-revision 2   # extra arguments go to cargo deb
#
# Installs the pinned cargo-deb when it is missing (cargo install, a few minutes once).
# What goes where: [package.metadata.deb] in Cargo.toml; the unit, maintainer scripts and
# packaged config: deploy/debian/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DEB_VERSION=3.8.0

say() { echo "==> package.sh: $*"; }

if [[ $(cargo deb --version 2>/dev/null) != *"$CARGO_DEB_VERSION"* ]]; then
    say "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

# CRONLEASE_PACKAGE_PROFILE=dev packages the debug build (scripts/package-test.sh in CI, which
# has just built it); a package for people is always release.
profile=${CRONLEASE_PACKAGE_PROFILE:-release}
case $profile in
release) dir=release ;;
dev) dir=debug ;;
*) echo "package.sh: CRONLEASE_PACKAGE_PROFILE must be release or dev" >&2; exit 2 ;;
esac
say "$profile build"
if [[ $profile == dev ]]; then
    # The same build as scripts/test.sh's (test features unified), so nothing is rebuilt.
    cargo build --all-targets --locked
else
    cargo build --release --locked --bin cronlease
fi

# cargo-deb takes assets only from fixed paths: generate them from the binary first.
assets=target/package-assets
rm -rf "$assets"
mkdir -p "$assets/man"
bin=target/$dir/cronlease
"$bin" __man "$assets/man"
"$bin" completions bash >"$assets/cronlease.bash"
"$bin" completions zsh >"$assets/_cronlease"
"$bin" completions fish >"$assets/cronlease.fish"

say "cargo deb"
cargo deb --no-build --profile "$profile" "$@"
ls -1 target/debian/*.deb
