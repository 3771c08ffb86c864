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
	"k8s.io/utils/ptr"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
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

// Remediation is a step of the ladder, from the least to the most disruptive.
type Remediation string

// The remediation ladder.
const (
	RemedyNone    Remediation = "none"
	RemedyRestart Remediation = "restart the component"
	RemedyReset   Remediation = "drain and reset the GPU"
	RemedyReboot  Remediation = "reboot"
	RemedyService Remediation = "service the hardware"
	// RemedyConfigure: set up what is missing (install, configure, label): no restart helps.
	RemedyConfigure Remediation = "configure"
)

// Link is one link of a node's chain.
type Link struct {
	Name   string `json:"name"`
	State  State  `json:"state"`
	Detail string `json:"detail"`
	// Fix is what to do (a kubectl gpu command where one exists), for a link not ok.
	Fix string `json:"fix,omitempty"`
	// Remedy is the ladder's step for a link not ok.
	Remedy Remediation `json:"remedy,omitempty"`
}

// Node is one GPU node's diagnosis.
type Node struct {
	Node    string  `json:"node"`
	Verdict Verdict `json:"verdict"`
	Links   []Link  `json:"links"`
	// FirstBroken names the first link not ok ("" none), Fix and Remedy are its.
	FirstBroken string      `json:"firstBroken,omitempty"`
	Fix         string      `json:"fix,omitempty"`
	Remedy      Remediation `json:"remedy"`
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
		as, err := op.GPUAllocators(ctx, cs, dyn, "", "")
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
		case repo == op.DevicePluginImage && cmd == "gpu-feature-discovery", repo == "gpu-feature-discovery":
			return swGFD
		case repo == op.DevicePluginImage && (cmd == "" || cmd == "nvidia-device-plugin"):
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
	if v, ok := n.Annotations[op.AnnotationGPUs]; ok {
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

	// 1. hardware: GPUs on the PCI bus (prep) against GPUs NVML sees (GFD).
	pci, nvml, pciKnown, nvmlKnown := gpusOf(n)
	switch {
	case pciKnown && nvmlKnown && nvml < pci:
		d.add(Link{Name: LinkHardware, State: Broken, Remedy: RemedyService,
			Detail: fmt.Sprintf("%d GPUs on the PCI bus, NVML sees %d: a GPU fell off the bus", pci, nvml),
			Fix:    "drain the node (kubectl drain " + n.Name + "), reboot it; if the GPU stays missing, have it serviced"})
	case pciKnown && pci == 0:
		d.add(Link{Name: LinkHardware, State: Broken, Remedy: RemedyService, Detail: "prep found no NVIDIA GPU on the PCI bus", Fix: "check the node's hardware, or remove its GPU labels"})
	case pciKnown && nvmlKnown:
		d.add(Link{Name: LinkHardware, State: OK, Detail: fmt.Sprintf("%d GPUs on the PCI bus, %d seen by NVML", pci, nvml)})
	case pciKnown:
		d.add(Link{Name: LinkHardware, State: OK, Detail: fmt.Sprintf("%d GPUs on the PCI bus (NVML's count unknown: no GPU feature discovery labels)", pci)})
	default:
		d.add(Link{Name: LinkHardware, State: Unknown, Detail: "not checked by prep", Fix: "kubectl gpu prep " + n.Name})
	}

	// The GPUs' own health, as prep's NVML read found it.
	if l := &d.Links[0]; l.State != Broken {
		detail := n.Annotations[op.AnnotationGPUHealthDetail]
		switch n.Annotations[op.AnnotationGPUHealth] {
		case rep.HealthService:
			*l = Link{Name: LinkHardware, State: Broken, Remedy: RemedyService, Detail: detail, Fix: "drain the node (kubectl drain " + n.Name + ") and have the GPU serviced"}
		case rep.HealthReset:
			*l = Link{Name: LinkHardware, State: Broken, Remedy: RemedyReset, Detail: detail,
				Fix: "drain the GPU's workloads and reset it (nvidia-smi -r), or reboot the node (kubectl gpu prep " + n.Name + " --apply --reboot)"}
		case rep.HealthWarn:
			*l = Link{Name: LinkHardware, State: Warn, Remedy: RemedyNone, Detail: l.Detail + "; " + detail, Fix: "check the node's cooling and power"}
		}
	}

	// 2. driver: the host's (prep) or the operator's driver container.
	hostDriver := n.Annotations[op.AnnotationDriver]
	upgrade := n.Labels["nvidia.com/gpu-driver-upgrade-state"]
	switch drv := byKind[swDriver]; {
	case upgrade == "upgrade-failed":
		d.add(Link{Name: LinkDriver, State: Broken, Remedy: RemedyReboot, Detail: "the operator's driver upgrade failed on this node (nvidia.com/gpu-driver-upgrade-state=upgrade-failed)",
			Fix: "read the driver pod's log, fix the cause, then label the node nvidia.com/gpu-driver-upgrade-state=upgrade-required to retry"})
	case drv != nil:
		if h := nodepod.Hold(ctx, w.cs, drv); !h.Ready {
			d.add(Link{Name: LinkDriver, State: Broken, Remedy: RemedyRestart, Detail: fmt.Sprintf("the operator's driver pod %s/%s is %s: %s", drv.Namespace, drv.Name, h.State, h.Message),
				Fix: "kubectl logs -n " + drv.Namespace + " " + drv.Name + "; check headers and Secure Boot with 'kubectl gpu prep " + n.Name + "'"})
		} else {
			d.add(Link{Name: LinkDriver, State: OK, Detail: "the operator's driver container runs (" + drv.Name + ")"})
		}
	case hostDriver != "":
		d.add(Link{Name: LinkDriver, State: OK, Detail: "host driver " + hostDriver})
	case upgrade == "validation-required" || upgrade == "pod-restart-required":
		d.add(Link{Name: LinkDriver, State: Warn, Remedy: RemedyRestart, Detail: "driver upgrade waiting at " + upgrade, Fix: "see 'kubectl gpu operator status'"})
	case n.Labels[op.LabelDeployDriver] == "pre-installed":
		d.add(Link{Name: LinkDriver, State: OK, Detail: "host driver (the operator found it pre-installed)"})
	case prepped:
		d.add(Link{Name: LinkDriver, State: Broken, Remedy: RemedyConfigure, Detail: "no driver: none on the host (prep) and no operator driver pod on the node",
			Fix: "kubectl gpu prep " + n.Name + " --apply --install-driver --reboot, or the GPU Operator's driver (kubectl gpu operator install)"})
	default:
		d.add(Link{Name: LinkDriver, State: Unknown, Detail: "not checked by prep and no operator driver pod", Fix: "kubectl gpu prep " + n.Name})
	}

	// 3. container toolkit, 4. containerd's nvidia runtime.
	hostToolkit := n.Annotations[op.AnnotationToolkit]
	switch tk := byKind[swToolkit]; {
	case tk != nil:
		if h := nodepod.Hold(ctx, w.cs, tk); !h.Ready {
			d.add(Link{Name: LinkToolkit, State: Broken, Remedy: RemedyRestart, Detail: fmt.Sprintf("the operator's toolkit pod %s/%s is %s: %s", tk.Namespace, tk.Name, h.State, h.Message),
				Fix: "kubectl logs -n " + tk.Namespace + " " + tk.Name + " (on RKE2/K3s: the containerd socket, see 'kubectl gpu operator values')"})
		} else {
			d.add(Link{Name: LinkToolkit, State: OK, Detail: "the operator's toolkit container runs (" + tk.Name + ")"})
		}
	case hostToolkit != "":
		d.add(Link{Name: LinkToolkit, State: OK, Detail: "host toolkit " + hostToolkit})
	case prepped:
		d.add(Link{Name: LinkToolkit, State: Broken, Remedy: RemedyConfigure, Detail: "no NVIDIA Container Toolkit on the host and no operator toolkit pod",
			Fix: "kubectl gpu prep " + n.Name + " --apply --install-toolkit, or the GPU Operator's toolkit"})
	default:
		d.add(Link{Name: LinkToolkit, State: Unknown, Detail: "not checked by prep", Fix: "kubectl gpu prep " + n.Name})
	}
	switch rt := n.Annotations[op.AnnotationNvidiaRuntime]; {
	case byKind[swToolkit] != nil:
		d.add(Link{Name: LinkContainerd, State: OK, Detail: "configured by the operator's toolkit container"})
	case rt == "true":
		det := "nvidia runtime configured"
		if def := n.Annotations[op.AnnotationDefaultRuntime]; def != "" {
			det += ", default runtime " + def
		}
		if n.Annotations[op.AnnotationCDI] == "true" {
			det += ", CDI on"
		}
		d.add(Link{Name: LinkContainerd, State: OK, Detail: det})
	case prepped && hostToolkit != "":
		d.add(Link{Name: LinkContainerd, State: Broken, Remedy: RemedyConfigure, Detail: "the toolkit is installed but containerd has no nvidia runtime (overwritten by an upgrade?)",
			Fix: "kubectl gpu prep " + n.Name + " --apply --restart-runtime"})
	case prepped:
		d.add(Link{Name: LinkContainerd, State: Broken, Remedy: RemedyConfigure, Detail: "containerd has no nvidia runtime", Fix: "install the toolkit (kubectl gpu prep " + n.Name + " --apply --install-toolkit)"})
	default:
		d.add(Link{Name: LinkContainerd, State: Unknown, Detail: "not checked by prep", Fix: "kubectl gpu prep " + n.Name})
	}

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
	if k.State == Warn && k.Remedy == RemedyRestart && byKind[swDevicePlugin] != nil {
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

func (w *world) softwareLink(ctx context.Context, n *corev1.Node, byKind map[string]*corev1.Pod, alloc int64) Link {
	if v := byKind[swValidator]; v != nil {
		if vi := op.Validator(v); !vi.Done {
			stuck := ""
			for _, s := range vi.Steps {
				if !strings.HasSuffix(s, ": done") {
					stuck = s
					break
				}
			}
			return Link{Name: LinkSoftware, State: Broken, Remedy: RemedyRestart, Detail: fmt.Sprintf("the operator's validator %s is stuck at %s", v.Name, stuck),
				Fix: "kubectl logs -n " + v.Namespace + " " + v.Name + " -c " + strings.SplitN(stuck, ":", 2)[0]}
		}
	}
	plugin, kind := byKind[swDevicePlugin], swDevicePlugin
	if plugin == nil {
		plugin, kind = byKind[swDRA], swDRA
	}
	if plugin == nil {
		fix := "kubectl gpu device-plugin install, or kubectl gpu operator install"
		if w.operator {
			fix = "the operator runs no device plugin here: see 'kubectl gpu operator status' (is the node labelled nvidia.com/gpu.present=true?)"
		}
		if alloc > 0 || w.dra[n.Name] > 0 {
			return Link{Name: LinkSoftware, State: Warn, Detail: "GPUs are advertised but no NVIDIA device plugin or DRA kubelet plugin pod runs on the node (another plugin?)"}
		}
		return Link{Name: LinkSoftware, State: Broken, Remedy: RemedyConfigure, Detail: "no NVIDIA device plugin or DRA kubelet plugin pod on the node", Fix: fix}
	}
	if h := nodepod.Hold(ctx, w.cs, plugin); !h.Ready {
		l := Link{Name: LinkSoftware, State: Broken, Remedy: RemedyRestart, Detail: fmt.Sprintf("the %s pod %s/%s is %s: %s", kind, plugin.Namespace, plugin.Name, h.State, h.Message),
			Fix: "kubectl logs -n " + plugin.Namespace + " " + plugin.Name + "; then kubectl delete pod -n " + plugin.Namespace + " " + plugin.Name + " to restart it"}
		if h.ImagePull {
			l.Remedy = RemedyConfigure
			l.Fix = "the node cannot pull the image: check its registry access, or mirror the images (kubectl gpu mirror --to REGISTRY, then install with --mirror)"
		}
		return l
	}
	det := "the " + kind + " runs (" + plugin.Name + ")"
	if byKind[swGFD] != nil && n.Labels[inventory.LabelProduct] == "" {
		return Link{Name: LinkSoftware, State: Warn, Remedy: RemedyRestart, Detail: det + "; GPU feature discovery runs but the node has no nvidia.com/gpu.product label",
			Fix: "kubectl logs -n " + byKind[swGFD].Namespace + " " + byKind[swGFD].Name}
	}
	return Link{Name: LinkSoftware, State: OK, Detail: det}
}

func (w *world) kubernetesLink(n *corev1.Node, alloc int64, pci int, pciKnown bool) Link {
	dra := w.dra[n.Name]
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
			return Link{Name: LinkKubernetes, State: Broken, Remedy: RemedyReboot, Detail: "the node is NotReady: " + c.Message, Fix: "check the kubelet on " + n.Name}
		}
	}
	if n.Spec.Unschedulable {
		return Link{Name: LinkKubernetes, State: Broken, Remedy: RemedyConfigure, Detail: "the node is cordoned", Fix: "kubectl uncordon " + n.Name + " (or let a running 'kubectl gpu prep --reboot' finish)"}
	}
	var taints []string
	for _, t := range n.Spec.Taints {
		if (t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute) && t.Key != string(inventory.ResourceGPU) {
			taints = append(taints, t.Key+":"+string(t.Effect))
		}
	}
	if alloc == 0 && dra == 0 {
		return Link{Name: LinkKubernetes, State: Broken, Remedy: RemedyRestart, Detail: "the node advertises no GPU (allocatable nvidia.com/gpu 0, no ResourceSlice)",
			Fix: "see the software link; a device plugin that runs but registers nothing: restart it"}
	}
	if len(w.pending[n.Name]) > 0 {
		p := w.pending[n.Name][0]
		msg := ""
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				msg = c.Message
			}
		}
		return Link{Name: LinkKubernetes, State: Warn, Detail: fmt.Sprintf("%d GPU pods Pending for this node, %s/%s: %s", len(w.pending[n.Name]), p.Namespace, p.Name, msg),
			Fix: "kubectl describe pod -n " + p.Namespace + " " + p.Name}
	}
	if len(taints) > 0 {
		return Link{Name: LinkKubernetes, State: Warn, Detail: "taints keep pods without a toleration off: " + strings.Join(taints, ", "), Fix: "give GPU pods the toleration, or remove the taint"}
	}
	det := fmt.Sprintf("%d GPUs allocatable", alloc)
	if dra > 0 {
		det = fmt.Sprintf("%d GPU devices published through DRA", dra)
	}
	// Sharing and MIG advertise more than the hardware has: only fewer is a warning.
	if pciKnown && alloc > 0 && alloc < int64(pci) && !op.MIGEnabled(n) {
		return Link{Name: LinkKubernetes, State: Warn, Remedy: RemedyRestart, Detail: fmt.Sprintf("%s of %d GPUs: the device plugin marks the others unhealthy (an XID?)", det, pci),
			Fix: "kubectl gpu prep " + n.Name + " to read the GPUs; restart the device plugin once they are healthy"}
	}
	return Link{Name: LinkKubernetes, State: OK, Detail: det}
}

