#!/usr/bin/env bash
# The demo: the main commands of kubectl gpu, run the way a user runs them (through
# kubectl's plugin lookup). Against the current cluster when one answers and
# DEMO_CLUSTER is not "local"; otherwise against the local cluster under hack/, which is
# started for the demo and stopped after it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/bin:$PATH"

steps() {
  set -x
  kubectl gpu version
  kubectl gpu nodes
  kubectl gpu nodes --all -o wide
  kubectl gpu nodes -o json | head -n 30
  { set +x; } 2>/dev/null
}

if [ "${DEMO_CLUSTER:-}" != local ] && kubectl version --request-timeout=5s >/dev/null 2>&1; then
  echo "demo: using the current cluster ($(kubectl config current-context)); DEMO_CLUSTER=local uses a local one" >&2
  steps
  exit 0
fi
echo "demo: no cluster answers; starting the local cluster (hack/cluster)" >&2
echo "demo: to keep one running and point KUBECONFIG at it: make cluster, then export KUBECONFIG=<printed path>" >&2
export -f steps
cd "$root" && go run ./hack/cluster run -- bash -c steps
