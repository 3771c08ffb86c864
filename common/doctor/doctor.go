// Package doctor says why a GPU node does not serve GPUs: for each GPU node it walks the chain
// from the GPUs up to the scheduler — hardware, driver, container toolkit, containerd, the GPU
// software on the node, Kubernetes — gives each link its state and names the first broken one
// with the fix. It only reads: the cluster in a fixed number of list calls whatever the number
// of nodes, and what `kubectl gpu prep` recorded on each node.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/common/xid"
)

// The links of the chain, in order.
const (
	LinkHardware   = "hardware"
	LinkDriver     = "driver"
	LinkToolkit    = "toolkit"
	LinkContainerd = "containerd"
	LinkSoftware   = "software"
	LinkKubernetes = "kubernetes"
)

// Links are the chain's links in order.
var Links = []string{LinkHardware, LinkDriver, LinkToolkit, LinkContainerd, LinkSoftware, LinkKubernetes}

// State is a link's state.
type State string

// Link states.
const (
	OK      State = "ok"
	Warn    State = "warn"
	Broken  State = "broken"
	Unknown State = "unknown"
)

// Verdict is a node's verdict, in the manner of NVIDIA's health tools.
type Verdict string

// Verdicts.
const (
	// Healthy: serves its GPUs.
	Healthy Verdict = "Healthy"
	// Degraded: serves GPUs, with a warning (fewer than it has, a component not ready).
	Degraded Verdict = "Degraded"
	// Unschedulable: GPU pods cannot land there (no GPUs advertised, cordoned, tainted).
	Unschedulable Verdict = "Unschedulable"
	// Faulty: the hardware (a GPU fallen off the bus).
	Faulty Verdict = "Faulty"
)

// Link is one link of a node's chain.
type Link struct {
	Name   string `json:"name"`
	State  State  `json:"state"`
	Detail string `json:"detail"`
	// Fix is what to do (a kubectl gpu command where one exists), for a link not ok.
	Fix string `json:"fix,omitempty"`
	// Remedy is the ladder's step (package remedy) for a link not ok.
	Remedy remedy.Action `json:"remedy,omitempty"`
}

// Node is one GPU node's diagnosis.
type Node struct {
	Node    string  `json:"node"`
	Verdict Verdict `json:"verdict"`
	Links   []Link  `json:"links"`
	// FirstBroken names the first link not ok ("" none), Fix and Remedy are its.
	FirstBroken string        `json:"firstBroken,omitempty"`
	Fix         string        `json:"fix,omitempty"`
	Remedy      remedy.Action `json:"remedy"`
	// Host says where the host links (hardware to containerd) come from: HostAgent (the node
	// agent, this run), HostPrep (what 'kubectl gpu prep' last recorded on the node) or
	// HostUnknown.
	Host string `json:"host"`
	// XIDs are the driver's error events since boot (the agent's read of the kernel log).
	XIDs []xid.Event `json:"xids,omitempty"`
}

// Where a node's host links come from.
const (
	HostAgent   = "agent"
	HostPrep    = "prep"
	HostUnknown = "unknown"
)

// Kind is the kind of the report.
const Kind = "DoctorReport"

// Report is `kubectl gpu doctor`.
type Report struct {
	report.TypeMeta `json:",inline"`
	Items           []Node         `json:"items"`
	Summary         map[string]int `json:"summary"`
	// Notes say what the diagnosis could not read.
	Notes []string `json:"notes,omitempty"`
}

// Healthy tells whether every node is.
func (r *Report) Healthy() bool {
	for _, n := range r.Items {
		if n.Verdict != Healthy {
			return false
		}
	}
	return true
}

// Request chooses the nodes, and how the host links are read.
type Request struct {
	Names    []string
	Selector string
	// Agent, when set, runs the node agent's read-only check on each GPU node (prep's check:
	// unprivileged, the host mounted read-only) for the host links; nil reads what
	// 'kubectl gpu prep' last recorded on the nodes instead.
	Agent *Agent
}

// Agent is how the node agent runs: namespace, image, time per node, nodes at once, and
// where its progress goes (nil: nowhere).
type Agent struct {
	Namespace string
	Image     string
	Timeout   time.Duration
	Parallel  int
	Progress  io.Writer
}

