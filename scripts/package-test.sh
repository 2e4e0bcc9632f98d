#!/usr/bin/env bash
# The package test: build the .deb, check what it holds, lint it, verify its unit, then install,
# upgrade and purge it in a Debian chroot (debootstrap; cached).
#
#   scripts/package-test.sh          # as CI runs it (.ci/run); root (or passwordless sudo)
#
# Checks, in order:
#   1. the file list with modes equals deploy/debian/contents.txt (a missing unit, page or
#      completion fails here); control fields; the unit's restart-on-upgrade fragment;
#   2. lintian finds no error or warning (overrides: deploy/debian/lintian-overrides, each with
#      its reason); the completions parse (bash -n) and the man pages render (groff -ww, no
#      output on stderr);
#   3. in a bookworm chroot: `apt-get install ./cronlease.deb` creates the cronlease user and
#      group, /var/lib/cronlease (0750, cronlease) and the config's statoverrides, marks the
#      conffiles, does not enable the unit and says how to; `systemd-analyze verify` of the
#      installed unit prints nothing; `man -w cronlease-run` finds the page; the unit's
#      ExecStart line, run as cronlease with a notify socket, sends READY=1; an upgrade keeps an
#      edited jobs.toml; purge removes /etc/cronlease, keeps /var/lib/cronlease and says so.
#
# The chroot (debootstrap --variant=minbase with the package's dependencies, ~250 MB) is kept
# as a tarball in ${CRONLEASE_CACHE:-$HOME/.cache/cronlease}; building it takes a few minutes
# once. The package is built from the dev profile (the binary CI has just built) unless
# CRONLEASE_PACKAGE_PROFILE=release.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "==> package-test: $*"; }
fail() {
    echo "package-test: FAILED: $*" >&2
    exit 1
}

as_root() {
    if [[ $(id -u) == 0 ]]; then "$@"; else sudo -n "$@"; fi
}

need() {
    local missing=()
    for tool in "$@"; do
        command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
    done
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}
need debootstrap:debootstrap lintian:lintian dpkg-shlibdeps:dpkg-dev systemd-analyze:systemd groff:groff-base python3:python3

work=target/package-test
rm -rf "$work"
mkdir -p "$work"

# ---- 1. build; contents and fields ------------------------------------------------------------
export CRONLEASE_PACKAGE_PROFILE=${CRONLEASE_PACKAGE_PROFILE:-dev}
scripts/package.sh
version=$(dpkg-deb -f target/debian/cronlease_*-1_*.deb Version)
deb=$(ls target/debian/cronlease_"$version"_*.deb)
say "built $deb"

# Mode and path of every entry, owners too (all root: the service's files belong to root).
dpkg-deb -c "$deb" | awk '{ sub(/^\./, "", $6); print $1, $2, $6 }' | sort -k3 >"$work/contents.txt"
if ! diff -u <(grep -v '^#' deploy/debian/contents.txt) "$work/contents.txt"; then
    fail "the package's files differ from deploy/debian/contents.txt (update it if the change is meant)"
fi
[[ $(dpkg-deb -f "$deb" Package) == cronlease ]] || fail "package name"
[[ $(dpkg-deb -f "$deb" Section) == admin ]] || fail "section"
depends=$(dpkg-deb -f "$deb" Depends)
for dep in libc6 adduser procps; do
    [[ $depends == *"$dep"* ]] || fail "Depends lacks $dep: $depends"
done
dpkg-deb -e "$deb" "$work/control"
grep -q 'try-restart' "$work/control/postinst" || fail "postinst does not restart a running service on upgrade"
# (Enabling is checked in the chroot: the fragment re-enables only a unit the operator enabled.)
if grep -q 'deb-systemd-invoke start' "$work/control/postinst"; then
    fail "postinst starts the service"
fi
for f in /etc/cronlease/jobs.toml /etc/default/cronlease; do
    grep -qx "$f" "$work/control/conffiles" || fail "$f is not a conffile"
done

