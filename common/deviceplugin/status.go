package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// StatusKind is the kind of the status document.
const StatusKind = "DevicePluginStatus"

// Status is the releases, their DaemonSets and, per GPU node, each DaemonSet's pod there and
// whether the node advertises GPUs.
type Status struct {
	report.TypeMeta `json:",inline"`
	Namespace       string                    `json:"namespace"`
	Releases        []helmrelease.ReleaseInfo `json:"releases"`
	DaemonSets      []gpusoftware.Component   `json:"daemonSets"`
	Nodes           []NodeStatus              `json:"nodes"`
	Ready           bool                      `json:"ready"`
	// Failing names the first thing not ready, Hint what to do.
	Failing string `json:"failing,omitempty"`
	Hint    string `json:"hint,omitempty"`
}

// NodeStatus is one GPU node: its pods of the releases and the GPUs it advertises.
type NodeStatus struct {
	Node string `json:"node"`
	// GPUs is the node's allocatable GPU resources (nvidia.com/gpu, shared, MIG), summed.
	GPUs int64      `json:"gpus"`
	Pods []PodState `json:"pods"`
	// Problem is why the node does not serve GPUs through the plugin ("" it does).
	Problem string `json:"problem,omitempty"`
}

// PodState is one DaemonSet's pod on a node.
type PodState struct {
	DaemonSet string `json:"daemonSet"`
	Pod       string `json:"pod,omitempty"`
	Ready     bool   `json:"ready"`
	// State is Running, or what holds the pod (ImagePullBackOff, CrashLoopBackOff,
	// Pending: why, missing).
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
}

// CollectStatus reads the releases, their DaemonSets and pods, and the GPU nodes. A pod that
// crashes has its log read for the line that says why (NVML, CDI).
func CollectStatus(ctx context.Context, c *helmrelease.Client, releases []string) (*Status, error) {
	st := &Status{TypeMeta: report.Meta(StatusKind), Namespace: c.Namespace, Releases: []helmrelease.ReleaseInfo{}, DaemonSets: []gpusoftware.Component{}, Nodes: []NodeStatus{}}
	for _, name := range releases {
		ri, err := c.Helm.ReleaseStatus(name)
		if err != nil {
			return nil, err
		}
		if ri != nil {
			st.Releases = append(st.Releases, *ri)
		}
	}
	if len(st.Releases) == 0 {
		return nil, cliexit.Usagef("no release %s in namespace %s: install it with 'kubectl gpu device-plugin install' (or pass --namespace / --release-name)", strings.Join(releases, " or "), c.Namespace)
	}
	dss, err := c.CS.AppsV1().DaemonSets(c.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cluster.APIError("list DaemonSets in namespace "+c.Namespace, err)
	}
	var mine []*appsv1.DaemonSet
	for i := range dss.Items {
		ds := &dss.Items[i]
		for _, r := range st.Releases {
			if ds.Annotations[gpusoftware.AnnotationHelmRelease] == r.Name {
				mine = append(mine, ds)
				st.DaemonSets = append(st.DaemonSets, gpusoftware.ComponentOf(ds))
			}
		}
	}
	sort.Slice(mine, func(i, j int) bool { return mine[i].Name < mine[j].Name })
	sort.Slice(st.DaemonSets, func(i, j int) bool { return st.DaemonSets[i].Name < st.DaemonSets[j].Name })
	pods, err := c.CS.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cluster.APIError("list pods in namespace "+c.Namespace, err)
	}
	nodes, err := c.CS.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cluster.APIError("list nodes", err)
	}
	for _, n := range GPUNodes(nodes.Items) {
		ns := NodeStatus{Node: n.Name, GPUs: inventory.AllocatableGPUs(n), Pods: []PodState{}}
		for _, ds := range mine {
			if !runsOn(ds, n) {
				continue
			}
			ns.Pods = append(ns.Pods, podState(ctx, c.CS, ds, n.Name, pods.Items))
		}
		ns.Problem = nodeProblem(&ns, mine)
		st.Nodes = append(st.Nodes, ns)
	}
	st.judge()
	return st, nil
}

