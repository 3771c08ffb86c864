package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
)

// NVIDIA's DRA driver (kubernetes-sigs/dra-driver-nvidia-gpu): its driver name and the
// DeviceClasses its chart defines, and the device attributes it publishes.
const (
	DRADriver         = "gpu.nvidia.com"
	DeviceClassGPU    = "gpu.nvidia.com"
	DeviceClassMIG    = "mig.nvidia.com"
	draAttrType       = "type"
	draAttrProduct    = "productName"
	draAttrDriver     = "driverVersion"
	draAttrCUDADriver = "cudaDriverVersion"
	draCapMemory      = "memory"
)

// Where a node's GPUs come from.
const (
	SourceDevicePlugin = "device-plugin"
	SourceDRA          = "dra"
	SourceBoth         = "both"
)

// Labels of GPU sharing (the device plugin's time-slicing / MPS, through GFD) and MIG (the
// MIG manager).
const (
	LabelReplicas        = "nvidia.com/gpu.replicas"
	LabelSharingStrategy = "nvidia.com/gpu.sharing-strategy"
	LabelMIGConfig       = "nvidia.com/mig.config"
	LabelMIGConfigState  = "nvidia.com/mig.config.state"
	LabelDevicePluginCfg = "nvidia.com/device-plugin.config"
	// LabelDeployDriver is the GPU Operator's per-node switch for its driver DaemonSet; the
	// operator itself sets it to "pre-installed" where it finds a host driver. (The node
	// facts prep writes have their keys in nodereport.)
	LabelDeployDriver = "nvidia.com/gpu.deploy.driver"
)

// DRA is what DRA publishes of a node's GPUs.
type DRA struct {
	// GPUs and MIG are the devices of type gpu and mig the driver publishes for the node;
	// Allocated the ones allocated to claims.
	GPUs      int64  `json:"gpus"`
	MIG       int64  `json:"mig,omitempty"`
	Allocated int64  `json:"allocated"`
	Product   string `json:"product,omitempty"`
	MemoryMiB int64  `json:"memoryMiB,omitempty"`
	Driver    string `json:"driver,omitempty"`
	CUDA      string `json:"cudaDriver,omitempty"`
}

// draDevice is one device of the driver, by pool and name.
type draDevice struct{ pool, name string }

// DRAState is the cluster's DRA GPUs: per node, and which node each device is on.
type DRAState = draState

// CollectDRA reads what DRA publishes of the cluster's GPUs (see collectDRA).
func CollectDRA(ctx context.Context, cs kubernetes.Interface) (*DRAState, error) {
	return collectDRA(ctx, cs)
}

// Node is what DRA publishes for a node (nil: nothing).
func (st *draState) Node(name string) *DRA {
	if d := st.nodes[name]; d != nil && d.GPUs+d.MIG > 0 {
		return d
	}
	return nil
}

// Version is the resource.k8s.io version read ("" when the server serves none).
func (st *draState) Version() string { return st.version }

// draState is the cluster's DRA GPUs: per node, and which node each device is on.
type draState struct {
	nodes   map[string]*DRA
	devices map[draDevice]string
	// Version is the resource.k8s.io version read ("" when the server serves none).
	version string
}

// collectDRA reads the driver's ResourceSlices and the allocated ResourceClaims, in the
// newest resource.k8s.io version the server serves (v1, else v1beta2), a page at a time.
// A server without DRA gives an empty state.
func collectDRA(ctx context.Context, cs kubernetes.Interface) (*draState, error) {
	st := &draState{nodes: map[string]*DRA{}, devices: map[draDevice]string{}}
	slices, version, err := listSlices(ctx, cs)
	if err != nil || version == "" {
		return st, err
	}
	st.version = version
	for i := range slices {
		st.addSlice(&slices[i])
	}
	claims, err := listClaims(ctx, cs, version)
	if err != nil {
		return nil, err
	}
	for i := range claims {
		st.addClaim(&claims[i])
	}
	return st, nil
}

func (st *draState) addSlice(s *resourcev1.ResourceSlice) {
	if s.Spec.Driver != DRADriver || s.Spec.NodeName == nil || *s.Spec.NodeName == "" {
		return
	}
	node := *s.Spec.NodeName
	d := st.nodes[node]
	if d == nil {
		d = &DRA{}
		st.nodes[node] = d
	}
	for _, dev := range s.Spec.Devices {
		st.devices[draDevice{s.Spec.Pool.Name, dev.Name}] = node
		switch attrString(dev.Attributes[draAttrType]) {
		case "mig":
			d.MIG++
			continue
		case "gpu", "":
			d.GPUs++
		default:
			continue
		}
		if v := attrString(dev.Attributes[draAttrProduct]); v != "" && d.Product == "" {
			d.Product = v
		}
		if v := attrString(dev.Attributes[draAttrDriver]); v != "" && d.Driver == "" {
			d.Driver = v
		}
		if v := attrString(dev.Attributes[draAttrCUDADriver]); v != "" && d.CUDA == "" {
			d.CUDA = v
		}
		if c, ok := dev.Capacity[draCapMemory]; ok && d.MemoryMiB == 0 {
			d.MemoryMiB = c.Value.Value() >> 20
		}
	}
}

func (st *draState) addClaim(c *resourcev1.ResourceClaim) {
	if c.Status.Allocation == nil {
		return
	}
	for _, r := range c.Status.Allocation.Devices.Results {
		if r.Driver != DRADriver {
			continue
		}
		if node, ok := st.devices[draDevice{r.Pool, r.Device}]; ok {
			st.nodes[node].Allocated++
		}
	}
}

