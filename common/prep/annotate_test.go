package prep

import (
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// TestAnnotationsGPUHealth: the health NVML read is written as the action and, when something
// is wrong, what; a report without NVML clears both.
func TestAnnotationsGPUHealth(t *testing.T) {
	r := rep.New("n1", "check")
	r.GPUs = []rep.GPU{{PCIAddress: "0000:07:00.0", UUID: "GPU-a", ECCUncorrectable: 2}, {PCIAddress: "0000:0f:00.0", UUID: "GPU-b"}}
	a := Annotations(r, time.Now())
	if a[flavour.AnnotationPrefix+"gpu-health"] != "reset" || a[flavour.AnnotationPrefix+"gpu-health-detail"] != "0000:07:00.0: 2 uncorrectable ECC errors since the driver loaded" ||
		a[flavour.AnnotationPrefix+"gpus"] != "2" {
		t.Errorf("%v", a)
	}
	r.GPUs = []rep.GPU{{PCIAddress: "0000:07:00.0"}}
	a = Annotations(r, time.Now())
	if a[flavour.AnnotationPrefix+"gpu-health"] != nil || a[flavour.AnnotationPrefix+"gpu-health-detail"] != nil {
		t.Errorf("without NVML: %v", a)
	}
}
