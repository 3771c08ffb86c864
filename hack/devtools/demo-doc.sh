#!/usr/bin/env bash
# demo-doc: runs the demo's story on the local cluster (DEMO_CLUSTER=local) and writes what it
# printed, stdout and stderr as a terminal-less run shows them, to docs/demo.md. The charts
# come from KGPU_GPU_OPERATOR_CHART (as the tests read it), else ../shared/testdata/charts.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${KGPU_GPU_OPERATOR_CHART:-}" ]; then
  chart=$(ls "$root"/../shared/testdata/charts/gpu-operator-*.tgz 2>/dev/null | head -1)
  [ -n "$chart" ] && export KGPU_GPU_OPERATOR_CHART="$chart"
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$(date +%s)
DEMO_CLUSTER=local "$root/hack/devtools/demo.sh" >"$out" 2>&1
rc=$?
took=$(( $(date +%s) - start ))
{
  echo "# The demo, as it ran"
  echo
  echo "\`make demo-doc\` wrote this page: \`make demo\` with no cluster at hand (DEMO_CLUSTER=local),"
  echo "on the local control plane of hack/ with simulated GPU nodes whose fake hosts run the real"
  echo "node agent (hack/testenv/simnodes: each node shows what its host says; the GPU Operator's"
  echo "controller, driver container and device plugin are played, since kwok's nodes run no"
  echo "container). Run on $(date -u +%Y-%m-%d) at commit $(git -C "$root" rev-parse --short HEAD), ${took} s with the"
  echo "cluster's binaries already built (exit $rc). Chart paths are this machine's."
  echo
  echo "The story: GPU nodes that serve no GPU yet — one with nouveau loaded and no driver, three"
  echo "with host drivers whose containerd lacks the nvidia runtime, one with GPUs and nothing else;"
  echo "prep's check says why; \`up --dry-run\` shows the plan, \`up --yes\` runs it (host changes,"
  echo "two nodes rebooted one at a time, the GPU Operator, the CUDA sample on every GPU node);"
  echo "then the driver logs an XID on one node and \`doctor\` names the broken link and the fix."
  echo
  echo '```'
  sed -e "s|$root/||g" "$out"
  echo '```'
} >"$root/docs/demo.md"
echo "docs/demo.md: ${took} s, exit $rc"
exit $rc
