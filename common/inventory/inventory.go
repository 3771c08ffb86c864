// Package inventory builds the GPU inventory of a cluster: per node the GPUs it can
// allocate, how many are requested, and what GPU feature discovery says about them. It
// costs one node list and one pod list (paged), whatever the number of nodes.
package inventory

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	resourcehelper "k8s.io/component-helpers/resource"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// Kind of the inventory document.
const Kind = "NodeInventory"

// Resource names and labels from the NVIDIA device plugin, GPU feature discovery and NFD.
const (
	ResourceGPU       corev1.ResourceName = "nvidia.com/gpu"
	ResourceGPUShared corev1.ResourceName = "nvidia.com/gpu.shared"
	MIGResourcePrefix                     = "nvidia.com/mig-"

	LabelGPUPresent   = "nvidia.com/gpu.present"
	LabelPCIPresent   = "feature.node.kubernetes.io/pci-10de.present"
	LabelProduct      = "nvidia.com/gpu.product"
	LabelMemory       = "nvidia.com/gpu.memory"
	LabelDriverFull   = "nvidia.com/cuda.driver-version.full"
	LabelRuntimeFull  = "nvidia.com/cuda.runtime-version.full"
	LabelMIGStrategy  = "nvidia.com/mig.strategy"
	labelDriverMajor  = "nvidia.com/cuda.driver.major" // older GFD releases
	labelDriverMinor  = "nvidia.com/cuda.driver.minor"
	labelDriverRev    = "nvidia.com/cuda.driver.rev"
	labelRuntimeMajor = "nvidia.com/cuda.runtime.major"
	labelRuntimeMinor = "nvidia.com/cuda.runtime.minor"
)

// IsGPUResource tells whether name is an NVIDIA GPU resource: whole GPUs, shared
// (time-sliced) GPUs or MIG devices.
func IsGPUResource(name corev1.ResourceName) bool {
	return name == ResourceGPU || name == ResourceGPUShared || strings.HasPrefix(string(name), MIGResourcePrefix)
}

// AllocatableGPUs sums a node's allocatable NVIDIA GPU resources (whole, shared and MIG).
func AllocatableGPUs(n *corev1.Node) int64 {
	var t int64
	for name, q := range n.Status.Allocatable {
		if IsGPUResource(name) {
			t += q.Value()
		}
	}
	return t
}

// IsGPUNode tells whether a node has NVIDIA GPUs: GPU resources in capacity or allocatable,
// the labels that the GPU Operator or NFD put on GPU nodes, or GPUs on its PCI bus as prep
// recorded them (a node with no device plugin yet advertises none). The one test of a GPU
// node every command uses.
func IsGPUNode(n *corev1.Node) bool {
	for _, rl := range []corev1.ResourceList{n.Status.Capacity, n.Status.Allocatable} {
		for name, q := range rl {
			if IsGPUResource(name) && !q.IsZero() {
				return true
			}
		}
	}
	if n.Labels[LabelGPUPresent] == "true" || n.Labels[LabelPCIPresent] == "true" {
		return true
	}
	f, _ := rep.FactsFrom(n.Annotations)
	return f.GPUs > 0
}

// Options choose the nodes.
type Options struct {
	// Names of nodes; all of them must exist. Named nodes are listed even without GPUs.
	Names []string
	// Selector is a label selector.
	Selector string
	// All lists nodes without GPUs too.
	All bool

	// draNodes are nodes DRA publishes GPUs for (GPU nodes without GPU resources).
	draNodes map[string]bool
}

// Inventory is the `kubectl gpu nodes` document.
type Inventory struct {
	report.TypeMeta `json:",inline"`
	// DRAVersion is the resource.k8s.io version DRA GPUs were read in ("": none served).
	DRAVersion string  `json:"draVersion,omitempty"`
	Items      []Node  `json:"items"`
	Summary    Summary `json:"summary"`
}

// Summary adds the inventory up.
type Summary struct {
	Nodes         int   `json:"nodes"`
	GPUNodes      int   `json:"gpuNodes"`
	ReadyGPUNodes int   `json:"readyGPUNodes"`
	GPUs          int64 `json:"gpus"`
	Used          int64 `json:"used"`
}

