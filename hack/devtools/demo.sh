#!/usr/bin/env bash
# The demo: the main commands of kubectl gpu, run the way a user runs them (through
# kubectl's plugin lookup). Against the current cluster when one answers and
# DEMO_CLUSTER is not "local" — read-only there: inventory and prep's check mode (short-lived
# unprivileged Jobs with the host mounted read-only, removed when they report); otherwise
# against the local cluster under hack/, started for the demo and stopped after it, where the
# simulated GPU nodes answer prep with the real agent on fake host roots and verify with the
# vectoradd sample's output, so the whole path runs: inventory, prep, operator values, verify.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$root/bin:$PATH"

# step runs one command, shows it and its exit code (1 means "found failures": prep on
# nodes that are not ready yet is expected to say so).
step() {
  printf '\n$ kubectl %s\n' "$*"
  kubectl "$@"
  local rc=$?
  [ $rc = 0 ] || printf '(exit %d)\n' "$rc"
  [ $rc -le 1 ] || exit $rc
}

read_only_steps() {
  step gpu version
  step gpu nodes --all -o wide
  step gpu prep
}

local_steps() {
  read_only_steps
  if [ -n "${KGPU_GPU_OPERATOR_CHART:-}" ]; then
    step gpu operator values --chart "$KGPU_GPU_OPERATOR_CHART"
  else
    printf '\n(operator values skipped: KGPU_GPU_OPERATOR_CHART names no chart; the real command fetches it from NVIDIA)\n'
  fi
  step gpu verify
  step gpu nodes
}

if [ "${DEMO_CLUSTER:-}" != local ] && kubectl version --request-timeout=5s >/dev/null 2>&1; then
  echo "demo: using the current cluster ($(kubectl config current-context)), read-only; DEMO_CLUSTER=local uses a local one" >&2
  read_only_steps
  printf '\nnext: kubectl gpu prep --apply (shows the changes first), kubectl gpu operator install --wait, kubectl gpu verify\n'
  exit 0
fi
echo "demo: no cluster answers; starting the local cluster (hack/devtools/cluster)" >&2
echo "demo: to keep one running and point KUBECONFIG at it: make cluster, then export KUBECONFIG=<printed path>" >&2
export -f step read_only_steps local_steps
cd "$root" && go run ./hack/devtools/cluster run -- bash -c local_steps
