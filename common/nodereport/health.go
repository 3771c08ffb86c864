package nodereport

import (
	"fmt"
	"strings"
)

// Health actions, from the least to the most disruptive ("" unknown: NVML did not answer).
const (
	HealthOK      = "ok"
	HealthWarn    = "warn"
	HealthReset   = "reset"
	HealthService = "service"
)

// Health sums up the GPUs' health as NVML read it: what is wrong, GPU by GPU, and the action it
// calls for (NVIDIA's guidance: a row remapping that failed or an uncorrectable error that keeps
// coming back is serviced; a pending remapping, pending page retirement or uncorrectable
// errors are cleared by a GPU reset; a hardware slowdown is a warning — cooling or power).
func Health(gpus []GPU) (summary, action string) {
	var parts []string
	rank := map[string]int{"": 0, HealthOK: 1, HealthWarn: 2, HealthReset: 3, HealthService: 4}
	set := func(a string) {
		if rank[a] > rank[action] {
			action = a
		}
	}
	for _, g := range gpus {
		if g.UUID == "" && g.Name == "" {
			continue // NVML did not see it
		}
		set(HealthOK)
		var what []string
		if g.RowRemapFailed {
			what = append(what, "row remapping failed")
			set(HealthService)
		}
		if g.RowRemapPending {
			what = append(what, "row remapping pending (applied at the next GPU reset)")
			set(HealthReset)
		}
		if g.RetiredPagesPending {
			what = append(what, "page retirement pending (applied at the next GPU reset)")
			set(HealthReset)
		}
		if g.ECCUncorrectable > 0 {
			what = append(what, fmt.Sprintf("%d uncorrectable ECC errors since the driver loaded", g.ECCUncorrectable))
			set(HealthReset)
		}
		if len(g.NVLinksDown) > 0 {
			what = append(what, fmt.Sprintf("NVLink %s inactive (%d of %d links up)", joinInts(g.NVLinksDown), g.NVLinks, g.NVLinks+len(g.NVLinksDown)))
			set(HealthReset)
		}
		if len(g.Slowdown) > 0 {
			what = append(what, "hardware slowdown: "+strings.Join(g.Slowdown, ", "))
			set(HealthWarn)
		}
		if len(what) > 0 {
			parts = append(parts, g.PCIAddress+": "+strings.Join(what, ", "))
		}
	}
	if action == HealthOK {
		summary = "no uncorrectable ECC error, no row remapping or page retirement pending, no hardware slowdown"
		var links, noPersist int
		var lifetime uint64
		for _, g := range gpus {
			links += g.NVLinks
			lifetime += g.ECCAggregateUncorrectable
			if g.Persistence == "disabled" {
				noPersist++
			}
		}
		if links > 0 {
			summary += fmt.Sprintf("; all %d NVLink links up", links)
		}
		if lifetime > 0 {
			summary += fmt.Sprintf("; %d uncorrectable ECC errors over the GPUs' life (none since the driver loaded)", lifetime)
		}
		if noPersist > 0 {
			summary += fmt.Sprintf("; persistence mode off on %d GPUs (nvidia-persistenced not running: each first use pays the driver's start-up)", noPersist)
		}
		return summary, action
	}
	return strings.Join(parts, "; "), action
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ", ")
}