// What the cluster says about the GPU software, read once for every node.
type world struct {
	// pods of the GPU software by node (device plugin, DRA kubelet plugin, GFD, the
	// operator's operands and validator).
	software map[string][]*corev1.Pod
	// pending GPU pods that name a node (node selector on its hostname, or nominated).
	pending map[string][]*corev1.Pod
	// dra: nodes the DRA driver publishes GPUs for, with their device count.
	dra map[string]int
	// verify: the latest failed verify pod kept on each node (verify --keep).
	verify    map[string]*corev1.Pod
	operator  bool
	cs        kubernetes.Interface
	slicesErr error
}

// Diagnose reads the cluster once and diagnoses each GPU node chosen (all GPU nodes, or the
// named ones, or those matching the selector).
// dyn (nil: not asked) reads the GPU Operator's ClusterPolicy and GPUCluster.
func Diagnose(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, req Request) (*Report, error) {
	// Every node (named ones whatever they are); GPU nodes are chosen below, prep's and DRA's
	// included.
	nodes, err := inventory.ListAndChoose(ctx, cs, inventory.Options{Names: req.Names, Selector: req.Selector, All: true})
	if err != nil {
		return nil, err
	}
	w := &world{software: map[string][]*corev1.Pod{}, pending: map[string][]*corev1.Pod{}, dra: map[string]int{}, verify: map[string]*corev1.Pod{}, cs: cs}
	if err := w.readPods(ctx); err != nil {
		return nil, err
	}
	if err := w.readSlices(ctx); err != nil {
		return nil, err
	}
	if dyn != nil {
		as, err := gpusoftware.GPUAllocators(ctx, cs, dyn, "", "")
		if err != nil {
			return nil, err
		}
		for _, a := range as {
			w.operator = w.operator || a.Kind == "ClusterPolicy" || a.Kind == "GPUCluster"
		}
	}
	r := &Report{TypeMeta: report.Meta(Kind), Items: []Node{}, Summary: map[string]int{}}
	if w.slicesErr != nil {
		r.Notes = append(r.Notes, "ResourceSlices not read ("+w.slicesErr.Error()+"): nodes are judged by their extended resources only")
	}
	var gpuNodes []*corev1.Node
	for _, n := range nodes {
		if !inventory.IsGPUNode(n) && w.dra[n.Name] == 0 && len(req.Names) == 0 {
			continue
		}
		gpuNodes = append(gpuNodes, n)
	}
	reports, notes, err := runAgents(ctx, cs, req.Agent, gpuNodes)
	if err != nil {
		return nil, err
	}
	r.Notes = append(r.Notes, notes...)
	for _, n := range gpuNodes {
		d := w.diagnose(ctx, n, reports[n.Name])
		r.Items = append(r.Items, d)
		r.Summary[string(d.Verdict)]++
	}
	sort.Slice(r.Items, func(i, j int) bool { return r.Items[i].Node < r.Items[j].Node })
	return r, nil
}

// readPods reads every pod a page at a time, keeping the GPU software's and the pending GPU
// pods.
func (w *world) readPods(ctx context.Context) error {
	opts := metav1.ListOptions{Limit: inventory.PodPageSize}
	for {
		l, err := w.cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			return cluster.APIError("list pods", err)
		}
		for i := range l.Items {
			p := l.Items[i].DeepCopy()
			switch {
			case software(p) != "" && p.Spec.NodeName != "":
				w.software[p.Spec.NodeName] = append(w.software[p.Spec.NodeName], p)
			case p.Labels[nodepod.LabelManagedBy] == nodepod.ManagedBy && p.Labels[nodepod.LabelComponent] == verify.Component &&
				p.Status.Phase == corev1.PodFailed && p.Spec.NodeName != "":
				if old := w.verify[p.Spec.NodeName]; old == nil || old.CreationTimestamp.Before(&p.CreationTimestamp) {
					w.verify[p.Spec.NodeName] = p
				}
			case p.Status.Phase == corev1.PodPending && p.Spec.NodeName == "" && requestsGPU(p):
				if n := namedNode(p); n != "" {
					w.pending[n] = append(w.pending[n], p)
				}
			}
		}
		if l.Continue == "" {
			return nil
		}
		opts.Continue = l.Continue
	}
}

