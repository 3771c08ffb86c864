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
	}
	for i, c := range cases {
		s, a := Health(c.gpus)
		if a != c.action || !strings.Contains(s, c.has) {
			t.Errorf("case %d: %q %q, want %q with %q", i, s, a, c.action, c.has)
		}
	}
}