// Node is one node's GPU inventory.
type Node struct {
	Name    string          `json:"name"`
	Ready   bool            `json:"ready"`
	GPUNode bool            `json:"gpuNode"`
	Flavour flavour.Flavour `json:"flavour"`
	// GPUs is the sum of the allocatable GPU resources; Used the sum of their requests by
	// the node's pods that are not finished.
	GPUs      int64      `json:"gpus"`
	Used      int64      `json:"used"`
	Resources []Resource `json:"resources,omitempty"`
	Product   string     `json:"product,omitempty"`
	// MemoryMiB is the memory of one GPU in MiB, as GPU feature discovery reports it.
	MemoryMiB   int64  `json:"memoryMiB,omitempty"`
	Driver      string `json:"driver,omitempty"`
	CUDA        string `json:"cuda,omitempty"`
	MIGStrategy string `json:"migStrategy,omitempty"`
	// MIGConfig is the MIG layout asked for (nvidia.com/mig.config) and the MIG manager's
	// progress, such as "all-1g.10gb (success)".
	MIGConfig string `json:"migConfig,omitempty"`
	// Source says where the GPUs come from: device-plugin, dra or both.
	Source string `json:"source,omitempty"`
	// DRA is what DRA publishes for the node (nil: nothing).
	DRA *DRA `json:"dra,omitempty"`
	// Sharing is the device plugin's sharing of the GPUs: "4× time-slicing", "4× MPS".
	Sharing          string `json:"sharing,omitempty"`
	KubeletVersion   string `json:"kubeletVersion,omitempty"`
	ContainerRuntime string `json:"containerRuntime,omitempty"`
	KernelVersion    string `json:"kernelVersion,omitempty"`
	OSImage          string `json:"osImage,omitempty"`
}

// Resource is one GPU resource of a node.
type Resource struct {
	Name        string `json:"name"`
	Capacity    int64  `json:"capacity"`
	Allocatable int64  `json:"allocatable"`
	Used        int64  `json:"used"`
}

// ParseSelector checks a label selector given on the command line.
func ParseSelector(s string) (labels.Selector, error) {
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, cliexit.Usagef("invalid label selector %q: %w", s, err)
	}
	return sel, nil
}

// Collect lists the nodes and the pods that run on nodes, once each, and builds the
// inventory.
func Collect(ctx context.Context, cs kubernetes.Interface, o Options) (*Inventory, error) {
	if _, err := ParseSelector(o.Selector); err != nil {
		return nil, err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: o.Selector})
	if err != nil {
		return nil, cluster.APIError("list nodes", err)
	}
	dra, err := collectDRA(ctx, cs)
	var le *DRAListError
	if errors.As(err, &le) {
		return nil, le.APIError()
	}
	if err != nil {
		return nil, err
	}
	o.draNodes = map[string]bool{}
	for _, n := range dra.draNames() {
		o.draNodes[n] = true
	}
	chosen, err := Choose(nodes.Items, o)
	if err != nil {
		return nil, err
	}
	used := usedMap(chosen)
	// The pods are read a page at a time (as kubectl get does) and only their GPU requests
	// kept: a list of every pod of a large cluster, decoded whole, is what costs memory.
	opts := metav1.ListOptions{FieldSelector: ActivePodsOnNodes, Limit: PodPageSize}
	for {
		pods, err := cs.CoreV1().Pods("").List(ctx, opts)
		if err != nil {
			return nil, cluster.APIError("list pods in all namespaces", err)
		}
		for i := range pods.Items {
			addUse(used, &pods.Items[i])
		}
		if opts.Continue = pods.Continue; opts.Continue == "" {
			break
		}
	}
	inv := build(chosen, used, dra)
	inv.DRAVersion = dra.version
	return inv, nil
}

// PodPageSize is how many pods one list call returns.
const PodPageSize = 500

// ActivePodsOnNodes is the field selector of the pods that hold node resources.
const ActivePodsOnNodes = "status.phase!=Succeeded,status.phase!=Failed,spec.nodeName!="

// Build is Collect without the API: the nodes chosen by o, with the GPU requests of pods.
func Build(nodes []corev1.Node, pods []corev1.Pod, o Options) (*Inventory, error) {
	chosen, err := Choose(nodes, o)
	if err != nil {
		return nil, err
	}
	used := usedMap(chosen)
	for i := range pods {
		addUse(used, &pods[i])
	}
	return build(chosen, used, nil), nil
}

func usedMap(chosen []*corev1.Node) map[string]corev1.ResourceList {
	used := map[string]corev1.ResourceList{}
	for i := range chosen {
		used[chosen[i].Name] = corev1.ResourceList{}
	}
	return used
}

