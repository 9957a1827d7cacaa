#!/usr/bin/env bash
# Build a container root filesystem: Debian minbase with python3, pip and CA
# certificates, made "slim" (no docs, man pages, locales, apt lists). The
# default one (bookworm, Python 3.11) is what functions without an image run
# on; each one is a base `Image.debian_slim(python_version=...)` builds on:
# one Debian suite per Python version (bookworm 3.11, trixie 3.13, forky
# 3.14), beside each other under /var/lib/thaw/rootfs/<suite>-python.
#
# Containers mount it read-only with a writable overlay/tmpfs on top, so it is
# built once per node, into a temp dir beside the target, and renamed into
# place atomically: a reader never sees a half-built tree. The marker file
# etc/thaw-rootfs inside it says the build finished.
#
# Environment:
#   THAW_ROOTFS_SUITE   the Debian suite (default bookworm)
#   THAW_ROOTFS_PYTHON  a python3.X the suite has besides its python3 (forky:
#                       3.15), made the rootfs's python3: /usr/local/bin/python3
#                       (default: none, the suite's python3)
#   THAW_ROOTFS         target dir (default /var/lib/thaw/rootfs/<suite>-python[X.Y]
#                       as root, $HOME/.local/share/thaw/rootfs/<suite>-python[X.Y]
#                       otherwise)
#   THAW_DEBIAN_MIRROR  Debian mirror URI (default: the one this machine's apt
#                       sources name; no host name is hard-coded here)
set -euo pipefail

log() { printf 'make-rootfs: %s\n' "$*" >&2; }
die() { printf 'make-rootfs: ERROR: %s\n' "$*" >&2; exit 1; }

SUITE=${THAW_ROOTFS_SUITE:-bookworm}
[[ $SUITE =~ ^[a-z]+$ ]] || die "THAW_ROOTFS_SUITE=$SUITE is not a Debian suite name"
PYVER=${THAW_ROOTFS_PYTHON:-}
[[ -z $PYVER || $PYVER =~ ^3\.[0-9]+$ ]] || die "THAW_ROOTFS_PYTHON=$PYVER is not a 3.X version"
INCLUDE=python3,python3-pip,ca-certificates
PYTHON=/usr/bin/python3
if [[ -n $PYVER ]]; then
    INCLUDE+=,python$PYVER
    PYTHON=/usr/local/bin/python3
fi
if [[ $(id -u) == 0 ]]; then
    default_rootfs=/var/lib/thaw/rootfs/$SUITE-python$PYVER
else
    default_rootfs="$HOME/.local/share/thaw/rootfs/$SUITE-python$PYVER"
fi
ROOTFS="${THAW_ROOTFS:-$default_rootfs}"
ROOTFS="${ROOTFS%/}"
MARKER=etc/thaw-rootfs

if [[ -f $ROOTFS/$MARKER ]]; then
    log "rootfs already built: $ROOTFS"
    exit 0
fi
[[ $(id -u) == 0 ]] || die "building $ROOTFS needs root (debootstrap); run: sudo bash $0"
command -v debootstrap >/dev/null ||
    die "debootstrap not found; install it: apt-get install -y debootstrap"
if [[ -e $ROOTFS ]]; then
    # Never delete something we did not build (THAW_ROOTFS may point anywhere).
    die "$ROOTFS exists but has no $MARKER: not a finished thaw rootfs; remove it and run again"
fi

parent=$(dirname "$ROOTFS")
mkdir -p "$parent"
exec 8>"$ROOTFS.lock"
flock 8
if [[ -f $ROOTFS/$MARKER ]]; then
    log "rootfs built meanwhile by another run: $ROOTFS"
    exit 0
fi

# Remove a tree we built, after unmounting what debootstrap may have left
# mounted inside it (/proc, /sys) when it failed half-way.
remove_tree() {
    local d=$1 m
    if [[ ! -d $d ]]; then rm -f "$d"; return 0; fi
    findmnt -rn -o TARGET | awk -v p="$d/" 'index($0, p) == 1' | sort -r |
        while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$d"
}

# Leftovers of interrupted runs (we hold the lock: nobody else is building).
tmpbase="$parent/.$(basename "$ROOTFS").tmp"
for old in "$tmpbase".*; do
    if [[ -e $old ]]; then remove_tree "$old"; fi
done
tmp="$tmpbase.$$"
trap 'remove_tree "$tmp"; rm -f "$tmp.log"' EXIT

