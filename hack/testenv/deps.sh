#!/usr/bin/env bash
# Installs what the tests need from the machine's package manager, only when missing.
# Packages are only ever added, never removed.
set -euo pipefail
need=() want=()
command -v kubectl >/dev/null || need+=(kubernetes-client)
command -v git >/dev/null || need+=(git)
# The real node of the local cluster (hack/testenv/localcluster/realnode.go): containerd, runc and
# the CNI plugins from Debian. Best effort: its tests skip with one line where they cannot run.
command -v containerd >/dev/null || want+=(containerd)
command -v runc >/dev/null || want+=(runc)
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || want+=(containernetworking-plugins)
command -v ip >/dev/null || want+=(iproute2)
command -v unshare >/dev/null || want+=(util-linux)
# The arm64 node-agent image (make image, test/dist): a cross C toolchain for the agent's cgo
# and qemu-user to run what was built. Best effort too: that part of the test skips.
command -v aarch64-linux-gnu-gcc >/dev/null || want+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || want+=(qemu-user)
# The package-install tests: a Debian root made by mmdebstrap (hack/testenv/debian-root.sh).
command -v mmdebstrap >/dev/null || want+=(mmdebstrap)
# KGPU_DEPS=kubectl: only what the demo needs (kubectl, for the plugin lookup).
[ "${KGPU_DEPS:-}" = kubectl ] && want=()
apt_ok() { command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; }
if [ $((${#need[@]} + ${#want[@]})) -gt 0 ] && apt_ok; then
  apt-get update -qq >/dev/null || true
fi
if [ ${#need[@]} -gt 0 ]; then
  if apt_ok; then
    echo "deps: installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "deps: please install: ${need[*]}" >&2
    exit 1
  fi
fi
if [ ${#want[@]} -gt 0 ]; then
  if apt_ok && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null; then
    echo "deps: installed ${want[*]} (real node)" >&2
  else
    echo "deps: could not install ${want[*]}: the real-node tests will be skipped" >&2
  fi
fi