// addUse adds the GPU requests of a pod that holds them to its node's use.
func addUse(used map[string]corev1.ResourceList, p *corev1.Pod) {
	u, ok := used[p.Spec.NodeName]
	if !ok || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return
	}
	for name, q := range gpuRequests(p) {
		if IsGPUResource(name) {
			sum := u[name]
			sum.Add(q)
			u[name] = sum
		}
	}
}

func build(chosen []*corev1.Node, used map[string]corev1.ResourceList, dra *draState) *Inventory {
	inv := &Inventory{TypeMeta: report.Meta(Kind), Items: make([]Node, 0, len(chosen))}
	for _, n := range chosen {
		var d *DRA
		if dra != nil {
			d = dra.nodes[n.Name]
		}
		item := describe(n, used[n.Name], d)
		inv.Items = append(inv.Items, item)
		inv.Summary.Nodes++
		if item.GPUNode {
			inv.Summary.GPUNodes++
			if item.Ready {
				inv.Summary.ReadyGPUNodes++
			}
		}
		inv.Summary.GPUs += item.GPUs
		inv.Summary.Used += item.Used
	}
	return inv
}

// Choose returns the nodes named in o (all of which must exist), or else the GPU nodes (all
// nodes with o.All), sorted by name.
// ListAndChoose is the node choice of the commands that run on nodes: the selector checked,
// one node list by it, a selector that matches nothing refused with how to check it, then
// Choose (named nodes must exist). o.Selector picks among all nodes, so with a selector
// every match is a candidate.
func ListAndChoose(ctx context.Context, cs kubernetes.Interface, o Options) ([]*corev1.Node, error) {
	if _, err := ParseSelector(o.Selector); err != nil {
		return nil, err
	}
	if o.Selector == "" && len(o.Names) > 0 && len(o.Names) <= getNamed {
		// A few nodes by name: one GET each, as kubectl get node NAME, not a list of the
		// whole cluster (a proof during a roll asks for one node every few seconds).
		var items []corev1.Node
		seen := map[string]bool{}
		for _, name := range o.Names {
			if seen[name] {
				continue
			}
			seen[name] = true
			n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				continue // Choose names it
			case err != nil:
				return nil, cluster.APIError("get node "+name, err)
			}
			items = append(items, *n)
		}
		return Choose(items, Options{Names: o.Names, All: o.All})
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: o.Selector})
	if err != nil {
		return nil, cluster.APIError("list nodes", err)
	}
	if o.Selector != "" && len(nodes.Items) == 0 {
		return nil, NoMatch(o.Selector)
	}
	return Choose(nodes.Items, Options{Names: o.Names, All: o.All || o.Selector != ""})
}

// getNamed is up to how many named nodes are read one GET each rather than by a list.
const getNamed = 16

// NoMatch is the refusal of a selector that matches no node.
func NoMatch(selector string) error {
	return cliexit.Usagef("no node matches %q: check the selector with 'kubectl get nodes -l %s'", selector, selector)
}

func Choose(nodes []corev1.Node, o Options) ([]*corev1.Node, error) {
	var out []*corev1.Node
	if len(o.Names) > 0 {
		byName := make(map[string]*corev1.Node, len(nodes))
		for i := range nodes {
			byName[nodes[i].Name] = &nodes[i]
		}
		var missing []string
		seen := map[string]bool{}
		for _, name := range o.Names {
			n, ok := byName[name]
			if !ok {
				missing = append(missing, name)
				continue
			}
			if !seen[name] {
				seen[name] = true
				out = append(out, n)
			}
		}
		if len(missing) > 0 {
			what := "node"
			if o.Selector != "" {
				what = "node matching " + strconv.Quote(o.Selector)
			}
			return nil, cliexit.Usagef("%s %s not found: list nodes with 'kubectl get nodes'", what, strings.Join(quoteAll(missing), ", "))
		}
	} else {
		for i := range nodes {
			if o.All || IsGPUNode(&nodes[i]) || o.draNodes[nodes[i].Name] {
				out = append(out, &nodes[i])
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// gpuRequests returns the pod's effective requests of GPU resources. An extended resource
// given only as a limit is requested at that limit (the API server defaults it so; objects
// that did not pass through it may lack the request).
// GPURequest is how many GPUs (whole, shared or MIG) the pod holds on its node, counted as
// the inventory counts them (a limit without a request counts, init containers as the
// scheduler does).
func GPURequest(p *corev1.Pod) int64 {
	var n int64
	for name, q := range gpuRequests(p) {
		if IsGPUResource(name) {
			n += q.Value()
		}
	}
	return n
}

func gpuRequests(p *corev1.Pod) corev1.ResourceList {
	missing := false
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			for name := range c.Resources.Limits {
				if _, ok := c.Resources.Requests[name]; IsGPUResource(name) && !ok {
					missing = true
				}
			}
		}
	}
	if missing {
		p = p.DeepCopy()
		for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
			for i := range cs {
				r := &cs[i].Resources
				for name, q := range r.Limits {
					if _, ok := r.Requests[name]; IsGPUResource(name) && !ok {
						if r.Requests == nil {
							r.Requests = corev1.ResourceList{}
						}
						r.Requests[name] = q
					}
				}
			}
		}
	}
	return resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{})
}

