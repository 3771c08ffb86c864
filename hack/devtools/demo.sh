#!/usr/bin/env bash
# The demo: the main commands of kubectl gpu, run the way a user runs them (through
# kubectl's plugin lookup). Against the current cluster when one answers and DEMO_CLUSTER is
# not "local" — read-only there: version, inventory, prep's check and doctor (short-lived
# check Jobs with the host mounted read-only, removed when they report). Otherwise against
# the local cluster under hack/, started for the demo and stopped after it, whose simulated
# GPU nodes run the real agent on fake host roots and say what their hosts say
# (simnodes.Coherent): the whole story runs there — inventory, prep's check, up's plan and
# run, and doctor on a node that breaks.
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
  step gpu doctor
}

# The local cluster's story, one screen per step: GPU nodes that serve no GPU yet (their hosts
# are coherent with what the nodes show: nouveau on one, host drivers on others), the plan
# and the run of `up` (prep with a simulated reboot, the chart, verify), then an XID on one
# node and doctor naming the broken link.
local_steps() {
  step gpu version
  step gpu nodes --all -o wide
  step gpu prep
  local chart=()
  if [ -n "${KGPU_GPU_OPERATOR_CHART:-}" ]; then
    chart=(--chart "$KGPU_GPU_OPERATOR_CHART")
  elif [ -n "${KGPU_DEVICE_PLUGIN_CHART:-}" ]; then
    chart=(--stack device-plugin --chart "$KGPU_DEVICE_PLUGIN_CHART")
  else
    printf '\n(up skipped: neither KGPU_GPU_OPERATOR_CHART nor KGPU_DEVICE_PLUGIN_CHART names a chart, and the local cluster reaches no chart repository)\n'
    step gpu doctor
    return
  fi
  step gpu up --dry-run "${chart[@]}"
  step gpu up --yes "${chart[@]}"
  step gpu nodes
  local node=gpu-a100-1 log="$KGPU_SIM_HOSTS/gpu-a100-1/var/log/kern.log"
  printf '\n# %s: the driver logs XID 48 (a double-bit ECC error) in the kernel log\n' "$node"
  mkdir -p "$(dirname "$log")"
  printf '%s kernel: [ 6000.200000] NVRM: Xid (PCI:0000:08:00): 48, pid=%s, name=%s, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.\n' \
    "$(date '+%b %e %H:%M:%S') $node" "'<unknown>'" "<unknown>" >>"$log"
  step gpu doctor "$node"
}

if [ "${DEMO_CLUSTER:-}" != local ] && kubectl version --request-timeout=5s >/dev/null 2>&1; then
  echo "demo: using the current cluster ($(kubectl config current-context)), read-only; DEMO_CLUSTER=local uses a local one" >&2
  read_only_steps
  printf '\nnext: kubectl gpu up --dry-run (the plan: host changes, the chart and its values), then kubectl gpu up\n'
  exit 0
fi
echo "demo: no cluster answers; starting the local cluster (hack/devtools/cluster)" >&2
echo "demo: to keep one running and point KUBECONFIG at it: make cluster, then export KUBECONFIG=<printed path>" >&2
export -f step read_only_steps local_steps
cd "$root" && go run ./hack/devtools/cluster run -- bash -c local_steps
