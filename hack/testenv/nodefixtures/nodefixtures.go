// Package nodefixtures holds the simulated nodes' objects (profiles of GPU, RKE2, K3s, MIG,
// CPU-only nodes) for unit tests and the local cluster alike. It starts nothing and has no
// init().
package nodefixtures

import (
	"strconv"

	"k8s.io/apimachinery/pkg/runtime"

	resourcev1 "k8s.io/api/resource/v1"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KwokNodeAnnotation marks a node kwok manages.
const KwokNodeAnnotation = "kwok.x-k8s.io/node"

// Profile describes a kind of simulated node.
type Profile struct {
	// GPUs is the number of allocatable nvidia.com/gpu; MIG adds MIG devices.
	GPUs int
	MIG  map[string]int
	// Labels as the GPU Operator, GPU feature discovery and NFD would set them.
	Labels map[string]string
	// Annotations such as the ones `kubectl gpu prep` leaves.
	Annotations map[string]string
	// KubeletVersion and ContainerRuntime as the node reports them (they tell RKE2/K3s).
	KubeletVersion   string
	ContainerRuntime string
	OSImage          string
	KernelVersion    string
	Taints           []corev1.Taint
	// NotReady leaves the node's Ready condition False (kwok does not manage it).
	NotReady bool
}

func gfdLabels(product string, memMiB, count int, driver, cuda string) map[string]string {
	return map[string]string{
		"nvidia.com/gpu.present":                      "true",
		"feature.node.kubernetes.io/pci-10de.present": "true",
		"nvidia.com/gpu.product":                      product,
		"nvidia.com/gpu.memory":                       strconv.Itoa(memMiB),
		"nvidia.com/gpu.count":                        strconv.Itoa(count),
		"nvidia.com/cuda.driver-version.full":         driver,
		"nvidia.com/cuda.runtime-version.full":        cuda,
		"nvidia.com/mig.strategy":                     "single",
	}
}

// Profiles are the simulated node kinds the tests and the demo use.
var Profiles = map[string]Profile{
	// An 8-GPU A100 node of a kubeadm cluster where the GPU Operator runs.
	"a100": {
		GPUs:             8,
		Labels:           gfdLabels("NVIDIA-A100-SXM4-80GB", 81920, 8, "550.127.08", "12.4"),
		Annotations:      map[string]string{"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock"},
		KubeletVersion:   "v1.36.3",
		ContainerRuntime: "containerd://1.7.24",
		OSImage:          "Ubuntu 22.04.5 LTS",
		KernelVersion:    "5.15.0-126-generic",
	},
	// An RKE2 node with 4 L40S and the host driver.
	"rke2": {
		GPUs:             4,
		Labels:           gfdLabels("NVIDIA-L40S", 46068, 4, "570.86.15", "12.8"),
		KubeletVersion:   "v1.36.3+rke2r1",
		ContainerRuntime: "containerd://2.0.5-k3s1",
		OSImage:          "Ubuntu 24.04.1 LTS",
		KernelVersion:    "6.8.0-51-generic",
	},
	// A K3s node with one T4.
	"k3s": {
		GPUs:             1,
		Labels:           gfdLabels("Tesla-T4", 15360, 1, "535.216.03", "12.2"),
		KubeletVersion:   "v1.36.3+k3s1",
		ContainerRuntime: "containerd://2.0.5-k3s1",
		OSImage:          "Ubuntu 22.04.5 LTS",
		KernelVersion:    "5.15.0-126-generic",
	},
	// An A100 split with MIG, mixed strategy, as the MIG manager left it.
	"mig": {
		MIG: map[string]int{"nvidia.com/mig-1g.10gb": 7, "nvidia.com/mig-3g.40gb": 2},
		Labels: func() map[string]string {
			l := gfdLabels("NVIDIA-A100-SXM4-80GB", 81920, 1, "550.127.08", "12.4")
			l["nvidia.com/mig.strategy"] = "mixed"
			l["nvidia.com/mig.config"] = "all-balanced"
			l["nvidia.com/mig.config.state"] = "success"
			return l
		}(),
		KubeletVersion:   "v1.36.3",
		ContainerRuntime: "containerd://1.7.24",
	},
	// A node whose GPUs NFD saw on the PCI bus but nothing exposes yet (no driver, no
	// operator): what `prep` is for.
	"bare-gpu": {
		Labels:           map[string]string{"feature.node.kubernetes.io/pci-10de.present": "true"},
		KubeletVersion:   "v1.36.3",
		ContainerRuntime: "containerd://1.7.24",
	},
	// A node whose GPUs NVIDIA's DRA driver publishes (ResourceSlices, see DRASlice): no
	// extended resource, no device plugin.
	"dra": {
		Labels:           map[string]string{"nvidia.com/gpu.present": "true"},
		KubeletVersion:   "v1.36.3",
		ContainerRuntime: "containerd://2.1.4",
		OSImage:          "Ubuntu 24.04.1 LTS",
		KernelVersion:    "6.8.0-51-generic",
	},
	// Two H100s time-sliced 4 ways by the device plugin (8 nvidia.com/gpu replicas).
	"timeslice": {
		GPUs: 8,
		Labels: func() map[string]string {
			l := gfdLabels("NVIDIA-H100-80GB-HBM3", 81559, 2, "580.95.05", "13.0")
			l["nvidia.com/gpu.replicas"] = "4"
			l["nvidia.com/gpu.sharing-strategy"] = "time-slicing"
			l["nvidia.com/gpu.product"] = "NVIDIA-H100-80GB-HBM3-SHARED"
			return l
		}(),
		KubeletVersion:   "v1.36.3",
		ContainerRuntime: "containerd://2.1.4",
	},
	// A CPU-only node.
	"cpu": {
		KubeletVersion:   "v1.36.3",
		ContainerRuntime: "containerd://1.7.24",
	},
}

// NodeSpec asks for Count nodes of a profile named Prefix-0, Prefix-1, …
type NodeSpec struct {
	Profile string
	Prefix  string
	Count   int
}

// DefaultNodes is the demo's and the end-to-end tests' cluster: two 8-GPU A100 nodes, an
// RKE2 and a K3s GPU node, a node with GPUs but no driver, and a CPU-only node.
var DefaultNodes = []NodeSpec{
	{Profile: "a100", Prefix: "gpu-a100", Count: 2},
	{Profile: "rke2", Prefix: "gpu-rke2", Count: 1},
	{Profile: "k3s", Prefix: "gpu-k3s", Count: 1},
	{Profile: "bare-gpu", Prefix: "gpu-bare", Count: 1},
	{Profile: "cpu", Prefix: "cpu", Count: 1},
}

// NodeObject returns the Node object of a profile, as a kubelet would register it.
func NodeObject(name string, p Profile) *corev1.Node {
	labels := map[string]string{
		"kubernetes.io/hostname": name,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
		"type":                   "kwok",
	}
	for k, v := range p.Labels {
		labels[k] = v
	}
	ann := map[string]string{KwokNodeAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"}
	for k, v := range p.Annotations {
		ann[k] = v
	}
	res := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("64"),
		corev1.ResourceMemory: resource.MustParse("512Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	if p.GPUs > 0 {
		res["nvidia.com/gpu"] = *resource.NewQuantity(int64(p.GPUs), resource.DecimalSI)
	}
	for k, v := range p.MIG {
		res[corev1.ResourceName(k)] = *resource.NewQuantity(int64(v), resource.DecimalSI)
	}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: ann},
		Spec:       corev1.NodeSpec{Taints: p.Taints},
		Status: corev1.NodeStatus{
			Capacity:    res,
			Allocatable: res.DeepCopy(),
			NodeInfo: corev1.NodeSystemInfo{
				KubeletVersion:          p.KubeletVersion,
				ContainerRuntimeVersion: p.ContainerRuntime,
				OSImage:                 p.OSImage,
				KernelVersion:           p.KernelVersion,
				OperatingSystem:         "linux",
				Architecture:            "amd64",
			},
		},
	}
	if p.NotReady {
		n.Annotations[KwokNodeAnnotation] = "not-managed"
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletNotReady", Message: "simulated"}}
	}
	return n
}