// runsOn tells whether the DaemonSet's pod template may run on the node: its node selector
// and required node affinity (taints aside: the charts tolerate the GPU taints).
func runsOn(ds *appsv1.DaemonSet, n *corev1.Node) bool {
	spec := ds.Spec.Template.Spec
	if !labels.SelectorFromSet(spec.NodeSelector).Matches(labels.Set(n.Labels)) {
		return false
	}
	if spec.Affinity == nil || spec.Affinity.NodeAffinity == nil || spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return true
	}
	for _, t := range spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		if termMatches(t, n.Labels) {
			return true
		}
	}
	return false
}

func termMatches(t corev1.NodeSelectorTerm, l map[string]string) bool {
	if len(t.MatchExpressions) == 0 {
		return false
	}
	for _, e := range t.MatchExpressions {
		v, has := l[e.Key]
		ok := false
		switch e.Operator {
		case corev1.NodeSelectorOpIn:
			for _, x := range e.Values {
				ok = ok || has && v == x
			}
		case corev1.NodeSelectorOpNotIn:
			ok = true
			for _, x := range e.Values {
				ok = ok && !(has && v == x)
			}
		case corev1.NodeSelectorOpExists:
			ok = has
		case corev1.NodeSelectorOpDoesNotExist:
			ok = !has
		default:
			ok = false
		}
		if !ok {
			return false
		}
	}
	return true
}

// podState is the DaemonSet's pod on node, and what holds it.
func podState(ctx context.Context, cs kubernetes.Interface, ds *appsv1.DaemonSet, node string, pods []corev1.Pod) PodState {
	for i := range pods {
		p := &pods[i]
		if p.Spec.NodeName != node && !(p.Spec.NodeName == "" && pendingFor(p, node)) || !ownedBy(p, ds) {
			continue
		}
		h := nodepod.Hold(ctx, cs, p)
		return PodState{DaemonSet: ds.Name, Pod: p.Name, Ready: h.Ready, State: h.State, Message: h.Message}
	}
	return PodState{DaemonSet: ds.Name, State: "missing", Message: "no pod of the DaemonSet on this node yet"}
}

// pendingFor tells whether an unscheduled DaemonSet pod is meant for node (the DaemonSet
// controller pins each pod with a node affinity on metadata.name).
func pendingFor(p *corev1.Pod, node string) bool {
	a := p.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return false
	}
	for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, f := range t.MatchFields {
			if f.Key == "metadata.name" && len(f.Values) == 1 && f.Values[0] == node {
				return true
			}
		}
	}
	return false
}

func ownedBy(p *corev1.Pod, ds *appsv1.DaemonSet) bool {
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" && o.Name == ds.Name {
			return true
		}
	}
	return false
}

// nodeProblem says why a GPU node does not serve GPUs through the plugin ("" when it does).
func nodeProblem(ns *NodeStatus, dss []*appsv1.DaemonSet) string {
	var plugin *PodState
	for i := range ns.Pods {
		p := &ns.Pods[i]
		if !p.Ready {
			what := p.State
			if p.Message != "" {
				what += ": " + p.Message
			}
			return fmt.Sprintf("%s pod %s", p.DaemonSet, what)
		}
		if isPluginDS(p.DaemonSet, dss) {
			plugin = p
		}
	}
	switch {
	case plugin == nil:
		return "no device plugin pod: the DaemonSet does not select this node (see the nodeLabels of 'kubectl gpu device-plugin values')"
	case ns.GPUs == 0:
		return "the device plugin runs but the node advertises no nvidia.com/gpu yet"
	}
	return ""
}

func isPluginDS(name string, dss []*appsv1.DaemonSet) bool {
	for _, ds := range dss {
		if ds.Name == name {
			return gpusoftware.RunsDevicePlugin(ds)
		}
	}
	return false
}

