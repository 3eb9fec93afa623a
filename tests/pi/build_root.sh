#!/usr/bin/env bash
# Build (or reuse) an emulated "Raspberry Pi": an arm64 Debian bookworm root (the base of 64-bit
# Raspberry Pi OS) run under qemu-user, with edgekit installed the way README tells a Pi user.
# Used by tests/test_pi_emulated.py; .ci/run calls it. Needs root. Fails loudly, saying why.
#
#   bash tests/pi/build_root.sh            # root in $EDGEKIT_PI_ROOT (default /var/cache/edgekit-pi/root)
set -euo pipefail
ROOT="${EDGEKIT_PI_ROOT:-/var/cache/edgekit-pi/root}"
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
MIRROR="${EDGEKIT_PI_MIRROR:-http://deb.debian.org/debian}"
fail() { echo "build_root.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (debootstrap, chroot and binfmt registration need it)"

missing=0
for needed in /usr/sbin/debootstrap /usr/bin/qemu-aarch64-static /usr/sbin/update-binfmts /usr/sbin/sshd /usr/bin/ssh; do
    [ -e "$needed" ] || missing=1
done
if [ "$missing" = 1 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static binfmt-support \
        openssh-server openssh-client >/dev/null
fi

# arm64 binaries must run here: qemu's binfmt entry, with the F flag so it works inside a chroot
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
        || fail "cannot mount binfmt_misc (/proc/sys/fs/binfmt_misc): this machine cannot run arm64 binaries"
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
    || fail "no qemu-aarch64 entry in /proc/sys/fs/binfmt_misc after update-binfmts: cannot run arm64 binaries"

if [ ! -e "$ROOT/.debootstrap-done" ]; then
    rm -rf "$ROOT"
    mkdir -p "$(dirname "$ROOT")"
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-pip,openssh-server,ca-certificates bookworm "$ROOT" "$MIRROR" \
        || fail "debootstrap of arm64 bookworm from $MIRROR failed"
    touch "$ROOT/.debootstrap-done"
fi
[ "$(chroot "$ROOT" uname -m)" = aarch64 ] || fail "chroot into $ROOT does not report aarch64"

# pip inside needs this machine's pip configuration, CA bundle and DNS; /proc but NOT /sys: with the
# host's /sys visible, onnxruntime's CPU detection segfaults under qemu.
mkdir -p "$ROOT/etc/xdg/pip" "$ROOT/etc/ssl/certs"
[ -e /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
[ -e /etc/xdg/pip/constraints.txt ] && cp /etc/xdg/pip/constraints.txt "$ROOT/etc/xdg/pip/constraints.txt"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
# XNNPACK's CPU detection (cpuinfo) reads these two sysfs files and, without them, gives up: LiteRT then
# runs no XNNPACK at all (no fp16 arithmetic, no CompiledModel). Plain files, not the host's /sys (above).
mkdir -p "$ROOT/sys/devices/system/cpu"
echo 0 > "$ROOT/sys/devices/system/cpu/possible"
echo 0 > "$ROOT/sys/devices/system/cpu/present"

# the project, as a Pi user installs it: engines only, never TensorFlow
rm -rf "$ROOT/opt/edgekit-src" && mkdir -p "$ROOT/opt/edgekit-src"
(cd "$REPO" && git ls-files -z 2>/dev/null || find . -type f -not -path './.*' -print0) \
    | (cd "$REPO" && xargs -0 cp --parents -t "$ROOT/opt/edgekit-src")
run() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"; }
[ -x "$ROOT/opt/venv/bin/python" ] || run python3 -m venv /opt/venv
run /opt/venv/bin/pip install -q "/opt/edgekit-src[litert,onnx,openvino,rknn]" \
    || fail "pip install of edgekit[litert,onnx,openvino,rknn] inside the arm64 root failed"
run /opt/venv/bin/pip install -q --force-reinstall --no-deps /opt/edgekit-src >/dev/null
# a second install with no engine at all, to see what a device without one says
[ -x "$ROOT/opt/bare/bin/python" ] || run python3 -m venv /opt/bare
run /opt/bare/bin/pip install -q --force-reinstall /opt/edgekit-src >/dev/null \
    || fail "pip install of bare edgekit inside the arm64 root failed"
if run /opt/venv/bin/python -c "import tensorflow" 2>/dev/null; then fail "TensorFlow got installed on the device"; fi
[ -e "$ROOT/etc/ssh/ssh_host_ed25519_key" ] || run ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
mkdir -p "$ROOT/run/sshd"
date -u +%FT%TZ > "$ROOT/.edgekit-ready"
echo "arm64 root ready: $ROOT ($(run /opt/venv/bin/python -c 'import platform; print(platform.machine())'))"
