package operator

import (
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
)

// Chart defaults: NVIDIA's repository and a known-good chart version.
const (
	DefaultRepo        = "https://helm.ngc.nvidia.com/nvidia"
	ChartName          = "gpu-operator"
	DefaultVersion     = "v26.7.0"
	DefaultNamespace   = gpusoftware.OperatorNamespace
	DefaultReleaseName = gpusoftware.OperatorRelease
)

// Source is the GPU Operator chart's source with its defaults filled in.
func Source(src helmrelease.ChartSource) helmrelease.ChartSource {
	src.Name, src.DefaultRepo = ChartName, DefaultRepo
	return src
}
