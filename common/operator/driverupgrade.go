package operator

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
)

// The GPU Operator's driver upgrade controller (NVIDIA k8s-operator-libs' upgrade package,
// driver name "gpu") keeps each node's place in a driver upgrade in this label.
const (
	LabelDriverUpgradeState = "nvidia.com/gpu-driver-upgrade-state"
	LabelDriverUpgradeSkip  = "nvidia.com/gpu-driver-upgrade.skip"
	// Annotations with the start of the two timed waits.
	annotationWaitForJobsStart = "nvidia.com/gpu-driver-upgrade-wait-for-pod-completion-start-time"
	annotationValidationStart  = "nvidia.com/gpu-driver-upgrade-validation-start-time"
)

// The upgrade controller's states, in the order a node goes through them.
const (
	UpgradeRequired    = "upgrade-required"
	UpgradeCordon      = "cordon-required"
	UpgradeWaitForJobs = "wait-for-jobs-required"
	UpgradePodDeletion = "pod-deletion-required"
	UpgradeDrain       = "drain-required"
	UpgradePodRestart  = "pod-restart-required"
	UpgradeValidation  = "validation-required"
	UpgradeUncordon    = "uncordon-required"
	UpgradeDone        = "upgrade-done"
	UpgradeFailed      = "upgrade-failed"
)

// DriverUpgradeNode is one node's place in the operator's driver upgrade, and what holds it
// there when it is not moving by itself.
type DriverUpgradeNode struct {
	Node  string `json:"node"`
	State string `json:"state"`
	// Since is when the node entered the state, as the node says it (the wait's annotation,
	// else the controller's last write of the label); zero when unknown.
	Since time.Time `json:"since,omitempty"`
	// Held says what keeps the node in its state ("" nothing known: it is moving).
	Held string `json:"held,omitempty"`
	// Pods are the pods that hold GPUs on the node (they must end or be evicted before its
	// driver can be unloaded).
	Pods []inventory.GPUPod `json:"pods,omitempty"`
}

// Finished tells whether the node's upgrade ended (done, or no upgrade).
func (n DriverUpgradeNode) Finished() bool { return n.State == "" || n.State == UpgradeDone }

// For is how long the node has been in its state, at now.
func (n DriverUpgradeNode) For(now time.Time) string {
	if n.Since.IsZero() {
		return ""
	}
	return now.Sub(n.Since).Round(time.Second).String()
}

// Line is the node's upgrade in one line: state, for how long, what holds it.
func (n DriverUpgradeNode) Line(now time.Time) string {
	s := n.Node + " " + n.State
	if d := n.For(now); d != "" {
		s += " for " + d
	}
	if n.Held != "" {
		s += ": " + n.Held
	}
	return s
}

// upgradePolicy is what the ClusterPolicy's driver.upgradePolicy says, as the holds need it.
type upgradePolicy struct {
	set         bool
	autoUpgrade bool
	maxParallel int64
	waitTimeout int64 // waitForCompletion.timeoutSeconds
}

func readUpgradePolicy(cp *unstructured.Unstructured) upgradePolicy {
	if cp == nil {
		return upgradePolicy{}
	}
	p := upgradePolicy{autoUpgrade: true}
	up, ok, _ := unstructured.NestedMap(cp.Object, "spec", "driver", "upgradePolicy")
	if !ok {
		return p
	}
	p.set = true
	if v, ok := up["autoUpgrade"].(bool); ok {
		p.autoUpgrade = v
	}
	p.maxParallel, _, _ = unstructured.NestedInt64(up, "maxParallelUpgrades")
	p.waitTimeout, _, _ = unstructured.NestedInt64(up, "waitForCompletion", "timeoutSeconds")
	return p
}

