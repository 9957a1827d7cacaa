#!/usr/bin/env bash
# Install CRIU 4.x from Debian trixie into a private prefix, without touching
# the system's libc.
#
# Why: bookworm's criu 3.17 fails on recent kernels ("vdso: Unexpected rt vDSO
# area bounds"); trixie's 4.1.1 works. Installing trixie's package system-wide
# would upgrade libc6, so instead we `apt-get download` the criu .deb and its
# whole dependency closure (libc6 included), `dpkg -x` them into PREFIX and run
# criu through PREFIX's own dynamic loader:
#
#   PREFIX/bin/criu -> exec PREFIX/usr/lib64/ld-linux-x86-64.so.2 \
#                        --library-path PREFIX/usr/lib/x86_64-linux-gnu \
#                        PREFIX/usr/sbin/criu "$@"
#
# `--library-path` applies to criu only, not to what criu execs (iptables-restore
# for its network lock), which keeps using the system's own libraries.
#
# Environment:
#   THAW_CRIU_PREFIX    where to install (default /opt/thaw/criu as root,
#                       $HOME/.local/share/thaw/criu otherwise)
#   THAW_DEBIAN_MIRROR  Debian mirror URI (default: the one this machine's
#                       apt sources name; no host name is hard-coded here)
#   THAW_CRIU_SUITE     Debian suite to take criu from (default trixie)
#
# Idempotent: does nothing when PREFIX/bin/criu already reports version 4.x.
set -euo pipefail

log() { printf 'install-criu: %s\n' "$*" >&2; }
die() { printf 'install-criu: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ $(id -u) == 0 ]]; then
    default_prefix=/opt/thaw/criu
else
    default_prefix="$HOME/.local/share/thaw/criu"
fi
PREFIX="${THAW_CRIU_PREFIX:-$default_prefix}"
PREFIX="${PREFIX%/}"
SUITE="${THAW_CRIU_SUITE:-trixie}"
WRAPPER="$PREFIX/bin/criu"

# True when the wrapper exists and runs a CRIU 4.x or later.
criu_ok() {
    local v
    [[ -x $WRAPPER ]] || return 1
    v=$("$WRAPPER" --version 2>/dev/null | sed -n 's/^Version: *//p') || return 1
    [[ $v =~ ^([4-9]|[1-9][0-9])\. ]]
}

if criu_ok; then
    log "criu $("$WRAPPER" --version | sed -n 's/^Version: *//p') already installed: $WRAPPER"
    exit 0
fi

# Serialise concurrent runs (several `make setup` at once); re-check after.
mkdir -p "$(dirname "$PREFIX")"
exec 8>"$PREFIX.lock"
flock 8
if criu_ok; then
    log "criu installed meanwhile by another run: $WRAPPER"
    exit 0
fi

# debian_mirror: the mirror this machine's apt already uses (never a hard-coded host).
. "$(dirname "${BASH_SOURCE[0]}")/debian-mirror.sh"

command -v apt-get >/dev/null || die "apt-get not found: this script needs a Debian-based host"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"
MIRROR=$(debian_mirror) || die "no Debian mirror found in /etc/apt/sources.list{,.d/*}; set THAW_DEBIAN_MIRROR"
ARCH=$(dpkg --print-architecture)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r $KEYRING ]] || die "$KEYRING missing (package debian-archive-keyring)"

log "installing criu from Debian $SUITE ($MIRROR) into $PREFIX"
work=$(mktemp -d "${TMPDIR:-/tmp}/thaw-criu.XXXXXX")
stage="$PREFIX.new.$$"
cleanup() { rm -rf "$work" "$stage"; }
trap cleanup EXIT
chmod 755 "$work"   # apt drops to user _apt to download; it must reach $work

# A private apt: its own sources list, lists dir, cache and an empty dpkg
# status (so the dependency closure below is complete, whatever the host has).
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
printf 'deb [signed-by=%s] %s %s main\n' "$KEYRING" "$MIRROR" "$SUITE" >"$work/sources.list"
: >"$work/status"
APT_OPTS=(
    -o "Dir::Etc::SourceList=$work/sources.list"
    -o "Dir::Etc::SourceParts=$work/no-parts.d"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache"
    -o "Dir::State::status=$work/status"
    -o "APT::Architecture=$ARCH"
    -o "APT::Architectures=$ARCH"
    -o "Acquire::Languages=none"
)
if [[ $(id -u) == 0 ]] && id _apt >/dev/null 2>&1; then
    chown _apt "$work/debs" "$work/lists/partial" "$work/cache/archives/partial"
