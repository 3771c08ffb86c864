#!/usr/bin/env bash
# Prints a directory holding Debian's run-time files of the node-agent image for ARCH
# (amd64 or arm64): libc, and util-linux's nsenter with the libraries it loads — the same
# packages nodeimages/agent/Dockerfile installs on debian:bookworm-slim. The .deb files come
# from the machine's own apt sources through a private apt state (the machine's dpkg
# architectures and package lists are left alone) and are unpacked with dpkg-deb, once, into
# $KGPU_CACHE_DIR/sysroot/<arch> (default ~/.cache/kubectl-gpu).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../testenv/versions.sh
. "$here/../testenv/versions.sh"
arch=${1:?usage: agent-sysroot.sh amd64|arm64}
case $arch in amd64|arm64) ;; *) echo "agent-sysroot: unsupported architecture $arch" >&2; exit 2;; esac
root=$KGPU_CACHE_DIR/sysroot/$arch
pkgs=(libc6 util-linux libselinux1 libpcre2-8-0)
if [ -f "$root/.complete" ]; then echo "$root"; exit 0; fi
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
  echo "agent-sysroot: apt-get and dpkg-deb are needed to fetch Debian's $arch packages" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
apt_opts=(-q -o "APT::Architecture=$arch" -o "APT::Architectures::=$arch"
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "Dir::State::status=/dev/null"
  -o "APT::Sandbox::User=root")
apt-get "${apt_opts[@]}" update >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; exit 1; }
(cd "$work/debs" && apt-get "${apt_opts[@]}" download "${pkgs[@]/%/:$arch}") >>"$work/apt.log" 2>&1 ||
  { cat "$work/apt.log" >&2; exit 1; }
rm -rf "$root.tmp" && mkdir -p "$root.tmp"
for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$root.tmp"; basename "$d" >>"$root.tmp/.packages"; done
touch "$root.tmp/.complete"
rm -rf "$root" && mv "$root.tmp" "$root"
echo "agent-sysroot: $arch from $(tr '\n' ' ' <"$root/.packages")" >&2
echo "$root"