// readSlices reads the DRA driver's ResourceSlices; a server that does not serve them is a
// note, a refusal an error.
func (w *world) readSlices(ctx context.Context) error {
	l, err := w.cs.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
	switch {
	case apierrors.IsNotFound(err):
		w.slicesErr = errors.New("the API server does not serve resource.k8s.io/v1")
		return nil
	case err != nil:
		return cluster.APIError("list ResourceSlices", err)
	}
	for _, s := range l.Items {
		if s.Spec.NodeName != nil && strings.Contains(s.Spec.Driver, "nvidia.com") {
			w.dra[*s.Spec.NodeName] += len(s.Spec.Devices)
		}
	}
	return nil
}

// The GPU software a pod is, by its image or its operator labels ("" none).
const (
	swDevicePlugin = "device plugin"
	swDRA          = "DRA kubelet plugin"
	swGFD          = "GPU feature discovery"
	swValidator    = "operator validator"
	swDriver       = "driver container"
	swToolkit      = "toolkit container"
)

func software(p *corev1.Pod) string {
	switch p.Labels["app"] {
	case "nvidia-operator-validator":
		return swValidator
	case "nvidia-driver-daemonset":
		return swDriver
	case "nvidia-container-toolkit-daemonset":
		return swToolkit
	}
	for _, c := range p.Spec.Containers {
		repo := imageRepo(c.Image)
		cmd := ""
		if len(c.Command) > 0 {
			cmd = path.Base(c.Command[0])
		}
		switch {
		case repo == gpusoftware.DevicePluginImage && cmd == "gpu-feature-discovery", repo == "gpu-feature-discovery":
			return swGFD
		case repo == gpusoftware.DevicePluginImage && (cmd == "" || cmd == "nvidia-device-plugin"):
			return swDevicePlugin
		case repo == "k8s-dra-driver-gpu" && strings.Contains(strings.Join(append(c.Command, c.Args...), " "), "kubelet-plugin"):
			return swDRA
		}
	}
	return ""
}

func imageRepo(img string) string {
	if i := strings.LastIndex(img, "@"); i >= 0 {
		img = img[:i]
	}
	if i := strings.LastIndex(img, ":"); i > strings.LastIndex(img, "/") {
		img = img[:i]
	}
	return path.Base(img)
}

func requestsGPU(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		for name := range c.Resources.Limits {
			if inventory.IsGPUResource(name) {
				return true
			}
		}
	}
	return len(p.Spec.ResourceClaims) > 0
}

// namedNode is the node a pending pod is meant for: nominated, or selected by hostname.
func namedNode(p *corev1.Pod) string {
	if p.Status.NominatedNodeName != "" {
		return p.Status.NominatedNodeName
	}
	return p.Spec.NodeSelector["kubernetes.io/hostname"]
}

// gpusOf is what the node's GPUs are by each source: prep's PCI count, GFD's NVML count.
func gpusOf(n *corev1.Node) (pci, nvml int, pciKnown, nvmlKnown bool) {
	if v, ok := n.Annotations[rep.AnnotationGPUs]; ok {
		pci, _ = strconv.Atoi(v)
		pciKnown = true
	}
	if v, ok := n.Labels["nvidia.com/gpu.count"]; ok {
		nvml, _ = strconv.Atoi(v)
		nvmlKnown = true
	}
	return
}