func (st *Status) judge() {
	st.Ready = true
	for _, r := range st.Releases {
		if r.Status != "deployed" {
			st.Ready, st.Failing, st.Hint = false, "release "+r.Name+" is "+r.Status, "see 'helm history "+r.Name+" -n "+st.Namespace+"'"
			return
		}
	}
	if len(st.Nodes) == 0 {
		st.Ready, st.Failing, st.Hint = false, "no GPU node in the cluster", "run 'kubectl gpu prep --all' to find GPU nodes"
		return
	}
	for _, n := range st.Nodes {
		if n.Problem != "" {
			st.Ready, st.Failing = false, n.Node+": "+n.Problem
			st.Hint = hintFor(n.Problem)
			return
		}
	}
}

func hintFor(problem string) string {
	switch {
	case strings.Contains(problem, "ImagePull"), strings.Contains(problem, "ErrImage"):
		return "the node cannot pull the image: check its registry access, or mirror the images ('kubectl gpu mirror --device-plugin --to REGISTRY', then --mirror)"
	case strings.Contains(problem, "NVML"), strings.Contains(problem, "nvml"):
		return "the plugin cannot reach the driver: check the node with 'kubectl gpu prep NODE' (host driver, nvidia runtime, runtimeClassName)"
	case strings.Contains(problem, "CrashLoopBackOff"), strings.Contains(problem, "Error"):
		return "read the pod's log: kubectl logs -n NAMESPACE POD --previous"
	case strings.Contains(problem, "Pending"):
		return "the scheduler cannot place the pod: see its events (kubectl describe pod)"
	}
	return "run 'kubectl gpu verify' once the device plugin is up"
}

// Summary is one line: ready nodes and the first failing one.
func (st *Status) Summary() string {
	ok := 0
	for _, n := range st.Nodes {
		if n.Problem == "" {
			ok++
		}
	}
	s := fmt.Sprintf("%d/%d GPU nodes serve GPUs", ok, len(st.Nodes))
	if st.Failing != "" {
		s += "; " + st.Failing
	}
	return s
}

// WriteText prints the releases, the DaemonSets and one line per GPU node.
func (st *Status) WriteText(w io.Writer) error {
	for _, r := range st.Releases {
		fmt.Fprintf(w, "Release %s: revision %d %s, chart %s, namespace %s\n", r.Name, r.Revision, r.Status, r.Chart, st.Namespace)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nDAEMONSET\tDESIRED\tREADY\tUPDATED")
	for _, d := range st.DaemonSets {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", d.Name, d.Desired, d.Ready, d.Updated)
	}
	fmt.Fprintln(tw, "\nNODE\tGPUS\tPODS\tPROBLEM")
	for _, n := range st.Nodes {
		var pods []string
		for _, p := range n.Pods {
			state := p.State
			if p.Ready {
				state = "Ready"
			}
			pods = append(pods, p.DaemonSet+"="+state)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", n.Node, n.GPUs, dash(strings.Join(pods, ",")), dash(n.Problem))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.Ready {
		fmt.Fprintf(w, "\nReady: %s\n", st.Summary())
		return nil
	}
	_, err := fmt.Fprintf(w, "\nNot ready: %s\nHint: %s\n", st.Summary(), st.Hint)
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WaitReady follows the status every two seconds until every GPU node serves GPUs or timeout
// passes, showing what it waits for (a live line on the Client's Progress, else a line per
// change on its Log). Not ready in time is exit 1 naming the first failing node.
func WaitReady(ctx context.Context, c *helmrelease.Client, releases []string, timeout time.Duration) (*Status, error) {
	st, err := helmrelease.Follow(ctx, c, timeout, func(ctx context.Context) (*Status, string, bool, error) {
		st, err := CollectStatus(ctx, c, releases)
		if err != nil {
			return nil, "", false, err
		}
		return st, st.Summary(), st.Ready, nil
	})
	if errors.Is(err, helmrelease.ErrNotReadyInTime) {
		return st, cliexit.Failuresf("the device plugin does not serve GPUs on every GPU node after %s: %s: %s", timeout, st.Failing, st.Hint)
	}
	return st, err
}