// DriverUpgrade reads each GPU node's place in the operator's driver upgrade (nodes
// without the label are left out) and, for a node that is not moving by itself, what holds
// it: autoUpgrade off or the skip label, the pods that still hold its GPUs with their
// budgets, the driver pod's crash and its last log line ("driver is in use"), the validator
// step it waits at. pods are the operator namespace's pods; cp the ClusterPolicy (nil none).
func DriverUpgrade(ctx context.Context, cs kubernetes.Interface, ns string, nodes []corev1.Node, pods []corev1.Pod, cp *unstructured.Unstructured) []DriverUpgradeNode {
	pol := readUpgradePolicy(cp)
	var out []DriverUpgradeNode
	var held []string // the nodes whose GPU pods matter
	for i := range nodes {
		n := &nodes[i]
		state, ok := n.Labels[LabelDriverUpgradeState]
		if !ok {
			continue
		}
		u := DriverUpgradeNode{Node: n.Name, State: state, Since: since(n, state)}
		switch state {
		case UpgradeWaitForJobs, UpgradePodDeletion, UpgradeDrain, UpgradePodRestart, UpgradeFailed:
			held = append(held, n.Name)
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil
	}
	// The pods that hold a node explain it; reading them is not the status's own job (a
	// role that reads the operator's status need not read every namespace's pods): a read
	// that fails is said on the nodes it concerns.
	gpuPods, podsErr := inventory.GPUPods(ctx, cs, held)
	upgrading := 0
	for _, u := range out {
		if !u.Finished() && u.State != UpgradeRequired && u.State != UpgradeFailed {
			upgrading++
		}
	}
	for i := range out {
		u := &out[i]
		u.Pods = gpuPods[u.Node]
		u.Held = hold(ctx, cs, ns, u, nodeOf(nodes, u.Node), pods, pol, upgrading)
		if podsErr != nil && slices.Contains(held, u.Node) {
			u.Held = strings.TrimPrefix(u.Held+"; the pods on the node that may hold it cannot be read: "+cliexit.OneLine(podsErr.Error()), "; ")
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

func nodeOf(nodes []corev1.Node, name string) *corev1.Node {
	for i := range nodes {
		if nodes[i].Name == name {
			return &nodes[i]
		}
	}
	return nil
}

// since is when the node entered its state: the start of a timed wait where the controller
// writes one, else the time of the controller's last write of the state label.
func since(n *corev1.Node, state string) time.Time {
	for _, k := range map[string][]string{UpgradeWaitForJobs: {annotationWaitForJobsStart}, UpgradeValidation: {annotationValidationStart}}[state] {
		if v := n.Annotations[k]; v != "" {
			var sec int64
			if _, err := fmt.Sscan(v, &sec); err == nil && sec > 0 {
				return time.Unix(sec, 0)
			}
		}
	}
	var last time.Time
	for _, m := range n.ManagedFields {
		if m.FieldsV1 != nil && m.Time != nil && strings.Contains(string(m.FieldsV1.Raw), `"f:`+LabelDriverUpgradeState+`"`) && m.Time.After(last) {
			last = m.Time.Time
		}
	}
	return last
}

// hold says what keeps a node in its state ("" when it moves by itself).
func hold(ctx context.Context, cs kubernetes.Interface, ns string, u *DriverUpgradeNode, n *corev1.Node, pods []corev1.Pod, pol upgradePolicy, upgrading int) string {
	holders := func() string {
		var s []string
		for _, p := range u.Pods {
			h := fmt.Sprintf("pod %s holds %d GPU(s)", p.Pod, p.GPUs)
			if len(p.Budgets) > 0 {
				h += " (" + strings.Join(p.Budgets, ", ") + ")"
			}
			s = append(s, h)
		}
		return strings.Join(s, "; ")
	}
	switch u.State {
	case UpgradeRequired:
		switch {
		case n != nil && n.Labels[LabelDriverUpgradeSkip] == "true":
			return "the node is labelled " + LabelDriverUpgradeSkip + "=true: the controller skips it (remove the label to upgrade it)"
		case pol.set && !pol.autoUpgrade:
			return "driver.upgradePolicy.autoUpgrade is false: the controller does not start an upgrade (set it true, or move the node by hand)"
		case pol.maxParallel > 0 && int64(upgrading) >= pol.maxParallel:
			return fmt.Sprintf("waiting for a slot: %d node(s) upgrading, driver.upgradePolicy.maxParallelUpgrades=%d", upgrading, pol.maxParallel)
		}
		return "waiting for the controller to start it"
	case UpgradeWaitForJobs:
		if h := holders(); h != "" {
			s := "waiting for its GPU jobs to finish: " + h
			if pol.waitTimeout > 0 {
				s += fmt.Sprintf(" (waitForCompletion.timeoutSeconds=%d)", pol.waitTimeout)
			} else {
				s += " (waitForCompletion has no timeout: it waits as long as they run)"
			}
			return s
		}
	case UpgradePodDeletion, UpgradeDrain:
		if h := holders(); h != "" {
			return "waiting for the GPU pods to go: " + h
		}
	case UpgradePodRestart, UpgradeFailed:
		var parts []string
		if d := driverPodProblem(ctx, cs, ns, u.Node, pods); d != "" {
			parts = append(parts, d)
		}
		if h := holders(); h != "" {
			parts = append(parts, "the driver cannot be unloaded while a pod uses it: "+h)
		}
		if u.State == UpgradeFailed {
			parts = append(parts, "fix the cause, then label the node "+LabelDriverUpgradeState+"="+UpgradeRequired+" to retry")
		}
		return strings.Join(parts, "; ")
	case UpgradeValidation:
		for i := range pods {
			if p := &pods[i]; p.Spec.NodeName == u.Node && p.Labels["app"] == "nvidia-operator-validator" {
				v := Validator(p)
				for _, s := range v.Steps {
					if !strings.HasSuffix(s, ": done") {
						return "the validator waits at " + s
					}
				}
			}
		}
	}
	return ""
}

// driverPodProblem is what the driver pod on the node says when it is not running well:
// its container's waiting reason and its log's telling line (the driver manager's "driver
// is in use"), or "" when it runs.
func driverPodProblem(ctx context.Context, cs kubernetes.Interface, ns, node string, pods []corev1.Pod) string {
	for i := range pods {
		p := &pods[i]
		if p.Spec.NodeName != node || p.Labels["app"] != "nvidia-driver-daemonset" {
			continue
		}
		for _, c := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			if c.Ready || c.State.Terminated != nil && c.State.Terminated.ExitCode == 0 {
				continue
			}
			what := "not ready"
			if w := c.State.Waiting; w != nil && w.Reason != "" {
				what = w.Reason
			}
			line := logLine(ctx, cs, ns, p.Name, c.Name)
			if line == "" {
				if t := c.LastTerminationState.Terminated; t != nil && t.Message != "" {
					line = strings.TrimSpace(t.Message)
				}
			}
			s := fmt.Sprintf("driver pod %s, container %s: %s", p.Name, c.Name, what)
			if line != "" {
				s += ": " + line
			}
			return s
		}
	}
	return ""
}

// logLine is the telling line of a container's last log lines: one that says the driver
// is in use, or that something failed, else the last one.
func logLine(ctx context.Context, cs kubernetes.Interface, ns, pod, container string) string {
	tail := int64(20)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	b, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container, TailLines: &tail}).DoRaw(ctx)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.ToLower(lines[i])
		if strings.Contains(l, "in use") || strings.Contains(l, "could not") || strings.Contains(l, "error") || strings.Contains(l, "failed") {
			return strings.TrimSpace(lines[i])
		}
	}
	return strings.TrimSpace(lines[len(lines)-1])
}

