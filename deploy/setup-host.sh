#!/usr/bin/env bash
# Host set-up for a thaw node (the system part of `make setup`):
#   1. Debian packages the platform runs: postgresql (binaries for the embedded
#      control-plane database), runc (containers), iptables (CRIU's network
#      lock), debootstrap (the default rootfs), zstd (snapshot packing),
#      iproute2 (container networking), slirp4netns (build steps' outbound-only
#      network), acl (setfacl: containers' host uid may search the state dir, no
#      one else), skopeo (images from registries) and
#      docker-registry (the registry server the tests push to), chromium (the
#      headless browser the dashboard's tests drive);
#   2. CRIU 4.x in a private prefix (deploy/install-criu.sh);
#   3. the default container rootfs (deploy/make-rootfs.sh), and the bases of
#      other Python versions (THAW_EXTRA_ROOTFS, default "trixie forky
#      forky:3.15": Python 3.13, 3.14 and 3.15).
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

PACKAGES=(postgresql runc iptables debootstrap zstd iproute2 slirp4netns acl skopeo docker-registry chromium)
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
    # The bases of other Python versions (Image.debian_slim(python_version=)):
    # trixie has 3.13, forky 3.14 (its python3) and 3.15 (suite:version).
    # Optional: a node without one refuses that version at deploy, naming
    # those it has.
    for base in ${THAW_EXTRA_ROOTFS-trixie forky forky:3.15}; do
        suite=${base%%:*} pyver=${base#"$suite"}
        pyver=${pyver#:}
        THAW_ROOTFS=${THAW_ROOTFS:+$(dirname "$THAW_ROOTFS")/$suite-python$pyver} \
            THAW_ROOTFS_SUITE=$suite THAW_ROOTFS_PYTHON=$pyver bash "$here/make-rootfs.sh" ||
            log "WARNING: no $base rootfs (see above): its Python version is not offered here"
    done
else
    # debootstrap needs root; containers need root too, so nothing is lost.
    rootfs="${THAW_ROOTFS:-$HOME/.local/share/thaw/rootfs/bookworm-python}"
    if [[ -f $rootfs/etc/thaw-rootfs ]]; then
        log "rootfs present: $rootfs"
    else
        log "not root: skipping the container rootfs (build it with: sudo bash $here/make-rootfs.sh)"
    fi
fi

# Containers' user namespaces map their ids 0..65535 to host ids
# 100000..165535 (THAW_CONTAINER_ID_RANGE): reserved for root in /etc/subuid
# and /etc/subgid, so that useradd never hands them to a login user.
id_range=${THAW_CONTAINER_ID_RANGE:-100000:65536}
if is_root; then
    for f in /etc/subuid /etc/subgid; do
        touch "$f"
        grep -qx "root:$id_range" "$f" || echo "root:$id_range" >>"$f"
    done
fi
# Kernel 5.19+: overlayfs on idmapped lower dirs (how containers' roots are mounted).
if [[ $(printf '%s\n' 5.19 "$(uname -r)" | sort -V | head -n1) != 5.19 ]]; then
    log "WARNING: kernel $(uname -r) is older than 5.19: containers' idmapped roots will not mount"
fi

# cgroups: runc needs them mounted (v1 or v2 both work with bookworm's runc).
if ! grep -qE '^cgroup2? ' /proc/mounts; then
    log "WARNING: no cgroup filesystem is mounted; runc will not start containers"
fi
log "host ready: $(runc --version 2>/dev/null | head -n1), kernel $(uname -r)$(is_root || echo ' (not root: containers need root)')"