# ---- 2. lintian, completions, man pages --------------------------------------------------------
say "lintian"
lintian --fail-on error,warning --tag-display-limit 0 "$deb"
dpkg-deb -x "$deb" "$work/root"
bash -n "$work/root/usr/share/bash-completion/completions/cronlease"
bash -c ". $work/root/usr/share/bash-completion/completions/cronlease && complete -p cronlease" >/dev/null
for page in "$work"/root/usr/share/man/man1/*.1.gz; do
    errors=$(zcat "$page" | groff -man -ww -z 2>&1)
    [[ -z $errors ]] || fail "$(basename "$page"): $errors"
done
say "$(ls "$work"/root/usr/share/man/man1 | wc -l) man pages render cleanly"

# ---- 3. install, upgrade, purge in a chroot ------------------------------------------------------
cache=${CRONLEASE_CACHE:-$HOME/.cache/cronlease}
tarball=$cache/bookworm-minbase-v1.tar
mirror=${CRONLEASE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [[ ! -s $tarball ]]; then
    say "building the bookworm chroot (once; cached in $tarball)"
    mkdir -p "$cache"
    rm -rf "$work/bootstrap"
    as_root debootstrap --variant=minbase \
        --include=adduser,procps,systemd,man-db,python3-minimal \
        bookworm "$work/bootstrap" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
    as_root tar -C "$work/bootstrap" -cf "$tarball.tmp" .
    as_root mv "$tarball.tmp" "$tarball"
    as_root rm -rf "$work/bootstrap"
fi
root=$work/chroot
as_root mkdir -p "$root"
as_root tar -C "$root" -xf "$tarball"
cleanup() {
    as_root umount "$root/proc" 2>/dev/null || true
    as_root rm -rf "$root"
}
trap cleanup EXIT
as_root mount -t proc proc "$root/proc"
in_root() { as_root chroot "$root" "$@"; }

as_root cp "$deb" "$root/tmp/cronlease.deb"
say "install"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/cronlease.deb >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; fail "apt-get install"; }
grep -q "systemctl enable --now cronlease" "$work/install.log" || fail "the first install does not say how to enable the service"
in_root getent passwd cronlease >/dev/null || fail "no cronlease user"
in_root getent group cronlease >/dev/null || fail "no cronlease group"
[[ $(in_root stat -c '%U:%G %a' /var/lib/cronlease) == "cronlease:cronlease 750" ]] ||
    fail "/var/lib/cronlease: $(in_root stat -c '%U:%G %a' /var/lib/cronlease)"
[[ $(in_root stat -c '%U:%G %a' /etc/cronlease) == "root:cronlease 750" ]] ||
    fail "/etc/cronlease: $(in_root stat -c '%U:%G %a' /etc/cronlease)"
[[ $(in_root stat -c '%U:%G %a' /etc/cronlease/jobs.toml) == "root:cronlease 640" ]] ||
    fail "/etc/cronlease/jobs.toml: $(in_root stat -c '%U:%G %a' /etc/cronlease/jobs.toml)"
conffiles=$(in_root dpkg-query -W -f='${Conffiles}' cronlease)
[[ $conffiles == *"/etc/cronlease/jobs.toml"* ]] || fail "jobs.toml is not a conffile: $conffiles"
[[ $(in_root systemctl is-enabled cronlease 2>&1 || true) == disabled ]] ||
    fail "the unit is enabled on first install: $(in_root systemctl is-enabled cronlease 2>&1)"
in_root man -w cronlease-run >/dev/null || fail "man -w cronlease-run"
unit=$(in_root sh -c 'ls /usr/lib/systemd/system/cronlease.service /lib/systemd/system/cronlease.service 2>/dev/null | head -1')
[[ -n $unit ]] || fail "no installed unit"
verify=$(in_root systemd-analyze verify "$unit" 2>&1 || true)
[[ -z $verify ]] || fail "systemd-analyze verify $unit: $verify"
in_root setpriv --reuid cronlease --regid cronlease --init-groups \
    cronlease check --config /etc/cronlease/jobs.toml --count 1 >/dev/null ||
    fail "cronlease check of the packaged jobs.toml, as cronlease"
say "installed: user, modes, conffiles, unit verified and not enabled, man pages"

# The unit's ExecStart, as systemd would run it: as cronlease, with its state directory and a
# notify socket; READY=1 must arrive once the node has registered with the file store.
exec_start=$(sed -n 's/^ExecStart=//p' "$root$unit" |
    sed -e 's/\${CRONLEASE_CONFIG}/\/etc\/cronlease\/jobs.toml/' -e 's/%H/package-test/' -e 's/\$CRONLEASE_OPTS//')
as_root python3 - "$root" "$exec_start" <<'PY'
import os, socket, subprocess, sys, time
root, cmd = sys.argv[1], sys.argv[2].split()
path = os.path.join(root, "run/cronlease-notify.sock")
if os.path.exists(path):
    os.unlink(path)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
os.chmod(path, 0o777)
env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "STATE_DIRECTORY=/var/lib/cronlease",
       "NOTIFY_SOCKET=/run/cronlease-notify.sock"]
node = subprocess.Popen(["chroot", root, "setpriv", "--reuid", "cronlease", "--regid", "cronlease",
                         "--init-groups"] + env + cmd,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
sock.settimeout(1.0)
deadline, got = time.time() + 30, []
while time.time() < deadline and "READY=1" not in got:
    try:
        got += sock.recv(4096).decode().split("\n")
    except socket.timeout:
        if node.poll() is not None:
            break
node.terminate()
out = node.communicate(timeout=30)[0].decode()
if "READY=1" not in got:
    sys.exit(f"no READY=1 from the unit's ExecStart (messages {got}, exit {node.returncode}):\n{out}")
if node.returncode != 0:
    sys.exit(f"the node exited {node.returncode} after SIGTERM:\n{out}")
print("==> package-test: the unit's ExecStart, as cronlease, sent READY=1 and stopped cleanly")
PY
[[ -d $root/var/lib/cronlease/cronlease ]] || fail "the node did not use /var/lib/cronlease"

say "upgrade keeps an edited jobs.toml"
in_root sh -c 'echo "# edited by the operator" >> /etc/cronlease/jobs.toml'
scripts/package.sh --deb-revision 2 >"$work/package2.log" 2>&1 || { cat "$work/package2.log"; fail "revision 2"; }
as_root cp target/debian/cronlease_"${version%-*}"-2_*.deb "$root/tmp/cronlease2.deb"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    -o Dpkg::Options::=--force-confold /tmp/cronlease2.deb >"$work/upgrade.log" 2>&1 ||
    { cat "$work/upgrade.log"; fail "upgrade"; }
[[ $(in_root dpkg-query -W -f='${Version}' cronlease) == "${version%-*}-2" ]] || fail "not upgraded"
in_root grep -q "edited by the operator" /etc/cronlease/jobs.toml || fail "the upgrade lost the edit"
if grep -q "systemctl enable --now" "$work/upgrade.log"; then fail "the upgrade repeats the first-install message"; fi

say "purge"
in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q cronlease >"$work/purge.log" 2>&1 ||
    { cat "$work/purge.log"; fail "purge"; }
[[ ! -e $root/etc/cronlease ]] || fail "/etc/cronlease is still there after purge"
[[ -d $root/var/lib/cronlease/cronlease ]] || fail "purge removed /var/lib/cronlease"
grep -q "kept /var/lib/cronlease" "$work/purge.log" || fail "purge does not say it kept /var/lib/cronlease"
say "passed"