// DriverUpgradeSummary counts the nodes of a driver upgrade by state, the finished first:
// "driver upgrade 1/3 done: gpu-b pod-deletion-required for 2m: …". The time is in whole
// minutes, so that a wait's line in a pipe changes when the upgrade does, not every second.
func DriverUpgradeSummary(nodes []DriverUpgradeNode, now time.Time) string {
	done := 0
	var rest []string
	for _, n := range nodes {
		if n.Finished() {
			done++
			continue
		}
		s := n.Node + " " + n.State
		if !n.Since.IsZero() && now.Sub(n.Since) >= time.Minute {
			s += fmt.Sprintf(" for %dm", int(now.Sub(n.Since)/time.Minute))
		}
		if n.Held != "" {
			s += ": " + n.Held
		}
		rest = append(rest, s)
	}
	s := fmt.Sprintf("driver upgrade %d/%d done", done, len(nodes))
	if len(rest) > 0 {
		s += ": " + strings.Join(rest, "; ")
	}
	return s
}

// UpgradePolicy is how the operator's driver upgrade takes nodes out, from the options of
// up's own roll (its flags mean the same for both).
type UpgradePolicy struct {
	// MaxUnavailable: nodes upgraded at once (--max-unavailable).
	MaxUnavailable int
	// Force, DeleteEmptyDirData: kubectl drain's consents (--force, --delete-emptydir-data).
	Force, DeleteEmptyDirData bool
	// DrainTimeout bounds the drain and the GPU pods' deletion on one node (0: the chart's).
	DrainTimeout time.Duration
}

// Derived are the chart values (driver.upgradePolicy) that make the operator's upgrade
// controller drain as the roll does: the controller on, as many nodes at once, the whole
// node drained by kubectl drain's rules (not only the GPU pods deleted), the same consents
// and time.
func (p UpgradePolicy) Derived() []helmrelease.Derived {
	mu := max(p.MaxUnavailable, 1)
	why := fmt.Sprintf("--max-unavailable %d: the operator's driver upgrade takes as many nodes out at once as up's roll", mu)
	out := []helmrelease.Derived{
		{Key: "driver.upgradePolicy.autoUpgrade", Value: true, Reason: "up follows the operator's driver upgrade node by node: its upgrade controller runs it"},
		{Key: "driver.upgradePolicy.maxParallelUpgrades", Value: mu, Reason: why},
		{Key: "driver.upgradePolicy.maxUnavailable", Value: mu, Reason: why},
		{Key: "driver.upgradePolicy.drain.enable", Value: true, Reason: "each node is drained by kubectl drain's rules before its driver is reloaded, as up's roll drains"},
		{Key: "driver.upgradePolicy.drain.force", Value: p.Force, Reason: "--force: pods no controller recreates are drained only with it"},
		{Key: "driver.upgradePolicy.drain.deleteEmptyDir", Value: p.DeleteEmptyDirData, Reason: "--delete-emptydir-data: pods with emptyDir data are drained only with it"},
		{Key: "driver.upgradePolicy.gpuPodDeletion.force", Value: p.Force, Reason: "--force, as the drain"},
		{Key: "driver.upgradePolicy.gpuPodDeletion.deleteEmptyDir", Value: p.DeleteEmptyDirData, Reason: "--delete-emptydir-data, as the drain"},
	}
	if p.DrainTimeout > 0 {
		sec := int(p.DrainTimeout.Seconds())
		out = append(out,
			helmrelease.Derived{Key: "driver.upgradePolicy.drain.timeoutSeconds", Value: sec, Reason: "--drain-timeout " + p.DrainTimeout.String()},
			helmrelease.Derived{Key: "driver.upgradePolicy.gpuPodDeletion.timeoutSeconds", Value: sec, Reason: "--drain-timeout " + p.DrainTimeout.String()})
	}
	return out
}
