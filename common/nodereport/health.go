package nodereport

import (
	"fmt"
	"strings"

	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
)

// Health sums up the GPUs' health as NVML read it: what is wrong, GPU by GPU, and the step of
// the ladder it calls for (remedy.Unknown when NVML saw no GPU; NVIDIA's guidance: a row remapping that failed or an uncorrectable error that keeps
// coming back is serviced; a pending remapping, pending page retirement or uncorrectable
// errors are cleared by a GPU reset; a hardware slowdown is a warning — cooling or power).
func Health(gpus []GPU) (summary string, action remedy.Action) {
	var parts []string
	action = remedy.Unknown
	set := func(a remedy.Action) {
		if a > action {
			action = a
		}
	}
	for _, g := range gpus {
		if g.UUID == "" && g.Name == "" {
			continue // NVML did not see it
		}
		set(remedy.None)
		var what []string
		if g.RowRemapFailed {
			what = append(what, "row remapping failed")
			set(remedy.Service)
		}
		if g.RowRemapPending {
			what = append(what, "row remapping pending (applied at the next GPU reset)")
			set(remedy.ResetGPU)
		}
		if g.RetiredPagesPending {
			what = append(what, "page retirement pending (applied at the next GPU reset)")
			set(remedy.ResetGPU)
		}
		if g.ECCUncorrectable > 0 {
			what = append(what, fmt.Sprintf("%d uncorrectable ECC errors since the driver loaded", g.ECCUncorrectable))
			set(remedy.ResetGPU)
		}
		if len(g.NVLinksDown) > 0 {
			what = append(what, fmt.Sprintf("NVLink %s inactive (%d of %d links up)", joinInts(g.NVLinksDown), g.NVLinks, g.NVLinks+len(g.NVLinksDown)))
			set(remedy.ResetGPU)
		}
		if len(g.Slowdown) > 0 {
			what = append(what, "hardware slowdown: "+strings.Join(g.Slowdown, ", "))
			set(remedy.Watch)
		}
		if len(what) > 0 {
			parts = append(parts, g.PCIAddress+": "+strings.Join(what, ", "))
		}
	}
	if action == remedy.None {
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

// HealthFix is what to do about the GPUs' health on node ("NODE" where the agent does not know
// it): the ladder's fix, except that a GPU whose health calls for service is serviced without
// a reboot first (a failed row remapping does not clear).
func HealthFix(a remedy.Action, node string) string {
	if a == remedy.Service {
		return "drain the node (kubectl drain " + node + ") and have the GPU serviced"
	}
	return a.Fix("", node)
}
