package operator

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// StatusKind is the kind of the status document.
const StatusKind = "OperatorStatus"

// Status is the `kubectl gpu operator status` document.
type Status struct {
	report.TypeMeta `json:",inline"`
	Namespace       string                   `json:"namespace"`
	Release         *helmrelease.ReleaseInfo `json:"release,omitempty"`
	ClusterPolicy   *PolicyInfo              `json:"clusterPolicy,omitempty"`
	// GPUCluster is the DRA stack's state (gpuCluster.deployCR=true), in place of the
	// ClusterPolicy.
	GPUCluster      *PolicyInfo             `json:"gpuCluster,omitempty"`
	Components      []gpusoftware.Component `json:"components"`
	Validators      []ValidatorInfo         `json:"validators,omitempty"`
	UnlabelledNodes []string                `json:"unlabelledGPUNodes,omitempty"`
	// DriverUpgrade is each GPU node's place in the operator's driver upgrade (the upgrade
	// controller's label) and what holds it; empty when no node carries the label.
	DriverUpgrade []DriverUpgradeNode `json:"driverUpgrade,omitempty"`
	// PullFailures are the operator's pods whose image cannot be pulled.
	PullFailures []PullFailure `json:"pullFailures,omitempty"`
	Ready        bool          `json:"ready"`
	// Failing names the first component that is not ready, with a hint.
	Failing string `json:"failing,omitempty"`
	Hint    string `json:"hint,omitempty"`
}

// PolicyInfo is the ClusterPolicy's state.
type PolicyInfo struct {
	State      string      `json:"state"`
	Conditions []Condition `json:"conditions,omitempty"`
}

// Condition is a ClusterPolicy condition.
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// ValidatorInfo is the operator validator's progress on one node.
type ValidatorInfo struct {
	Node string `json:"node"`
	// Steps in order, such as "driver-validation: done".
	Steps []string `json:"steps"`
	Done  bool     `json:"done"`
}

// PullFailure is a pod of the release namespace whose image cannot be pulled.
type PullFailure struct {
	Pod     string `json:"pod"`
	Node    string `json:"node,omitempty"`
	Image   string `json:"image"`
	Message string `json:"message,omitempty"`
}

// pullFailure finds a container (or init container) of p waiting on its image.
func pullFailure(p *corev1.Pod) (image, msg string, ok bool) {
	for _, c := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if w := c.State.Waiting; nodepod.ImagePullFailed(w) {
			return c.Image, w.Message, true
		}
	}
	return "", "", false
}

// CollectStatus reads the ClusterPolicy, the operand DaemonSets, the validator pods and the
// GPU nodes, and names the first thing that is not ready.
func CollectStatus(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, ns string, rel *helmrelease.ReleaseInfo) (*Status, error) {
	st := &Status{TypeMeta: report.Meta(StatusKind), Namespace: ns, Release: rel, Components: []gpusoftware.Component{}}
	cp, err := dyn.Resource(gpusoftware.ClusterPolicyGVR).Get(ctx, gpusoftware.ClusterPolicyName, metav1.GetOptions{})
	if err != nil {
		cp = nil
	}
	switch {
	case err == nil:
		st.ClusterPolicy = policyInfo(cp)
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err) || gpusoftware.IsNoResource(err):
	default:
		return nil, cluster.APIError("get ClusterPolicy "+gpusoftware.ClusterPolicyName, err)
	}
	gc, err := dyn.Resource(gpusoftware.GPUClusterGVR).Get(ctx, gpusoftware.GPUClusterName, metav1.GetOptions{})
	switch {
	case err == nil:
		st.GPUCluster = policyInfo(gc)
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err) || gpusoftware.IsNoResource(err):
	default:
		return nil, cluster.APIError("get GPUCluster "+gpusoftware.GPUClusterName, err)
	}
	dss, err := cs.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cluster.APIError("list DaemonSets in namespace "+ns, err)
	}
	for _, ds := range dss.Items {
		st.Components = append(st.Components, gpusoftware.ComponentOf(&ds))
	}
	sort.Slice(st.Components, func(i, j int) bool { return st.Components[i].Name < st.Components[j].Name })
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cluster.APIError("list pods in namespace "+ns, err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Labels["app"] == "nvidia-operator-validator" {
			st.Validators = append(st.Validators, Validator(p))
		}
		if img, msg, ok := pullFailure(p); ok {
			st.PullFailures = append(st.PullFailures, PullFailure{Pod: p.Name, Node: p.Spec.NodeName, Image: img, Message: msg})
		}
	}
	sort.Slice(st.PullFailures, func(i, j int) bool { return st.PullFailures[i].Pod < st.PullFailures[j].Pod })
	sort.Slice(st.Validators, func(i, j int) bool { return st.Validators[i].Node < st.Validators[j].Node })
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cluster.APIError("list nodes", err)
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if inventory.IsGPUNode(n) && n.Labels[inventory.LabelGPUPresent] != "true" {
			st.UnlabelledNodes = append(st.UnlabelledNodes, n.Name)
		}
	}
	st.DriverUpgrade = DriverUpgrade(ctx, cs, ns, nodes.Items, pods.Items, cp)
	st.judge()
	return st, nil
}

