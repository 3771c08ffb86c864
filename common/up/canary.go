package up

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
)

// DefaultCanary is how many rolled nodes go first, proven, before any other is drained.
const DefaultCanary = 1

// dayTwo tells whether the GPU software the roll's nodes come back to is already deployed
// (every release upgraded or unchanged, none installed by this run): only then can a node be
// proven by the CUDA sample before it is uncordoned. On a first install the release comes
// after the host step, and verify runs on every node at the end.
func (p *Plan) dayTwo() bool {
	if len(p.Releases) == 0 {
		return false
	}
	for _, r := range p.Releases {
		if r.Action != ActionUpgrade && r.Action != ActionUnchanged && r.Action != ActionRollback || r.Recovery != nil {
			return false
		}
	}
	return true
}

// planCanary decides the roll's canary and proof, said in the plan and in its decisions.
func (p *Plan) planCanary(req Request) {
	roll := p.prep.Roll
	if len(roll) == 0 {
		return
	}
	n := min(max(req.Canary, 0), len(roll))
	mu := 1
	if req.Prep.Roll != nil {
		mu = max(req.Prep.Roll.MaxUnavailable, 1)
	}
	resumed := []string{}
	for _, np := range p.Nodes {
		if np.Resumes != "" {
			resumed = append(resumed, np.Node)
		}
	}
	// The nodes an earlier run left part-way go first (prep.Roll's order), then by name.
	order := append(resumed, without(roll, resumed)...)
	p.Canary = order[:n]
	if p.dayTwo() {
		p.ProveRolled = true
		p.Decisions = append(p.Decisions, Decision{
			Decision: "each rolled node is verified (the CUDA sample, on the node still cordoned) before it is uncordoned and the next one starts",
			Reason:   "the GPU software is deployed already: a node that does not serve GPUs after its reboot stops the roll, and stays cordoned with doctor's diagnosis"})
	} else {
		p.Decisions = append(p.Decisions, Decision{
			Decision: "rolled nodes are verified at the end, not one by one",
			Reason:   "the GPU software is installed after the host step: until then no node can run the CUDA sample"})
	}
	if n > 0 && n < len(roll) {
		p.Decisions = append(p.Decisions, Decision{
			Decision: fmt.Sprintf("canary: %s first; the other %s only after it is done, %d at a time", strings.Join(p.Canary, ", "), report.Count(len(roll)-n, "node"), mu),
			Reason:   "--canary " + fmt.Sprint(n) + ": a failure on the canary leaves every other node untouched"})
	}
}

func without(all, drop []string) []string {
	return slices.DeleteFunc(slices.Clone(all), func(s string) bool { return slices.Contains(drop, s) })
}

// rollOptions are the roll's options of this run: the plan's canary, and the proof when the
// GPU software is deployed.
func (p *Plan) rollOptions(c Clients, req Request) *prep.RollOptions {
	o := *p.prepRq.Roll
	o.Canary = len(p.Canary)
	if p.ProveRolled {
		o.Prove = p.prover(c, req)
	}
	return &o
}

// proveWait is how often a proof looks again for the nodes' GPUs.
var proveWait = 2 * time.Second

// errNotServing is a proof's nodes not advertising their GPUs within --timeout.
type errNotServing struct {
	timeout time.Duration
	err     error
}

func (e *errNotServing) Error() string {
	return fmt.Sprintf("not advertising GPUs within --timeout %s: %s", e.timeout, cliexit.OneLine(e.err.Error()))
}

// verifyServing runs the CUDA sample on the named nodes once each advertises its GPUs again
// (after a reboot or a driver reload its device plugin registers anew; waited for within
// --timeout, said through status): the proof of a rolled node (cordoned: the pods tolerate
// the cordon) and of the operator's driver canary.
func verifyServing(ctx context.Context, c Clients, req Request, names []string, cordoned bool, status func(state, detail string)) (*verify.Report, error) {
	vr := req.Verify
	vr.Names, vr.Selector, vr.Cordoned = names, "", cordoned
	if cordoned {
		vr.Progress, vr.Warn = nil, nil // the roll's own progress shows it
	}
	plan, err := awaitAdvertised(ctx, c, &vr, names, req.Install.Timeout, func(missing []string, left time.Duration) {
		status("waiting for "+strings.Join(missing, ", ")+" to advertise its GPUs again", fmt.Sprintf("%s left of --timeout", left.Round(time.Second)))
	})
	switch {
	case errors.Is(err, verify.ErrNoGPUs):
		return nil, &errNotServing{req.Install.Timeout, err}
	case err != nil:
		return nil, err
	}
	status("running the CUDA sample", strings.Join(names, ", "))
	return verify.Run(ctx, c.CS, &vr, plan)
}

// awaitAdvertised prepares a verify run with vr once every node of want advertises its GPUs
// (after a reboot, a driver reload or an install its device plugin registers anew, a little
// after its pod is ready), asking again every proveWait and telling say what it waits for.
// When wait ends it returns the last plan, with ErrNoGPUs if Prepare still said so; any other
// error ends it at once.
func awaitAdvertised(ctx context.Context, c Clients, vr *verify.Request, want []string, wait time.Duration, say func(missing []string, left time.Duration)) (*verify.Plan, error) {
	deadline := time.Now().Add(wait)
	for {
		plan, err := verify.Prepare(ctx, c.CS, vr)
		if ctx.Err() != nil {
			return nil, cliexit.ErrInterrupted
		}
		if err != nil && !errors.Is(err, verify.ErrNoGPUs) {
			return nil, err
		}
		var have []string
		if plan != nil {
			plan.Keep(func(node string) bool { return slices.Contains(want, node) })
			have = plan.Nodes()
		}
		var missing []string
		for _, n := range want {
			if !slices.Contains(have, n) {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || !time.Now().Before(deadline) {
			return plan, err
		}
		say(missing, time.Until(deadline))
		select {
		case <-ctx.Done():
			return nil, cliexit.ErrInterrupted
		case <-time.After(proveWait):
		}
	}
}

// prover proves a node back from its reboot with verifyServing, on the node still cordoned.
func (p *Plan) prover(c Clients, req Request) prep.Prover {
	return func(ctx context.Context, node string, status func(state, detail string)) (string, string) {
		r, err := verifyServing(ctx, c, req, []string{node}, true, status)
		var ns *errNotServing
		switch {
		case ctx.Err() != nil:
			return "interrupted", ""
		case errors.As(err, &ns):
			return "the node is " + ns.Error(), "kubectl gpu doctor " + node + " says which link is broken"
		case err != nil:
			return "verify: " + cliexit.OneLine(err.Error()), ""
		}
		for _, it := range r.Items {
			if it.Node == node && it.Result != verify.Passed {
				return "verify " + string(it.Result) + ": " + it.Detail, it.Hint
			}
		}
		return "", ""
	}
}
