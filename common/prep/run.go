package prep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/pkginstall"
)

// ControlPlaneTaint is the taint --untaint-control-plane removes.
const ControlPlaneTaint = "node-role.kubernetes.io/control-plane"

// Run is `kubectl gpu prep`: it chooses the nodes, checks them, and with req.Apply plans,
// shows the plan on req.PlanOut, asks req.Confirm, applies and checks again. Each node's
// findings are left on it as annotations. It returns the last phase's report; when the
// report is complete but an annotation failed, it returns both.
func Run(ctx context.Context, cs kubernetes.Interface, req *Request) (*Report, error) {
	if !req.Apply {
		nodes, err := ChooseNodes(ctx, cs, req)
		if err != nil {
			return nil, err
		}
		if err := nodepod.EnsureNamespace(ctx, cs, req.Namespace, nodepod.PSAPrivileged); err != nil {
			return nil, err
		}
		return runAnnotated(ctx, cs, req, nodes, rep.ModeCheck)
	}
	p, err := MakePlan(ctx, cs, req)
	if p == nil || err != nil {
		TellLeftCordoned(ctx, cs, req, nil, err)
		return p.report(), err
	}
	out := req.PlanOut
	if out == nil {
		out = io.Discard
	}
	if p.Write(out, req) == 0 {
		fmt.Fprintln(out, "nothing to change: every fixable check already passes")
		return p.Report, nil
	}
	if req.Confirm != nil {
		if err := req.Confirm(fmt.Sprintf("\nApply these changes to %d node(s)?", len(p.Nodes))); err != nil {
			return nil, err
		}
	}
	return Apply(ctx, cs, req, p)
}

// Plan is what --apply will do, read from the nodes by their agents in plan mode: each
// node's changes, the nodes the roll takes and the control-plane nodes to untaint. A
// program shows it (Write), asks, and hands it to Apply; `kubectl gpu up` shows it with
// the rest of its plan.
type Plan struct {
	// Nodes are the chosen nodes; Report the agents' plan, one result per node.
	Nodes  []string
	Report *Report
	// Roll are the nodes --reboot drains and reboots (their changes need a reboot, or an
	// earlier roll stopped on them); Untaint the control-plane nodes whose taint goes.
	Roll    []string
	Untaint []string
	// Objects are the chosen nodes as read when planning (those of the roll at least).
	Objects map[string]*corev1.Node
}

func (p *Plan) report() *Report {
	if p == nil {
		return nil
	}
	return p.Report
}

// Changes counts what the plan changes: node changes, rolled nodes and taints removed.
func (p *Plan) Changes() int {
	n := len(p.Roll) + len(p.Untaint)
	for _, r := range p.Report.Items {
		if r.Report != nil {
			n += len(r.Report.Changes)
		}
	}
	return n
}