func policyInfo(u *unstructured.Unstructured) *PolicyInfo {
	pi := &PolicyInfo{}
	pi.State, _, _ = unstructured.NestedString(u.Object, "status", "state")
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if !ok {
			continue
		}
		str := func(k string) string { s, _ := m[k].(string); return s }
		pi.Conditions = append(pi.Conditions, Condition{Type: str("type"), Status: str("status"), Reason: str("reason"), Message: str("message")})
	}
	return pi
}

// Validator reads a validator pod: its node, its init containers' steps, whether all are done.
func Validator(p *corev1.Pod) ValidatorInfo {
	v := ValidatorInfo{Node: p.Spec.NodeName, Done: p.Status.Phase == corev1.PodRunning}
	for _, cs := range p.Status.InitContainerStatuses {
		state := "waiting"
		switch {
		case cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0:
			state = "done"
		case cs.State.Terminated != nil:
			state = "failed (exit " + strconv.Itoa(int(cs.State.Terminated.ExitCode)) + ")"
			v.Done = false
		case cs.State.Running != nil:
			state = "running"
			v.Done = false
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "" && cs.State.Waiting.Reason != "PodInitializing":
			state = cs.State.Waiting.Reason
			v.Done = false
		default:
			v.Done = false
		}
		v.Steps = append(v.Steps, cs.Name+": "+state)
	}
	return v
}

// hints per operand, for the first one that is not ready.
var componentHints = map[string]string{
	"nvidia-driver-daemonset":                    "the driver container cannot build or load the driver: check kernel headers and Secure Boot with 'kubectl gpu prep', or use the host driver (driver.enabled=false)",
	"nvidia-container-toolkit-daemonset":         "the toolkit cannot configure containerd: on RKE2/K3s set toolkit.env CONTAINERD_SOCKET (see 'kubectl gpu operator values')",
	"nvidia-device-plugin-daemonset":             "the device plugin waits for the driver and toolkit validations: see the validator steps",
	"nvidia-operator-validator":                  "a validation step fails: see its steps below and 'kubectl logs -n gpu-operator' of the failing init container",
	"gpu-feature-discovery":                      "GPU feature discovery waits for the driver and toolkit",
	"nvidia-dcgm-exporter":                       "DCGM exporter waits for the driver",
	"gpu-operator-node-feature-discovery-worker": "node feature discovery is not running on every node: check its pods",
}

// judge decides readiness and names the first failing component.
func (st *Status) judge() {
	switch {
	case st.Release == nil:
		st.Failing, st.Hint = "release", "the GPU Operator is not installed: run 'kubectl gpu operator install'"
		return
	case st.Release.Status != "deployed":
		st.Failing, st.Hint = "release", fmt.Sprintf("the release is %s: run 'kubectl gpu operator upgrade' or 'helm history -n %s %s'", st.Release.Status, st.Namespace, st.Release.Name)
		return
	case len(st.PullFailures) > 0:
		f := st.PullFailures[0]
		st.Failing = f.Pod
		st.Hint = fmt.Sprintf("image %s cannot be pulled", f.Image)
		if f.Node != "" {
			st.Hint += " on node " + f.Node
		}
		st.Hint += ": mirror it ('kubectl gpu mirror --to REGISTRY') and install with the values it writes, or check the registry and pull secrets"
		return
	case st.ClusterPolicy == nil && st.GPUCluster != nil:
		st.judgeStack("gpucluster", "GPUCluster "+gpusoftware.GPUClusterName, st.GPUCluster)
		return
	case st.ClusterPolicy == nil:
		st.Failing, st.Hint = "clusterpolicy", "ClusterPolicy cluster-policy does not exist yet: the operator creates its status when it starts; check the gpu-operator pod"
		return
	}
	st.judgeStack("clusterpolicy", "ClusterPolicy "+gpusoftware.ClusterPolicyName, st.ClusterPolicy)
	st.judgeDriverUpgrade()
}

// judgeDriverUpgrade: a driver upgrade that has not finished on every node keeps the
// operator from being ready, and says where each node stands and what holds it.
func (st *Status) judgeDriverUpgrade() {
	for _, n := range st.DriverUpgrade {
		if !n.Finished() {
			st.Ready, st.Failing = false, "driver upgrade"
			st.Hint = DriverUpgradeSummary(st.DriverUpgrade, time.Now())
			return
		}
	}
}