func (w *world) diagnose(ctx context.Context, n *corev1.Node, hr *rep.Report) Node {
	d := Node{Node: n.Name, Host: HostUnknown}
	if hr != nil {
		n = withReport(n, hr)
		d.Host, d.XIDs = HostAgent, hr.XIDs
	}
	prepped := n.Annotations[rep.AnnotationReportedAt] != ""
	if prepped && hr == nil {
		d.Host = HostPrep
	}
	pods := w.software[n.Name]
	byKind := map[string]*corev1.Pod{}
	for _, p := range pods {
		if _, ok := byKind[software(p)]; !ok {
			byKind[software(p)] = p
		}
	}

	facts, _ := rep.FactsFrom(n.Annotations)
	pci, nvml, pciKnown, nvmlKnown := gpusOf(n)
	d.add(hardwareLink(n, facts, pci, nvml, pciKnown, nvmlKnown))
	d.add(w.driverLink(ctx, n, facts, prepped, byKind))
	d.add(w.toolkitLink(ctx, n, facts, prepped, byKind))
	d.add(containerdLink(n, facts, prepped, byKind))

	// A container on the node could not use its GPUs: the CUDA sample of a verify pod kept
	// there (verify --keep) says why.
	if vp := w.verify[n.Name]; vp != nil {
		w.verifyFailed(ctx, &d, vp)
	}

	// 5. GPU software on the node.
	alloc := inventory.AllocatableGPUs(n)
	d.add(w.softwareLink(ctx, n, byKind, alloc))

	// 6. Kubernetes: allocatable against the hardware, cordon and taints, pending GPU pods.
	k := w.kubernetesLink(n, alloc, pci, pciKnown)
	if k.State == Warn && k.Remedy == remedy.Restart && byKind[swDevicePlugin] != nil {
		// Fewer GPUs than the hardware: the XIDs the device plugin logged say which and why.
		w.unhealthyWhy(ctx, byKind[swDevicePlugin], &k)
	}
	d.add(k)

	if hr != nil {
		w.hostFindings(&d, n, hr, byKind)
	}
	d.judge()
	return d
}

func (d *Node) add(l Link) { d.Links = append(d.Links, l) }

// judge gives the verdict, the first link not ok and its fix: Faulty for broken hardware;
// otherwise, while the node still advertises GPUs (its kubernetes link not broken), Degraded
// for any link not ok, else Unschedulable.
func (d *Node) judge() {
	d.Verdict, d.Remedy = Healthy, remedy.None
	servesGPUs := true
	for _, l := range d.Links {
		if l.Name == LinkKubernetes && l.State == Broken {
			servesGPUs = false
		}
	}
	for _, l := range d.Links {
		if l.State == OK || l.State == Unknown && servesGPUs {
			continue
		}
		if l.Name == LinkHardware && l.State == Broken {
			d.Verdict, d.FirstBroken, d.Fix, d.Remedy = Faulty, l.Name, l.Fix, l.Remedy
			return
		}
		if d.FirstBroken == "" {
			d.FirstBroken, d.Fix, d.Remedy = l.Name, l.Fix, l.Remedy
		}
		if servesGPUs {
			d.Verdict = Degraded
		} else {
			d.Verdict = Unschedulable
		}
	}
}

// WriteText prints a row per node with each link's state, then for each node not healthy its
// first broken link, what was found and the fix.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NODE\tVERDICT\t"+strings.ToUpper(strings.Join(Links, "\t")))
	for _, n := range r.Items {
		row := []string{n.Node, string(n.Verdict)}
		for _, l := range n.Links {
			row = append(row, string(l.State))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range r.Items {
		if n.FirstBroken == "" {
			continue
		}
		for _, l := range n.Links {
			if l.Name != n.FirstBroken {
				continue
			}
			fmt.Fprintf(w, "\n%s: %s: %s\n", n.Node, l.Name, l.Detail)
			switch {
			case n.Fix != "" && n.Remedy != remedy.None:
				fmt.Fprintf(w, "    → %s (%s)\n", n.Fix, n.Remedy)
			case n.Fix != "":
				fmt.Fprintf(w, "    → %s\n", n.Fix)
			}
		}
	}
	var counts []string
	for _, v := range []Verdict{Healthy, Degraded, Unschedulable, Faulty} {
		if c := r.Summary[string(v)]; c > 0 {
			counts = append(counts, fmt.Sprintf("%d %s", c, strings.ToLower(string(v))))
		}
	}
	if len(r.Items) == 0 {
		counts = append(counts, "no GPU node")
	}
	fmt.Fprintf(w, "\n%s: %s\n", report.Count(len(r.Items), "GPU node"), strings.Join(counts, ", "))
	for _, note := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", note)
	}
	return nil
}
