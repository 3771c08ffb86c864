package up

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// What the plan moves from what to what: per node the host driver's and toolkit's installed
// and target versions, the GPU pods the drain of a rolled node evicts and the budgets that
// guard them, and per release the chart it replaces. A node already at the target shows
// nothing.

// VersionChange is one component of a node moved from one version to another.
type VersionChange struct {
	// What: "driver" or "toolkit".
	What string `json:"what"`
	// From is the installed version ("" none); To the target, as the package manager
	// resolved it (else the branch asked for).
	From string `json:"from,omitempty"`
	To   string `json:"to"`
	// Back is the flag that takes the node back to From, pinned to that exact version
	// (the host driver; "" when there is nothing to go back to).
	Back string `json:"back,omitempty"`
}

func (v VersionChange) String() string {
	from := v.From
	if from == "" {
		from = "none"
	}
	return fmt.Sprintf("%s %s → %s", v.What, from, v.To)
}

// Eviction is a GPU pod the drain of a rolled node evicts.
type Eviction = inventory.GPUPod

// versionChanges reads a node's planned driver and toolkit changes from its plan report.
func versionChanges(r *rep.Report, driverBranch string) []VersionChange {
	var out []VersionChange
	for _, ch := range r.Changes {
		switch ch.Check {
		case rep.CheckDriver:
			if to := rep.DriverTarget(ch.Packages, driverBranch); to != "" && !strings.HasPrefix(r.DriverVersion, to) {
				vc := VersionChange{What: "driver", From: r.DriverVersion, To: to}
				if r.DriverVersion != "" {
					vc.Back = "--host-driver=" + r.DriverVersion
				}
				out = append(out, vc)
			}
		case rep.CheckToolkit:
			if to := packageVersion(ch.Packages, "nvidia-container-toolkit", ""); to != "" && rep.UpstreamVersion(to) != rep.UpstreamVersion(r.ToolkitVersion) {
				out = append(out, VersionChange{What: "toolkit", From: r.ToolkitVersion, To: rep.UpstreamVersion(to)})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].What < out[j].What }) // the driver first
	return out
}

// evictions lists, per rolled node, the GPU pods its drain evicts, with the budgets over
// each (inventory.GPUPods).
func evictions(ctx context.Context, cs kubernetes.Interface, nodes []string) (map[string][]Eviction, error) {
	return inventory.GPUPods(ctx, cs, nodes)
}

// operatorDriver is the move of the GPU Operator's driver version between the deployed
// release (its values over its chart's) and the planned one, when the driver container is on
// and the version changes (nil otherwise, or for a chart without driver.version).
func operatorDriver(curValues, curChart, values, chartValues map[string]any) *VersionChange {
	get := func(m map[string]any, key string) (any, bool) {
		d, ok := m["driver"].(map[string]any)
		if !ok {
			return nil, false
		}
		v, ok := d[key]
		return v, ok
	}
	of := func(user, chart map[string]any, key string) any {
		if v, ok := get(user, key); ok {
			return v
		}
		v, _ := get(chart, key)
		return v
	}
	to, _ := of(values, chartValues, "version").(string)
	from, _ := of(curValues, curChart, "version").(string)
	if enabled, ok := of(values, chartValues, "enabled").(bool); to == "" || from == to || ok && !enabled {
		return nil
	}
	return &VersionChange{What: "operator driver", From: from, To: to}
}
