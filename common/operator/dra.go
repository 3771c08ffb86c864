package operator

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// The GPU Operator's documented prerequisites of the GPUCluster (DRA) stack.
var (
	DRAMinKubernetes = version.MustParseGeneric("1.34.2")
	DRAMinDriver     = 580
)

// DRAValues are the chart's own keys that render the GPUCluster stack instead of the
// ClusterPolicy, with their reasons.
func DRAValues() []helmrelease.Derived {
	return []helmrelease.Derived{
		{Key: "clusterPolicy.deployCR", Value: false, Reason: "--dra: the GPUCluster (DRA) stack replaces the ClusterPolicy; the two cannot coexist"},
		{Key: "gpuCluster.deployCR", Value: true, Reason: "--dra: GPUs published through DRA (DeviceClasses gpu.nvidia.com, mig.nvidia.com) by NVIDIA's DRA driver"},
	}
}

// DRAPrerequisites checks what the GPUCluster stack needs: Kubernetes ≥ 1.34.2 (DRA GA),
// every GPU node's host driver ≥ 580 where prep found one, a CDI-capable containerd
// (2.x, or 1.7 with CDI on — which only prep's check of the config can tell, so 1.7 is a
// warning), and no ClusterPolicy in the cluster. It returns the warnings, and an exit-2
// error naming every unmet prerequisite.
func (c *Client) DRAPrerequisites(ctx context.Context, serverVersion string, nodes []corev1.Node) ([]string, error) {
	var problems, warnings []string
	if v, err := version.ParseGeneric(serverVersion); err != nil {
		problems = append(problems, fmt.Sprintf("cannot read the server's version %q", serverVersion))
	} else if v.LessThan(DRAMinKubernetes) {
		problems = append(problems, fmt.Sprintf("Kubernetes %s is older than %s (DRA's resource.k8s.io/v1 as the GPUCluster needs it)", serverVersion, DRAMinKubernetes))
	}
	var oldDriver, oldRuntime, cdiUnknown []string
	for i := range nodes {
		n := &nodes[i]
		if !inventory.IsGPUNode(n) {
			continue
		}
		if f, _ := rep.FactsFrom(n.Annotations); f.DriverVersion != "" {
			d := f.DriverVersion
			if major, err := strconv.Atoi(strings.SplitN(d, ".", 2)[0]); err == nil && major < DRAMinDriver {
				oldDriver = append(oldDriver, n.Name+" "+d)
			}
		}
		rt := n.Status.NodeInfo.ContainerRuntimeVersion
		if v, ok := strings.CutPrefix(rt, "containerd://"); ok {
			switch {
			case strings.HasPrefix(v, "1.7"):
				cdiUnknown = append(cdiUnknown, n.Name)
			case strings.HasPrefix(v, "1."):
				oldRuntime = append(oldRuntime, n.Name+" "+rt)
			}
		}
	}
	if len(oldDriver) > 0 {
		problems = append(problems, fmt.Sprintf("host drivers older than %d on %s (upgrade them, or let the operator's driver serve those nodes)", DRAMinDriver, strings.Join(oldDriver, ", ")))
	}
	if len(oldRuntime) > 0 {
		problems = append(problems, fmt.Sprintf("containerd without CDI on %s (containerd ≥ 1.7 with CDI, or 2.x, is needed)", strings.Join(oldRuntime, ", ")))
	}
	if len(cdiUnknown) > 0 {
		warnings = append(warnings, fmt.Sprintf("containerd 1.7 on %s: CDI must be on (enable_cdi = true in its CRI plugin config)", strings.Join(cdiUnknown, ", ")))
	}
	_, err := c.Dyn.Resource(gpusoftware.ClusterPolicyGVR).Get(ctx, gpusoftware.ClusterPolicyName, metav1.GetOptions{})
	switch {
	case err == nil:
		problems = append(problems, "ClusterPolicy "+gpusoftware.ClusterPolicyName+" exists and cannot coexist with a GPUCluster: uninstall the operator first ('kubectl gpu operator uninstall --keep-crds=false')")
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err) || gpusoftware.IsNoResource(err):
	default:
		return nil, cluster.APIError("get ClusterPolicy "+gpusoftware.ClusterPolicyName, err)
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return warnings, cliexit.Usagef("the GPUCluster (DRA) stack cannot be installed: %s (nothing was changed)", strings.Join(problems, "; "))
	}
	return warnings, nil
}