// GPUPod is a pod pinned to node that requests gpus nvidia.com/gpu, as a training job would.
func GPUPod(ns, name, node string, gpus int64) *corev1.Pod {
	q := *resource.NewQuantity(gpus, resource.DecimalSI)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "gpu-workload"}},
		Spec: corev1.PodSpec{
			NodeName:    node,
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name:  "train",
				Image: "registry.invalid/train:1",
				Resources: corev1.ResourceRequirements{
					Limits: corev1.ResourceList{"nvidia.com/gpu": q},
				},
			}},
		},
	}
}

// DRA objects as NVIDIA's DRA driver (kubernetes-sigs/dra-driver-nvidia-gpu) publishes them.

// DeviceClasses are the DeviceClasses the DRA driver's chart defines: every device of the
// driver with type gpu, or with type mig.
func DeviceClasses() []*resourcev1.DeviceClass {
	class := func(name, typ string) *resourcev1.DeviceClass {
		return &resourcev1.DeviceClass{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: resourcev1.DeviceClassSpec{Selectors: []resourcev1.DeviceSelector{{CEL: &resourcev1.CELDeviceSelector{
				Expression: "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == '" + typ + "'"}}}}}
	}
	return []*resourcev1.DeviceClass{class("gpu.nvidia.com", "gpu"), class("mig.nvidia.com", "mig")}
}

