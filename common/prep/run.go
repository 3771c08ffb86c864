package prep

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// ControlPlaneTaint is the taint --untaint-control-plane removes.
const ControlPlaneTaint = "node-role.kubernetes.io/control-plane"

// Run is `kubectl gpu prep`: it chooses the nodes, checks them, and with cfg.Apply plans,
// shows the plan on cfg.PlanOut, asks cfg.Confirm, applies and checks again. Each node's
// findings are left on it as annotations. It returns the last phase's report; when the
// report is complete but an annotation failed, it returns both.
func Run(ctx context.Context, cs kubernetes.Interface, cfg *Config) (*Report, error) {
	nodes, err := ChooseNodes(ctx, cs, cfg)
	if err != nil {
		return nil, err
	}
	if err := nodepod.EnsureNamespace(ctx, cs, cfg.Namespace, nodepod.PSAPrivileged); err != nil {
		return nil, err
	}
	if !cfg.Apply {
		return runAnnotated(ctx, cs, cfg, nodes, rep.ModeCheck)
	}
	plan, err := RunAgents(ctx, cs, cfg, nodes, rep.ModePlan)
	if err != nil {
		return nil, err
	}
	planRep := NewReport(rep.ModePlan, plan)
	out := cfg.PlanOut
	if out == nil {
		out = io.Discard
	}
	changes := planRep.WriteChanges(out)
	var untaint []string
	if cfg.UntaintControlPlane {
		if untaint, err = taintedControlPlanes(ctx, cs, nodes); err != nil {
			return nil, err
		}
	}
	for _, n := range untaint {
		fmt.Fprintf(out, "\n=== %s\n$ kubectl taint node %s %s:NoSchedule-\n", n, n, ControlPlaneTaint)
		changes++
	}
	if changes == 0 {
		fmt.Fprintln(out, "nothing to change: every fixable check already passes")
		return planRep, nil
	}
	if cfg.Confirm != nil {
		if err := cfg.Confirm(fmt.Sprintf("\nApply these changes to %d node(s)?", len(nodes))); err != nil {
			return nil, err
		}
	}
	for _, n := range untaint {
		if err := removeControlPlaneTaint(ctx, cs, n); err != nil {
			return nil, err
		}
	}
	return runAnnotated(ctx, cs, cfg, nodes, rep.ModeApply)
}

// runAnnotated runs the agents and annotates each node as its report arrives.
func runAnnotated(ctx context.Context, cs kubernetes.Interface, cfg *Config, nodes []string, mode rep.Mode) (*Report, error) {
	annotator := NewAnnotator(ctx, cs)
	c := *cfg
	c.OnReport = annotator.Add
	results, err := RunAgents(ctx, cs, &c, nodes, mode)
	annotateErr := annotator.Wait()
	if err != nil {
		return nil, err
	}
	return NewReport(mode, results), annotateErr
}

// taintedControlPlanes are the nodes among names with the control-plane NoSchedule taint.
func taintedControlPlanes(ctx context.Context, cs kubernetes.Interface, names []string) ([]string, error) {
	var out []string
	for _, n := range names {
		node, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			return nil, cluster.APIError("get node "+n, err)
		}
		if hasControlPlaneTaint(node) {
			out = append(out, n)
		}
	}
	return out, nil
}

func hasControlPlaneTaint(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == ControlPlaneTaint && t.Effect == corev1.TaintEffectNoSchedule {
			return true
		}
	}
	return false
}

func removeControlPlaneTaint(ctx context.Context, cs kubernetes.Interface, name string) error {
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return cluster.APIError("get node "+name, err)
	}
	keep := []corev1.Taint{}
	for _, t := range node.Spec.Taints {
		if !(t.Key == ControlPlaneTaint && t.Effect == corev1.TaintEffectNoSchedule) {
			keep = append(keep, t)
		}
	}
	// The resource version makes the patch fail rather than drop a taint added meanwhile.
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": node.ResourceVersion}, "spec": map[string]any{"taints": keep}})
	if _, err := cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return cluster.APIError("remove the control-plane taint of node "+name, err)
	}
	return nil
}