// judgeStack judges the operands and the stack's resource (ClusterPolicy or GPUCluster).
func (st *Status) judgeStack(id, what string, p *PolicyInfo) {
	for _, c := range st.Components {
		if c.Ready < c.Desired {
			st.Failing = c.Name
			st.Hint = componentHints[c.Name]
			if st.Hint == "" {
				st.Hint = fmt.Sprintf("see 'kubectl describe daemonset -n %s %s'", st.Namespace, c.Name)
			}
			break
		}
	}
	if p.State == "ready" && st.Failing == "" {
		st.Ready = true
		return
	}
	if st.Failing == "" {
		st.Failing = id
		st.Hint = strings.SplitN(what, " ", 2)[0] + " is " + p.State
		if p.State == "" {
			st.Hint = what + " has no status yet: the gpu-operator Deployment writes it once it runs; check its pod in namespace " + st.Namespace
		}
		for _, c := range p.Conditions {
			if c.Type == "Error" && c.Status == "True" {
				st.Hint += ": " + c.Reason + ": " + c.Message
			}
		}
	}
}

// WriteText prints the status for a terminal.
func (st *Status) WriteText(w io.Writer) error {
	if st.Release != nil {
		fmt.Fprintf(w, "Release:        %s (chart %s, app %s), revision %d, %s, updated %s\n", st.Release.Name, st.Release.Chart, st.Release.AppVersion, st.Release.Revision, st.Release.Status, st.Release.Updated.Format(time.RFC3339))
	} else {
		fmt.Fprintf(w, "Release:        none in namespace %s\n", st.Namespace)
	}
	for _, stack := range []struct {
		label string
		p     *PolicyInfo
	}{{"ClusterPolicy:", st.ClusterPolicy}, {"GPUCluster:", st.GPUCluster}} {
		if stack.p == nil {
			continue
		}
		state := stack.p.State
		if state == "" {
			state = "(no status yet)"
		}
		fmt.Fprintf(w, "%-15s %s\n", stack.label, state)
		for _, c := range stack.p.Conditions {
			fmt.Fprintf(w, "  %s=%s %s %s\n", c.Type, c.Status, c.Reason, c.Message)
		}
	}
	if len(st.Components) > 0 {
		rows := [][]string{}
		for _, c := range st.Components {
			rows = append(rows, []string{c.Name, strconv.Itoa(int(c.Desired)), strconv.Itoa(int(c.Ready)), strconv.Itoa(int(c.Updated))})
		}
		fmt.Fprintln(w)
		if err := report.WriteTable(w, []string{"COMPONENT", "DESIRED", "READY", "UPDATED"}, rows); err != nil {
			return err
		}
	}
	for _, v := range st.Validators {
		fmt.Fprintf(w, "validator on %s: %s\n", v.Node, strings.Join(v.Steps, ", "))
	}
	if len(st.UnlabelledNodes) > 0 {
		fmt.Fprintf(w, "GPU nodes without nvidia.com/gpu.present: %s\n", strings.Join(st.UnlabelledNodes, ", "))
	}
	for _, f := range st.PullFailures {
		fmt.Fprintf(w, "cannot pull %s (pod %s): %s\n", f.Image, f.Pod, f.Message)
	}
	if len(st.DriverUpgrade) > 0 {
		fmt.Fprintln(w, "\ndriver upgrade ("+LabelDriverUpgradeState+"):")
		now := time.Now()
		for _, n := range st.DriverUpgrade {
			fmt.Fprintf(w, "  %s\n", n.Line(now))
		}
	}
	if st.Ready {
		fmt.Fprintln(w, "\nReady: the GPU Operator is ready")
	} else {
		fmt.Fprintf(w, "\nNot ready: %s: %s\n", st.Failing, st.Hint)
	}
	return nil
}

// Summary is a one-line progress form of the status for --wait.
func (st *Status) Summary() string {
	var parts []string
	if st.ClusterPolicy != nil {
		parts = append(parts, "clusterpolicy "+st.ClusterPolicy.State)
	}
	if st.GPUCluster != nil {
		parts = append(parts, "gpucluster "+st.GPUCluster.State)
	}
	for _, c := range st.Components {
		parts = append(parts, fmt.Sprintf("%s %d/%d", strings.TrimPrefix(c.Name, "nvidia-"), c.Ready, c.Desired))
	}
	for _, n := range st.DriverUpgrade {
		if !n.Finished() {
			parts = append(parts, DriverUpgradeSummary(st.DriverUpgrade, time.Now()))
			break
		}
	}
	if len(parts) == 0 {
		return "waiting for the operator"
	}
	return strings.Join(parts, ", ")
}

// ReadyWhat names the resource whose readiness the status follows.
func (st *Status) ReadyWhat() string {
	if st.ClusterPolicy == nil && st.GPUCluster != nil {
		return "GPUCluster " + gpusoftware.GPUClusterName
	}
	return "ClusterPolicy " + gpusoftware.ClusterPolicyName
}