func quoteAll(s []string) []string {
	q := make([]string, len(s))
	for i := range s {
		q[i] = strconv.Quote(s[i])
	}
	return q
}

func describe(n *corev1.Node, used corev1.ResourceList, dra *DRA) Node {
	l := n.Labels
	item := Node{
		Name:             n.Name,
		Ready:            IsReady(n),
		GPUNode:          IsGPUNode(n),
		Flavour:          flavour.Of(n),
		Product:          l[LabelProduct],
		Driver:           firstNonEmpty(l[LabelDriverFull], joinVersion(l[labelDriverMajor], l[labelDriverMinor], l[labelDriverRev]), n.Annotations[rep.AnnotationDriver]),
		CUDA:             firstNonEmpty(l[LabelRuntimeFull], joinVersion(l[labelRuntimeMajor], l[labelRuntimeMinor])),
		MIGStrategy:      l[LabelMIGStrategy],
		KubeletVersion:   n.Status.NodeInfo.KubeletVersion,
		ContainerRuntime: n.Status.NodeInfo.ContainerRuntimeVersion,
		KernelVersion:    n.Status.NodeInfo.KernelVersion,
		OSImage:          n.Status.NodeInfo.OSImage,
	}
	if m, err := strconv.ParseInt(l[LabelMemory], 10, 64); err == nil {
		item.MemoryMiB = m
	}
	names := map[corev1.ResourceName]bool{}
	for _, rl := range []corev1.ResourceList{n.Status.Capacity, n.Status.Allocatable, used} {
		for name := range rl {
			if IsGPUResource(name) {
				names[name] = true
			}
		}
	}
	for name := range names {
		r := Resource{Name: string(name), Capacity: count(n.Status.Capacity, name), Allocatable: count(n.Status.Allocatable, name), Used: count(used, name)}
		item.Resources = append(item.Resources, r)
		item.GPUs += r.Allocatable
		item.Used += r.Used
	}
	sort.Slice(item.Resources, func(i, j int) bool { return item.Resources[i].Name < item.Resources[j].Name })
	item.Source = sourceOf(item.GPUs, dra)
	item.Sharing, item.MIGConfig = Sharing(n), MIGConfig(n)
	if dra != nil && dra.GPUs+dra.MIG > 0 {
		item.DRA = dra
		item.GPUNode = true
		item.GPUs += dra.GPUs + dra.MIG
		item.Used += dra.Allocated
		item.Product = firstNonEmpty(item.Product, dra.Product)
		item.Driver = firstNonEmpty(item.Driver, DriverForm(dra.Driver))
		item.CUDA = firstNonEmpty(item.CUDA, majorMinor(dra.CUDA))
		if item.MemoryMiB == 0 {
			item.MemoryMiB = dra.MemoryMiB
		}
	}
	return item
}

func count(rl corev1.ResourceList, name corev1.ResourceName) int64 {
	q, ok := rl[name]
	if !ok {
		return 0
	}
	return q.Value()
}

// IsReady tells whether the node's Ready condition is True.
func IsReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// MIGEnabled tells whether a node's GPUs are split with MIG (MIG resources, or a MIG layout
// other than all-disabled asked of the MIG manager).
func MIGEnabled(n *corev1.Node) bool {
	for name, q := range n.Status.Allocatable {
		if strings.HasPrefix(string(name), MIGResourcePrefix) && !q.IsZero() {
			return true
		}
	}
	cfg := n.Labels[LabelMIGConfig]
	return cfg != "" && cfg != "all-disabled"
}
