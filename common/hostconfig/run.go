package hostconfig

import (
	"context"
	"fmt"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// Modes of the node agent (the report schema's).
const (
	ModeCheck = rep.ModeCheck
	ModePlan  = rep.ModePlan
	ModeApply = rep.ModeApply
)

// Options of one agent run.
type Options struct {
	Mode         rep.Mode
	AgentVersion string
	Node         string
	// Arch is the node's architecture (the agent's own).
	Arch   string
	Apply  ApplyOptions
	NVML   GPUInfo
	Runner Runner
}

// Run checks the host and, in plan or apply mode, plans or applies the fixes. In apply
// mode the returned report is a fresh check after the changes, with the checks that went
// from fail to ok marked fixed.
func Run(ctx context.Context, h *Host, o Options) (*rep.Report, error) {
	r := rep.New(o.AgentVersion, o.Mode)
	r.Node, r.Arch = o.Node, o.Arch
	Check(ctx, h, r, o.NVML)
	switch o.Mode {
	case ModeCheck:
		return r, nil
	case ModePlan:
		changes, err := Apply(ctx, h, r, nil, o.Apply, true)
		r.Changes = changes
		return r, err
	case ModeApply:
		changes, err := Apply(ctx, h, r, o.Runner, o.Apply, false)
		after := rep.New(o.AgentVersion, o.Mode)
		after.Node, after.Arch = o.Node, o.Arch
		Check(ctx, h, after, o.NVML)
		after.Changes = changes
		for i, c := range after.Checks {
			if before, ok := r.Get(c.ID); ok && before.Status == rep.Fail && c.Status == rep.OK {
				after.Checks[i].Status = rep.Fixed
			}
		}
		return after, err
	}
	return nil, fmt.Errorf("unknown mode %q: want check, plan or apply", o.Mode)
}
