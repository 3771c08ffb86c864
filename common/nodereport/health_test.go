package nodereport

import (
	"strings"
	"testing"
)

func TestHealth(t *testing.T) {
	ok := GPU{PCIAddress: "0000:07:00.0", UUID: "GPU-a"}
	unseen := GPU{PCIAddress: "0000:08:00.0"} // on the bus, not seen by NVML
	cases := []struct {
		gpus   []GPU
		action string
		has    string
	}{
		{nil, "", ""},
		{[]GPU{unseen}, "", ""},
		{[]GPU{ok, unseen}, HealthOK, "no uncorrectable ECC error"},
		{[]GPU{ok, {PCIAddress: "0000:47:00.0", UUID: "GPU-b", Slowdown: []string{"thermal"}}}, HealthWarn, "0000:47:00.0: hardware slowdown: thermal"},
		{[]GPU{{PCIAddress: "0000:07:00.0", UUID: "GPU-a", ECCUncorrectable: 3}}, HealthReset, "3 uncorrectable ECC errors"},
		{[]GPU{{PCIAddress: "0000:07:00.0", UUID: "GPU-a", RetiredPagesPending: true}, {PCIAddress: "0000:0f:00.0", UUID: "GPU-c", RowRemapFailed: true}}, HealthService,
			"0000:07:00.0: page retirement pending (applied at the next GPU reset); 0000:0f:00.0: row remapping failed"},
		{[]GPU{{PCIAddress: "0000:07:00.0", UUID: "GPU-a", NVLinks: 11, NVLinksDown: []int{3}}}, HealthReset, "0000:07:00.0: NVLink 3 inactive (11 of 12 links up)"},
		// What does not call for an action is said when all is well.
		{[]GPU{{PCIAddress: "0000:07:00.0", UUID: "GPU-a", NVLinks: 12, Persistence: "disabled", ECCAggregateUncorrectable: 2}, {PCIAddress: "0000:08:00.0", UUID: "GPU-b", NVLinks: 12, Persistence: "enabled"}}, HealthOK,
			"; all 24 NVLink links up; 2 uncorrectable ECC errors over the GPUs' life (none since the driver loaded); persistence mode off on 1 GPUs"},
	}
	for i, c := range cases {
		s, a := Health(c.gpus)
		if a != c.action || !strings.Contains(s, c.has) {
			t.Errorf("case %d: %q %q, want %q with %q", i, s, a, c.action, c.has)
		}
	}
}