func attrString(a resourcev1.DeviceAttribute) string {
	switch {
	case a.StringValue != nil:
		return *a.StringValue
	case a.VersionValue != nil:
		return *a.VersionValue
	case a.IntValue != nil:
		return strconv.FormatInt(*a.IntValue, 10)
	case a.BoolValue != nil:
		return strconv.FormatBool(*a.BoolValue)
	}
	return ""
}

// draSelector is the field selector of the driver's slices.
var draSelector = fields.OneTermEqualSelector("spec.driver", DRADriver).String()

// listSlices lists the driver's slices in v1, else v1beta2 (converted: the two have the
// same fields), a page at a time. version is "" when the server serves neither.
func listSlices(ctx context.Context, cs kubernetes.Interface) ([]resourcev1.ResourceSlice, string, error) {
	var out []resourcev1.ResourceSlice
	opts := metav1.ListOptions{FieldSelector: draSelector, Limit: PodPageSize}
	for {
		l, err := cs.ResourceV1().ResourceSlices().List(ctx, opts)
		if apierrors.IsNotFound(err) && len(out) == 0 {
			return listSlicesV1beta2(ctx, cs)
		}
		if err != nil {
			return nil, "", &DRAListError{"list ResourceSlices", err}
		}
		out = append(out, l.Items...)
		if opts.Continue = l.Continue; opts.Continue == "" {
			return out, "v1", nil
		}
	}
}

func listSlicesV1beta2(ctx context.Context, cs kubernetes.Interface) ([]resourcev1.ResourceSlice, string, error) {
	var out []resourcev1.ResourceSlice
	opts := metav1.ListOptions{FieldSelector: draSelector, Limit: PodPageSize}
	for {
		l, err := cs.ResourceV1beta2().ResourceSlices().List(ctx, opts)
		if apierrors.IsNotFound(err) && len(out) == 0 {
			return nil, "", nil // no DRA on this server
		}
		if err != nil {
			return nil, "", &DRAListError{"list ResourceSlices", err}
		}
		for i := range l.Items {
			var s resourcev1.ResourceSlice
			if err := convert(&l.Items[i], &s); err != nil {
				return nil, "", err
			}
			out = append(out, s)
		}
		if opts.Continue = l.Continue; opts.Continue == "" {
			return out, "v1beta2", nil
		}
	}
}

// listClaims lists every ResourceClaim (all namespaces) a page at a time.
func listClaims(ctx context.Context, cs kubernetes.Interface, version string) ([]resourcev1.ResourceClaim, error) {
	var out []resourcev1.ResourceClaim
	opts := metav1.ListOptions{Limit: PodPageSize}
	for {
		var cont string
		if version == "v1" {
			l, err := cs.ResourceV1().ResourceClaims("").List(ctx, opts)
			if err != nil {
				return nil, &DRAListError{"list ResourceClaims in all namespaces", err}
			}
			out, cont = append(out, l.Items...), l.Continue
		} else {
			l, err := cs.ResourceV1beta2().ResourceClaims("").List(ctx, opts)
			if err != nil {
				return nil, &DRAListError{"list ResourceClaims in all namespaces", err}
			}
			for i := range l.Items {
				var c resourcev1.ResourceClaim
				if err := convert(&l.Items[i], &c); err != nil {
					return nil, err
				}
				out = append(out, c)
			}
			cont = l.Continue
		}
		if opts.Continue = cont; cont == "" {
			return out, nil
		}
	}
}

// DRAListError is a list call of the DRA read that failed: what it did and the API
// server's error (cluster.APIError turns it into the one line to print).
type DRAListError struct {
	Doing string
	Err   error
}

func (e *DRAListError) Error() string { return "cannot " + e.Doing + ": " + e.Err.Error() }
func (e *DRAListError) Unwrap() error { return e.Err }

// APIError is the error to print: the API server's refusal in one line with its exit code.
func (e *DRAListError) APIError() error { return cluster.APIError(e.Doing, e.Err) }

// convert copies a v1beta2 object into its v1 form through JSON (the fields the inventory
// reads have the same names in both).
func convert(from, to any) error {
	b, err := json.Marshal(from)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, to); err != nil {
		return fmt.Errorf("read a resource.k8s.io/v1beta2 object: %w", err)
	}
	return nil
}

// Sharing is how a node's GPUs are shared, from GFD's labels: "4× time-slicing", "4× MPS",
// or "".
func Sharing(n *corev1.Node) string {
	strategy := n.Labels[LabelSharingStrategy]
	if strategy == "" || strategy == "none" {
		return ""
	}
	name := map[string]string{"time-slicing": "time-slicing", "mps": "MPS"}[strategy]
	if name == "" {
		name = strategy
	}
	if r := n.Labels[LabelReplicas]; r != "" && r != "1" {
		return r + "× " + name
	}
	return name
}

// MIGConfig is the node's MIG layout request and the MIG manager's progress, such as
// "all-1g.10gb (success)".
func MIGConfig(n *corev1.Node) string {
	cfg := n.Labels[LabelMIGConfig]
	if cfg == "" {
		return ""
	}
	if st := n.Labels[LabelMIGConfigState]; st != "" {
		return cfg + " (" + st + ")"
	}
	return cfg
}

// sourceOf says where a node's GPUs come from.
func sourceOf(devicePlugin int64, dra *DRA) string {
	hasDRA := dra != nil && dra.GPUs+dra.MIG > 0
	switch {
	case devicePlugin > 0 && hasDRA:
		return SourceBoth
	case hasDRA:
		return SourceDRA
	case devicePlugin > 0:
		return SourceDevicePlugin
	}
	return ""
}

// draNames lists the nodes DRA publishes GPUs for (sorted).
func (st *draState) draNames() []string {
	var out []string
	for n, d := range st.nodes {
		if d.GPUs+d.MIG > 0 {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}