// DRASlice is the ResourceSlice the DRA driver's kubelet plugin publishes for a node with
// gpus H100s: one pool per node, devices gpu-0…, with the driver's attributes.
func DRASlice(node string, gpus int) *resourcev1.ResourceSlice {
	s := &resourcev1.ResourceSlice{
		ObjectMeta: metav1.ObjectMeta{Name: node + "-gpu.nvidia.com"},
		Spec: resourcev1.ResourceSliceSpec{
			Driver:   "gpu.nvidia.com",
			NodeName: &node,
			Pool:     resourcev1.ResourcePool{Name: node, Generation: 1, ResourceSliceCount: 1},
		},
	}
	str := func(v string) resourcev1.DeviceAttribute { return resourcev1.DeviceAttribute{StringValue: &v} }
	ver := func(v string) resourcev1.DeviceAttribute { return resourcev1.DeviceAttribute{VersionValue: &v} }
	for i := 0; i < gpus; i++ {
		s.Spec.Devices = append(s.Spec.Devices, resourcev1.Device{
			Name: "gpu-" + strconv.Itoa(i),
			Attributes: map[resourcev1.QualifiedName]resourcev1.DeviceAttribute{
				"type":                  str("gpu"),
				"uuid":                  str("GPU-" + node + "-" + strconv.Itoa(i)),
				"productName":           str("NVIDIA H100 80GB HBM3"),
				"architecture":          str("Hopper"),
				"brand":                 str("Nvidia"),
				"cudaComputeCapability": ver("9.0.0"),
				"driverVersion":         ver("580.95.5"),
				"cudaDriverVersion":     ver("13.0.0"),
				"index":                 {IntValue: ptrInt64(int64(i))},
			},
			Capacity: map[resourcev1.QualifiedName]resourcev1.DeviceCapacity{"memory": {Value: resource.MustParse("81559Mi")}},
		})
	}
	return s
}

func ptrInt64(v int64) *int64 { return &v }

// AllocatedClaim is a ResourceClaim the scheduler allocated one device of node's pool to.
func AllocatedClaim(ns, name, node, device string) *resourcev1.ResourceClaim {
	return &resourcev1.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{{
			Name: "gpu", Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: "gpu.nvidia.com"}}}}},
		Status: resourcev1.ResourceClaimStatus{Allocation: &resourcev1.AllocationResult{Devices: resourcev1.DeviceAllocationResult{
			Results: []resourcev1.DeviceRequestAllocationResult{{Request: "gpu", Driver: "gpu.nvidia.com", Pool: node, Device: device}}}}},
	}
}

// DemoNodes are the Node objects of DefaultNodes (named Prefix-0, Prefix-1, …).
func DemoNodes() []*corev1.Node {
	var out []*corev1.Node
	for _, s := range DefaultNodes {
		for i := 0; i < s.Count; i++ {
			out = append(out, NodeObject(s.Prefix+"-"+strconv.Itoa(i), Profiles[s.Profile]))
		}
	}
	return out
}

// DemoObjects are DemoNodes and the tool's namespace ns with its default service account
// (which the fake clientset has no controller to make).
func DemoObjects(ns string) []runtime.Object {
	var objs []runtime.Object
	for _, n := range DemoNodes() {
		objs = append(objs, n)
	}
	return append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns}})
}
