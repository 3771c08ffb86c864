package nodereport

import (
	"strings"
	"testing"

	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
)

func TestHealth(t *testing.T) {
	ok := GPU{PCIAddress: "0000:07:00.0", UUID: "GPU-a"}
	unseen := GPU{PCIAddress: "0000:08:00.0"} // on the bus, not seen by NVML
	cases := []struct {
		gpus   []GPU
		action remedy.Action
		has    string
	}{
		{nil, remedy.Unknown, ""},
		{[]GPU{unseen}, remedy.Unknown, ""},
		{[]GPU{ok, unseen}, remedy.None, "no uncorrectable ECC error"},
		{[]GPU{ok, {PCIAddress: "0000:47:00.0", UUID: "GPU-b", Slowdown: []string{"thermal"}}}, remedy.Watch, "0000:47:00.0: hardware slowdown: thermal"},
		{[]GPU{{PCIAddress: "0000:07:00.0", UUID: "GPU-a", ECCUncorrectable: 3}}, remedy.ResetGPU, "3 uncorrectable ECC errors"},
		{[]GPU{{PCIAddress: "0000:07:00.0", UUID: "GPU-a", RetiredPagesPending: true}, {PCIAddress: "0000:0f:00.0", UUID: "GPU-c", RowRemapFailed: true}}, remedy.Service,
			"0000:07:00.0: page retirement pending (applied at the next GPU reset); 0000:0f:00.0: row remapping failed"},
		{[]GPU{{PCIAddress: "0000:07:00.0", UUID: "GPU-a", NVLinks: 11, NVLinksDown: []int{3}}}, remedy.ResetGPU, "0000:07:00.0: NVLink 3 inactive (11 of 12 links up)"},
		// What does not call for an action is said when all is well.
		{[]GPU{{PCIAddress: "0000:07:00.0", UUID: "GPU-a", NVLinks: 12, Persistence: "disabled", ECCAggregateUncorrectable: 2}, {PCIAddress: "0000:08:00.0", UUID: "GPU-b", NVLinks: 12, Persistence: "enabled"}}, remedy.None,
			"; all 24 NVLink links up; 2 uncorrectable ECC errors over the GPUs' life (none since the driver loaded); persistence mode off on 1 GPUs"},
	}
	for i, c := range cases {
		s, a := Health(c.gpus)
		if a != c.action || !strings.Contains(s, c.has) {
			t.Errorf("case %d: %q %q, want %q with %q", i, s, a, c.action, c.has)
		}
	}
}