// unhealthyWhy reads the device plugin's log for the XIDs that made it mark GPUs unhealthy
// and sets the link's detail, fix and remedy from the worst (NVIDIA's catalog).
func (w *world) unhealthyWhy(ctx context.Context, plugin *corev1.Pod, l *Link) {
	b, err := nodepod.ReadLog(ctx, w.cs, plugin.Namespace, plugin.Name, &corev1.PodLogOptions{TailLines: ptr.To[int64](500)})
	if err != nil {
		return
	}
	e, ok := xid.Worst(xid.FromDevicePlugin(string(b)))
	if !ok {
		return
	}
	l.Detail += fmt.Sprintf("; the device plugin logged XID %d on %s: %s", e.XID, e.PCI, e.Meaning)
	switch e.Action {
	case xid.Service:
		l.Remedy, l.Fix = RemedyService, "drain the node, reboot it; if the GPU stays missing, have it serviced"
	case xid.Reboot:
		l.Remedy, l.Fix = RemedyReboot, "drain and reboot the node"
	case xid.ResetGPU:
		l.Remedy, l.Fix = RemedyReset, "drain the GPU's pods and reset it (nvidia-smi -r -i "+e.PCI+"), then restart the device plugin (kubectl delete pod -n "+plugin.Namespace+" "+plugin.Name+")"
	default:
		l.Fix = "restart the device plugin (kubectl delete pod -n " + plugin.Namespace + " " + plugin.Name + "): it keeps a GPU unhealthy until it restarts"
	}
}