# debian_mirror: the mirror this machine's apt already uses (never a hard-coded host).
. "$(dirname "${BASH_SOURCE[0]}")/debian-mirror.sh"
MIRROR=$(debian_mirror) || die "no Debian mirror found in /etc/apt/sources.list{,.d/*}; set THAW_DEBIAN_MIRROR"

# A suite newer than this host's debootstrap knows is made like unstable.
script=()
if [[ ! -e /usr/share/debootstrap/scripts/$SUITE ]]; then script=(/usr/share/debootstrap/scripts/sid); fi
log "building $ROOTFS from $SUITE ($MIRROR), about a minute"
mkdir -p "$tmp"
if ! debootstrap --variant=minbase --include="$INCLUDE" --components=main \
    "$SUITE" "$tmp" "$MIRROR" "${script[@]}" >"$tmp.log" 2>&1; then
    tail -n 30 "$tmp.log" >&2
    rm -f "$tmp.log"
    die "debootstrap failed (full log above, last 30 lines)"
fi
rm -f "$tmp.log"

# --- make the tree sane for a container ------------------------------------

# A container has its own network namespace: a loopback resolver of the host
# (127.0.0.53 of systemd-resolved, ...) is unreachable from it, so keep only
# the host's real nameservers. The agent may bind-mount its own file here.
rm -f "$tmp/etc/resolv.conf"
{
    echo "# thaw default rootfs: the node's non-loopback resolvers at build time."
    grep -E '^[[:space:]]*(nameserver|search|domain|options)[[:space:]]' /etc/resolv.conf 2>/dev/null |
        grep -vE '^[[:space:]]*nameserver[[:space:]]+(127\.|::1)' | awk '!seen[$0]++' || true
} >"$tmp/etc/resolv.conf"
echo thaw >"$tmp/etc/hostname"
cat >"$tmp/etc/hosts" <<'EOF'
127.0.0.1	localhost thaw
::1		localhost ip6-localhost ip6-loopback
EOF
# No init system runs in a container: a policy that forbids starting services
# keeps later `apt-get install` (image builds) from trying to.
printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
chmod 755 "$tmp/usr/sbin/policy-rc.d"
# The container is the environment: let `pip install` write to the system
# Python (PEP 668 would refuse on Debian), as `Image.pip_install` expects.
cat >"$tmp/etc/pip.conf" <<'EOF'
[global]
break-system-packages = true
root-user-action = ignore
disable-pip-version-check = true
EOF

# Slim, like Debian's "-slim" images: no docs, man pages or translations,
# now and for packages installed later.
cat >"$tmp/etc/dpkg/dpkg.cfg.d/thaw-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
find "$tmp/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete 2>/dev/null || true
find "$tmp/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$tmp"/usr/share/{man,groff,info,lintian,linda,locale}/*
# apt caches and lists: an image build runs `apt-get update` first anyway.
cat >"$tmp/etc/apt/apt.conf.d/thaw-clean" <<'EOF'
// Keep images small: drop downloaded .debs after installing them.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Acquire::Languages "none";
EOF
rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin "$tmp"/var/cache/apt/archives/*.deb
mkdir -p "$tmp/var/lib/apt/lists/partial"
rm -rf "$tmp"/var/log/* "$tmp"/root/.cache "$tmp"/tmp/*

# Another python3.X than the suite's: /usr/local/bin/python3 (first on PATH)
# names it; the suite's /usr/bin/python3 stays for Debian's own tools. Debian's
# pip (pure Python, in /usr/lib/python3/dist-packages, on every python3.X's
# path) serves it too, installing into /usr/local/lib/python3.X.
if [[ -n $PYVER ]]; then
    ln -sf "/usr/bin/python$PYVER" "$tmp/usr/local/bin/python3"
    ln -sf "/usr/bin/python$PYVER" "$tmp/usr/local/bin/python"
fi

# Check that what containers will run actually runs.
pyver=$(chroot "$tmp" "$PYTHON" -c 'import ssl, sys; print(sys.version.split()[0])') ||
    die "python3 does not run in the new rootfs"
chroot "$tmp" "$PYTHON" -m pip --version >/dev/null || die "pip does not run in the new rootfs"

cat >"$tmp/$MARKER" <<EOF
# Built by thaw's deploy/make-rootfs.sh; its presence means the build finished.
suite=$SUITE
include=$INCLUDE
mirror=$MIRROR
python=$pyver
python_path=$PYTHON
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
chmod 755 "$tmp"
mv -T "$tmp" "$ROOTFS"
trap - EXIT
log "built $ROOTFS (python $pyver, $(du -sh --one-file-system "$ROOTFS" | cut -f1))"
