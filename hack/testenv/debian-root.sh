#!/usr/bin/env bash
# Prints the path of a tarball of a minimal Debian bookworm root (mmdebstrap's "apt"
# variant: dpkg, apt, gpgv) for the package-install tests, which unpack it and run the real
# apt-get inside it with chroot. Built once from the machine's Debian package sources into
# $KGPU_CACHE_DIR/debian-root/bookworm-apt.tar (default ~/.cache/kubectl-gpu).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
out=$KGPU_CACHE_DIR/debian-root/bookworm-apt.tar
if [ -f "$out" ]; then echo "$out"; exit 0; fi
command -v mmdebstrap >/dev/null || { echo "debian-root: mmdebstrap is needed (apt-get install mmdebstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "debian-root: needs root (mmdebstrap --mode=root)" >&2; exit 1; }
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p "$(dirname "$out")"
mmdebstrap --quiet --format=tar --variant=apt --mode=root bookworm "$out.tmp" "$mirror" >&2
mv "$out.tmp" "$out"
echo "$out"
