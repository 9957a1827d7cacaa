#!/usr/bin/env bash
# Host set-up for a thaw node (the system part of `make setup`):
#   1. Debian packages the platform runs: postgresql (binaries for the embedded
#      control-plane database), runc (containers), iptables (CRIU's network
#      lock), debootstrap (the default rootfs), zstd (snapshot packing),
#      iproute2 (container networking), slirp4netns (build steps' outbound-only
#      network), skopeo (images from registries) and
#      docker-registry (the registry server the tests push to), chromium (the
#      headless browser the dashboard's tests drive);
#   2. CRIU 4.x in a private prefix (deploy/install-criu.sh);
#   3. the default container rootfs (deploy/make-rootfs.sh).
#
# Idempotent: each step first checks whether its work is already done, so a
# second run takes well under a second. Safe to run concurrently (file locks).
# As a non-root user it installs nothing system-wide: it says what is missing
# and how to install it, and fails only if something is missing.
#
# Environment: THAW_CRIU_PREFIX, THAW_ROOTFS, THAW_DEBIAN_MIRROR (see the two
# scripts above); THAW_SKIP_HOST_SETUP=1 skips all of this.
set -euo pipefail

log() { printf 'setup-host: %s\n' "$*" >&2; }
die() { printf 'setup-host: ERROR: %s\n' "$*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [[ ${THAW_SKIP_HOST_SETUP:-0} == 1 ]]; then
    log "THAW_SKIP_HOST_SETUP=1: skipping host set-up"
    exit 0
fi
command -v dpkg-query >/dev/null ||
    die "dpkg-query not found: thaw's host set-up supports Debian (bookworm) hosts only"

PACKAGES=(postgresql runc iptables debootstrap zstd iproute2 slirp4netns skopeo docker-registry chromium)
# `make bench` adds what only the benchmarks use (buildah, the peer the builder is measured against).
# shellcheck disable=SC2206
PACKAGES+=(${THAW_BENCH_PACKAGES:-})
is_root() { [[ $(id -u) == 0 ]]; }

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        # db:Status-Status is "installed" only for a fully configured package
        # (not for "config-files" left by a removal, nor half-installed).
        if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) != installed ]]; then
            printf '%s\n' "$p"
        fi
    done
}

mapfile -t missing < <(missing_packages)
if ((${#missing[@]})); then
    if ! is_root; then
        log "missing Debian packages: ${missing[*]}"
        log "install them as root with:"
        log "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
        log "or run: sudo make setup"
        exit 1
    fi
    # Serialise with other runs of this script; apt/dpkg would otherwise fail
    # on their own lock. Then look again: another run may have installed them.
    lockdir=/run/lock
    [[ -d $lockdir && -w $lockdir ]] || lockdir=/tmp
    exec 9>"$lockdir/thaw-setup-host.lock"
    flock 9
    mapfile -t missing < <(missing_packages)
fi
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Wait for another apt/dpkg (unattended-upgrades, ...) instead of failing.
    apt_opts=(-q -o DPkg::Lock::Timeout=300)
    # A failing third-party source must not stop us: the lists we have may do.
    apt-get "${apt_opts[@]}" update >/dev/null ||
        log "WARNING: apt-get update failed (see above); trying to install anyway"
    apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) || die "still missing after apt-get install: ${missing[*]}"
    # Only its binary is wanted (tests run their own): not the system service
    # Debian starts on port 5000.
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
fi
exec 9>&- # release the apt lock (the scripts below take their own)

bash "$here/install-criu.sh"

if is_root; then
    bash "$here/make-rootfs.sh"
else
    # debootstrap needs root; containers need root too, so nothing is lost.
    rootfs="${THAW_ROOTFS:-$HOME/.local/share/thaw/rootfs/bookworm-python}"
    if [[ -f $rootfs/etc/thaw-rootfs ]]; then
        log "rootfs present: $rootfs"
    else
        log "not root: skipping the container rootfs (build it with: sudo bash $here/make-rootfs.sh)"
    fi
fi

# cgroups: runc needs them mounted (v1 or v2 both work with bookworm's runc).
if ! grep -qE '^cgroup2? ' /proc/mounts; then
    log "WARNING: no cgroup filesystem is mounted; runc will not start containers"
fi
log "host ready: $(runc --version 2>/dev/null | head -n1), kernel $(uname -r)$(is_root || echo ' (not root: containers need root)')"