// MakePlan chooses the nodes and plans req's --apply on them (req.Apply is implied),
// changing nothing on any node. It refuses what Run refuses before anything changes: a
// host driver where the GPU Operator owns the driver, an OS the installs do not support, a
// plan that failed on a node while installing packages (then it returns the plan's report
// with the error), a roll of a control plane or of this command's own node not named.
func MakePlan(ctx context.Context, cs kubernetes.Interface, req *Request) (*Plan, error) {
	nodes, err := ChooseNodes(ctx, cs, req)
	if err != nil {
		return nil, err
	}
	if err := nodepod.EnsureNamespace(ctx, cs, req.Namespace, nodepod.PSAPrivileged); err != nil {
		return nil, err
	}
	p := &Plan{Nodes: nodes}
	if req.Install.DriverBranch != "" || req.Roll != nil {
		if p.Objects, err = getNodes(ctx, cs, nodes); err != nil {
			return nil, err
		}
	}
	if req.Install.DriverBranch != "" {
		if err := refuseOperatorDriver(ctx, cs, p.Objects); err != nil {
			return nil, err
		}
	}
	plan, err := RunAgents(ctx, cs, req, nodes, rep.ModePlan)
	if err != nil {
		return nil, err
	}
	p.Report = NewReport(rep.ModePlan, plan)
	if req.Install.Any() {
		for _, r := range plan {
			if strings.Contains(r.Error, pkginstall.UnsupportedOS) {
				return nil, cliexit.Usagef("node %s: %s; nothing was changed", r.Node, strings.TrimPrefix(r.Error, "the agent stopped: "))
			}
		}
		if bad := planErrors(plan); bad > 0 {
			return &Plan{Report: p.Report}, cliexit.Failuresf("the plan failed on %d node(s) (see above): nothing was installed on any node", bad)
		}
	}
	if req.Roll != nil {
		p.Roll = RollNodes(plan, p.Objects)
		if err := refuseRoll(req, p.Roll, p.Objects); err != nil {
			return nil, err
		}
	}
	if req.UntaintControlPlane {
		if p.Untaint, err = taintedControlPlanes(ctx, cs, nodes); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Write shows the plan — per node the file diffs, commands and packages, the roll and
// the taints — and returns how many changes it shows.
func (p *Plan) Write(w io.Writer, req *Request) int {
	changes := p.Report.WriteChanges(w)
	if req.Roll != nil {
		writeRollPlan(w, req, p.Roll, p.Objects, plannedChanges(p.Report.Items))
		changes += len(p.Roll)
	}
	for _, n := range p.Untaint {
		fmt.Fprintf(w, "\n=== %s\n$ kubectl taint node %s %s:NoSchedule-\n", n, n, ControlPlaneTaint)
		changes++
	}
	return changes
}

// Apply carries out a plan made by MakePlan with the same req: taints removed, the nodes
// outside the roll applied in place, the roll's nodes drained, applied, rebooted and
// checked a few at a time. It asks nothing.
func Apply(ctx context.Context, cs kubernetes.Interface, req *Request, p *Plan) (*Report, error) {
	for _, n := range p.Untaint {
		if err := removeControlPlaneTaint(ctx, cs, n); err != nil {
			return nil, err
		}
	}
	roll := p.Roll
	inRoll := map[string]bool{}
	for _, n := range roll {
		inRoll[n] = true
	}
	// A node whose plan failed showed no changes: nothing is applied to it (a roll an earlier
	// run started on it goes on: its changes were shown then).
	var results []NodeResult
	var inPlace []string
	for _, it := range p.Report.Items {
		switch {
		case inRoll[it.Node]:
		case it.Error != "" || it.Report == nil:
			results = append(results, NodeResult{Node: it.Node, Error: "not changed: its plan failed: " + it.Error,
				Hint: "nothing was applied to it; run the same command again to plan it (and see its changes) again"})
		default:
			inPlace = append(inPlace, it.Node)
		}
	}
	var annotateErr error
	if len(inPlace) > 0 {
		r, err := runAnnotated(ctx, cs, req, inPlace, rep.ModeApply)
		if r == nil {
			TellInstallsFinish(req, err)
			TellLeftCordoned(ctx, cs, req, p.Nodes, err)
			return nil, err
		}
		results, annotateErr = append(results, r.Items...), err
	}
	if len(roll) == 0 {
		sort.Slice(results, func(i, j int) bool { return results[i].Node < results[j].Node })
		return NewReport(rep.ModeApply, results), annotateErr
	}
	rolls, err := Roll(ctx, cs, req, roll, plannedChanges(p.Report.Items))
	TellInstallsFinish(req, err)
	TellLeftCordoned(ctx, cs, req, p.Nodes, err)
	if errors.Is(err, cliexit.ErrInterrupted) || rolls == nil {
		return nil, err
	}
	if annotateErr == nil {
		annotateErr = err
	}
	results = append(results, rollResults(rolls)...)
	sort.Slice(results, func(i, j int) bool { return results[i].Node < results[j].Node })
	final := NewReport(rep.ModeApply, results)
	final.Roll = rolls
	return final, annotateErr
}

// plannedChanges are the nodes whose plan has changes to make (ChangesToMake).
func plannedChanges(items []NodeResult) map[string]bool {
	out := map[string]bool{}
	for _, it := range items {
		if it.Error == "" && ChangesToMake(it.Report) {
			out[it.Node] = true
		}
	}
	return out
}

// ChangesToMake tells whether a node's plan has packages to install or files to write: a
// roll an earlier run left past its install installs them again (a new target, such as the
// way back after a failed upgrade; ResumeAfter), where it would otherwise only check the
// node. Commands alone (a module to load, a service to restart) do not count: they are
// what the reboot does.
func ChangesToMake(r *rep.Report) bool {
	if r == nil {
		return false
	}
	for _, c := range r.Changes {
		if !c.Done && c.Error == "" && (len(c.Packages) > 0 || c.File != "") {
			return true
		}
	}
	return false
}

// rollResults are the roll's nodes as report items: the check of a node done, the error of
// the node that stopped it (as the roll says it, with no prefix of its own), and the nodes it
// did not start.
func rollResults(rolls []NodeRoll) []NodeResult {
	stopped := ""
	for _, rl := range rolls {
		if rl.Error != "" {
			stopped = rl.Node
		}
	}
	var results []NodeResult
	for _, rl := range rolls {
		switch {
		case rl.Check != nil && rl.Error == "":
			results = append(results, *rl.Check)
		case rl.Error != "":
			results = append(results, NodeResult{Node: rl.Node, Report: reportOf(rl.Check), Error: rl.Error, Hint: rl.Hint})
		default:
			results = append(results, NodeResult{Node: rl.Node, NotStarted: true, Error: "not started: the roll stopped at node " + stopped,
				Hint: "fix " + stopped + ", then run the same command again"})
		}
	}
	return results
}

func reportOf(n *NodeResult) *rep.Report {
	if n == nil {
		return nil
	}
	return n.Report
}

func planErrors(plan []NodeResult) int {
	bad := 0
	for _, p := range plan {
		if p.Error != "" {
			bad++
		}
	}
	return bad
}

func getNodes(ctx context.Context, cs kubernetes.Interface, names []string) (map[string]*corev1.Node, error) {
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return nil, cluster.APIError("list nodes", err)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]*corev1.Node{}
	for i := range list.Items {
		if want[list.Items[i].Name] {
			out[list.Items[i].Name] = &list.Items[i]
		}
	}
	return out, nil
}

// Labels of the GPU Operator's driver pods (app: older charts; component: newer).
var operatorDriverSelectors = []string{"app=nvidia-driver-daemonset", "app.kubernetes.io/component=nvidia-driver"}

// refuseOperatorDriver refuses a host driver on a node whose driver the GPU Operator's
// driver container manages: its driver pods run there, or the operator deploys it
// (nvidia.com/gpu.deploy.driver=true).
func refuseOperatorDriver(ctx context.Context, cs kubernetes.Interface, nodes map[string]*corev1.Node) error {
	owner := map[string]string{}
	for _, sel := range operatorDriverSelectors {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: "0"})
		if err != nil {
			return cluster.APIError("list the GPU Operator's driver pods", err)
		}
		for _, p := range pods.Items {
			if _, ok := nodes[p.Spec.NodeName]; ok {
				owner[p.Spec.NodeName] = "its driver pod " + p.Namespace + "/" + p.Name + " runs there"
			}
		}
	}
	for name, n := range nodes {
		if _, ok := owner[name]; !ok && n.Labels["nvidia.com/gpu.deploy.driver"] == "true" {
			owner[name] = "it is labelled nvidia.com/gpu.deploy.driver=true"
		}
	}
	if len(owner) == 0 {
		return nil
	}
	names := make([]string, 0, len(owner))
	for n := range owner {
		names = append(names, n)
	}
	sort.Strings(names)
	return cliexit.Usagef("node %s: the GPU Operator's driver container manages the driver (%s): no host driver is installed there; "+
		"label it nvidia.com/gpu.deploy.driver=false to hand the driver to the host, or leave out --install-driver (nothing was changed)", names[0], owner[names[0]])
}

