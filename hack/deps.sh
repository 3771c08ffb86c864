#!/usr/bin/env bash
# Installs what the tests need from the machine's package manager, only when missing.
# Packages are only ever added, never removed.
set -euo pipefail
need=()
command -v kubectl >/dev/null || need+=(kubernetes-client)
command -v git >/dev/null || need+=(git)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "deps: installing ${need[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "deps: please install: ${need[*]}" >&2
    exit 1
  fi
fi