// verifyFailed reads the kept verify pod's log: a line naming CUDA or NVML breaks the toolkit
// link (the path from a container to the GPUs) when nothing before it was found broken.
func (w *world) verifyFailed(ctx context.Context, d *Node, p *corev1.Pod) {
	b, err := nodepod.ReadLog(ctx, w.cs, p.Namespace, p.Name, &corev1.PodLogOptions{TailLines: ptr.To[int64](50)})
	if err != nil {
		return
	}
	line := ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "CUDA") || strings.Contains(l, "cuda") || strings.Contains(l, "NVML") {
			line = strings.TrimSpace(l)
		}
	}
	if line == "" {
		return
	}
	for i := range d.Links {
		l := &d.Links[i]
		if l.State == Broken {
			return // the cause is already named further down the chain
		}
		if l.Name == LinkToolkit {
			*l = Link{Name: LinkToolkit, State: Broken, Remedy: RemedyConfigure,
				Detail: fmt.Sprintf("a container on the node cannot use its GPUs: the verify pod %s/%s (kept) ended with: %s", p.Namespace, p.Name, nodepod.Fit(line, 300)),
				Fix:    "kubectl logs -n " + p.Namespace + " " + p.Name + "; check the toolkit and containerd's nvidia runtime (kubectl gpu prep " + d.Node + "), then kubectl gpu verify " + d.Node}
			return
		}
	}
}

func (d *Node) add(l Link) { d.Links = append(d.Links, l) }

// judge gives the verdict, the first link not ok and its fix: Faulty for broken hardware;
// otherwise, while the node still advertises GPUs (its kubernetes link not broken), Degraded
// for any link not ok, else Unschedulable.
func (d *Node) judge() {
	d.Verdict, d.Remedy = Healthy, RemedyNone
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
			if d.Remedy == "" {
				d.Remedy = RemedyNone
			}
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
			case n.Fix != "" && n.Remedy != RemedyNone:
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
	fmt.Fprintf(w, "\n%d GPU nodes: %s\n", len(r.Items), strings.Join(counts, ", "))
	for _, note := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", note)
	}
	return nil
}