else
    # Not root: apt cannot drop privileges to _apt, and must not try.
    APT_OPTS+=(-o "APT::Sandbox::User=$(id -un)")
fi

apt-get "${APT_OPTS[@]}" -q update >"$work/update.log" 2>&1 ||
    { cat "$work/update.log" >&2; die "apt-get update for $SUITE failed"; }

# Dependency closure of criu (Depends and Pre-Depends only). Lines at column 0
# of `apt-cache depends --recurse` are the packages; <virtual> ones have a
# real provider listed too.
mapfile -t pkgs < <(
    apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests \
        --no-conflicts --no-breaks --no-replaces --no-enhances criu |
        grep -E '^[a-z0-9]' | sort -u
)
[[ ${#pkgs[@]} -gt 1 ]] || die "could not resolve criu's dependencies in $SUITE"
log "downloading ${#pkgs[@]} packages: ${pkgs[*]}"
(cd "$work/debs" && apt-get "${APT_OPTS[@]}" -q download "${pkgs[@]}") >"$work/download.log" 2>&1 ||
    { cat "$work/download.log" >&2; die "apt-get download failed"; }

rm -rf "$stage"
mkdir -p "$stage"
for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$stage"
done
[[ -x $stage/usr/sbin/criu ]] || die "criu binary missing from the $SUITE package"

# The loader and library dirs as laid out in the prefix (trixie is merged-usr:
# the loader is usr/lib64/ld-linux-x86-64.so.2 on amd64).
loader=""
for cand in "$stage"/usr/lib64/ld-linux*.so.* "$stage"/usr/lib/ld-linux*.so.* \
    "$stage"/usr/lib/*-linux-gnu*/ld-linux*.so.* "$stage"/lib64/ld-linux*.so.*; do
    if [[ -e $cand ]]; then loader=$cand; break; fi
done
[[ -n $loader ]] || die "no ld-linux loader found in the downloaded libc6"
mapfile -t libdirs < <(find "$stage" -name 'lib*.so*' \( -type f -o -type l \) -printf '%h\n' |
    grep -v '/gconv$' | sort -u)
loader=${loader/#"$stage"/"$PREFIX"}
libpath=""
for d in "${libdirs[@]}"; do libpath+="${libpath:+:}${d/#"$stage"/"$PREFIX"}"; done

# Record what went in: it belongs to the node's fingerprint.
{
    printf 'suite=%s\nmirror=%s\n' "$SUITE" "$MIRROR"
    # shellcheck disable=SC2016 # ${...} is dpkg-deb's format, not the shell's
    for deb in "$work"/debs/*.deb; do dpkg-deb -W --showformat='${Package}=${Version}\n' "$deb"; done
} >"$stage/PACKAGES"

# Absolute paths, no forks: runc execs this on every checkpoint and restore.
mkdir -p "$stage/bin"
cat >"$stage/bin/criu" <<EOF
#!/bin/sh
# CRIU from Debian $SUITE with its own libc, installed by thaw's deploy/install-criu.sh.
exec $loader --argv0 criu --library-path $libpath $PREFIX/usr/sbin/criu "\$@"
EOF
chmod 755 "$stage/bin/criu"

# Swap the new prefix in; an older, broken one goes away.
if [[ -e $PREFIX ]]; then
    mv "$PREFIX" "$PREFIX.old.$$"
    rm -rf "$PREFIX.old.$$"
fi
mv "$stage" "$PREFIX"

fail() {
    # Remove the wrapper so that the next run tries again instead of skipping.
    rm -f "$WRAPPER"
    die "$*"
}
if "$loader" --list --library-path "$libpath" "$PREFIX/usr/sbin/criu" | grep -q 'not found'; then
    "$loader" --list --library-path "$libpath" "$PREFIX/usr/sbin/criu" | grep 'not found' >&2
    fail "criu's libraries are incomplete in $PREFIX"
fi
criu_ok || fail "$WRAPPER does not report a 4.x version"

if [[ $(id -u) != 0 ]]; then
    log "installed $WRAPPER ($("$WRAPPER" --version | sed -n 's/^Version: *//p')); 'criu check' needs root, skipped"
    exit 0
fi
check=$("$WRAPPER" check 2>&1) || true
if ! grep -q 'Looks good' <<<"$check"; then
    printf '%s\n' "$check" >&2
    fail "'$WRAPPER check' failed: this kernel cannot checkpoint/restore with CRIU"
fi
log "installed $WRAPPER ($("$WRAPPER" --version | sed -n 's/^Version: *//p')), criu check: Looks good"
