package verify

import (
	"github.com/distribution/reference"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// validateImage checks --image with the reference grammar container runtimes use.
func validateImage(s string) error {
	if _, err := reference.ParseNormalizedNamed(s); err != nil {
		return cliexit.Usagef("--image %q is not a valid image reference (%w): want such as registry.example.com/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0", s, err)
	}
	return nil
}
