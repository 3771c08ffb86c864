package up

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
)

// LabelDriverUpgradeHeld marks the nodes up holds back from the operator's driver upgrade
// (with the controller's skip label) until the canary is upgraded and verified: a rerun
// after Ctrl-C finds them and goes on.
const LabelDriverUpgradeHeld = rep.AnnotationPrefix + "driver-upgrade-held"

// planDriverCanary decides the canary of the operator's own driver upgrade: when the plan
// moves the driver containers' version, the first --canary GPU nodes are upgraded and
// verified before the controller may touch the others.
func (p *Plan) planDriverCanary(req Request, held []string) {
	if p.Stack != StackOperator || len(p.Releases) == 0 {
		return
	}
	if len(held) > 0 {
		p.DriverHeld = held
		p.Decisions = append(p.Decisions, Decision{
			Decision: fmt.Sprintf("an earlier run holds the operator's driver upgrade back on %s", strings.Join(held, ", ")),
			Reason:   "its canary was not verified yet: this run follows the canary, verifies it, then lets the upgrade controller go on"})
		return
	}
	rp := p.Releases[0]
	if rp.Driver == nil || rp.Action != ActionUpgrade && rp.Action != ActionRollback || req.Canary <= 0 || req.Canary >= len(p.VerifyNodes) {
		return
	}
	nodes := slices.Sorted(slices.Values(p.VerifyNodes))
	p.DriverCanary = nodes[:req.Canary]
	p.Decisions = append(p.Decisions, Decision{
		Decision: fmt.Sprintf("the operator's driver upgrade (%s) goes to %s first; the other %s are labelled %s=true until it is upgraded and verified",
			rp.Driver, strings.Join(p.DriverCanary, ", "), report.Count(len(nodes)-req.Canary, "GPU node"), op.LabelDriverUpgradeSkip),
		Reason: fmt.Sprintf("--canary %d: the upgrade controller skips nodes so labelled; a canary that fails leaves the others on the old driver", req.Canary)})
}

// heldNodes are the nodes an earlier run held back from the driver upgrade.
func heldNodes(ctx context.Context, c Clients) ([]string, error) {
	list, err := c.CS.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: LabelDriverUpgradeHeld + "=true"})
	if err != nil {
		return nil, cluster.APIError("list the nodes held back from the driver upgrade", err)
	}
	var out []string
	for _, n := range list.Items {
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return out, nil
}

// holdDriverUpgrade labels the GPU nodes other than the canary so that the upgrade
// controller skips them (nodes the user labelled so already are left as they are).
func (p *Plan) holdDriverUpgrade(ctx context.Context, c Clients) error {
	for _, name := range p.VerifyNodes {
		if slices.Contains(p.DriverCanary, name) {
			continue
		}
		n, err := c.CS.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return cluster.APIError("get node "+name, err)
		}
		if n.Labels[op.LabelDriverUpgradeSkip] == "true" && n.Labels[LabelDriverUpgradeHeld] != "true" {
			continue
		}
		if err := labelHeld(ctx, c, name, true); err != nil {
			return err
		}
		p.DriverHeld = append(p.DriverHeld, name)
	}
	return nil
}

// labelHeld sets or removes the skip label with the mark that up set it, in one patch.
func labelHeld(ctx context.Context, c Clients, node string, hold bool) error {
	var v any
	if hold {
		v = "true"
	}
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{op.LabelDriverUpgradeSkip: v, LabelDriverUpgradeHeld: v}}})
	if _, err := c.CS.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
		return cluster.APIError("label node "+node, err)
	}
	return nil
}

// followDriverCanary waits for the canary's driver upgrade, verifies the canary, and lets
// the controller go on to the held nodes. A canary that fails is a failure naming it; the
// others stay held.
func (p *Plan) followDriverCanary(ctx context.Context, c Clients, req Request, nodes map[string]*NodeResult) (string, error) {
	canary := p.DriverCanary
	if len(canary) == 0 {
		canary = without(slices.Sorted(slices.Values(p.VerifyNodes)), p.DriverHeld)
	}
	if len(canary) > 0 {
		if _, err := c.Release.WaitDriverUpgrade(ctx, p.Releases[0].Release, canary, req.Install.Timeout); err != nil {
			return "", err
		}
		// The driver reloaded, the device plugin registers the GPUs anew: waited for.
		prog := report.ForStream(req.Progress)
		vrep, err := verifyServing(ctx, c, req, canary, false, func(state, detail string) { prog.Status("canary", state, detail) })
		prog.End()
		if err != nil {
			return "", fmt.Errorf("verify the driver upgrade's canary: %w", err)
		}
		var failed []string
		for _, it := range vrep.Items {
			if it.Result != verify.Passed {
				failed = append(failed, it.Node)
				if n := nodes[it.Node]; n != nil {
					n.Verify, n.Detail, n.Hint = string(it.Result), it.Detail, it.Hint
				}
			}
		}
		if len(failed) > 0 {
			if err := p.diagnose(ctx, c, req, nodes, failed); err != nil {
				return "", err
			}
			return "", cliexit.Failuresf("the operator's driver upgrade stopped at its canary: %s failed verify; %s keep the old driver (labelled %s=true): fix the canary and run the same command again, or go back with the previous targets",
				strings.Join(failed, ", "), strings.Join(p.DriverHeld, ", "), op.LabelDriverUpgradeSkip)
		}
	}
	for _, n := range p.DriverHeld {
		if err := labelHeld(ctx, c, n, false); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("driver upgrade canary %s verified, then released to %s; ", strings.Join(canary, ", "), report.Count(len(p.DriverHeld), "node")), nil
}