// refuseRoll refuses to drain a control-plane node, or the node this command runs on,
// unless it was named.
func refuseRoll(req *Request, roll []string, nodes map[string]*corev1.Node) error {
	named := map[string]bool{}
	for _, n := range req.Names {
		named[n] = true
	}
	for _, name := range roll {
		if named[name] {
			continue
		}
		if n := nodes[name]; n != nil && IsControlPlane(n) {
			return cliexit.Usagef("node %s is a control-plane node: --reboot drains and reboots it only when it is named (kubectl gpu prep %s --apply --reboot); nothing was changed", name, name)
		}
		if name == req.Roll.SelfNode {
			return cliexit.Usagef("node %s runs this command's own pod: --reboot drains it only when it is named; nothing was changed", name)
		}
	}
	return nil
}

// writeRollPlan shows which nodes the roll takes, and from where each resumes.
func writeRollPlan(w io.Writer, req *Request, roll []string, nodes map[string]*corev1.Node, changed map[string]bool) {
	if len(roll) == 0 {
		return
	}
	fmt.Fprintf(w, "\n=== roll: %d node(s) cordoned, drained, rebooted, checked and uncordoned, at most %d at a time\n", len(roll), max(req.Roll.MaxUnavailable, 1))
	for _, n := range roll {
		line := n
		if st := ReadRollState(nodes[n]); st.Unfinished() {
			if ResumeAfter(st, changed[n]) == st.Phase {
				line += ": resumes after " + string(st.Phase)
			} else {
				line += ": installed again for the changes above and rebooted for them (an earlier run stopped after " + string(st.Phase) + ")"
			}
			if st.Error != "" {
				line += " (stopped there: " + st.Error + ")"
			}
		}
		fmt.Fprintln(w, "  "+line)
	}
}

// runAnnotated runs the agents and annotates each node as its report arrives.
func runAnnotated(ctx context.Context, cs kubernetes.Interface, req *Request, nodes []string, mode rep.Mode) (*Report, error) {
	annotator := NewAnnotator(ctx, cs)
	c := *req
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
