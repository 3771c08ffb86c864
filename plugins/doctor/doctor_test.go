package doctor

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"
	dynfake "k8s.io/client-go/dynamic/fake"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/doctor"
	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

// node is an A100 node as prep and GPU feature discovery leave it: 8 GPUs on the bus, NVML's
// count, host driver and toolkit, allocatable GPUs as set.
func node(name string, pci, nvml, alloc int, mod func(*corev1.Node)) *corev1.Node {
	n := nodefixtures.NodeObject(name, nodefixtures.Profiles["a100"])
	for k, v := range map[string]string{
		flavour.AnnotationPrefix + "reported-at": "2026-12-06T10:00:00Z", rep.AnnotationGPUs: itoa(pci),
		rep.AnnotationDriver: "570.195.03", rep.AnnotationToolkit: "1.17.8-1", rep.AnnotationNvidiaRuntime: "true", rep.AnnotationDefaultRuntime: "runc",
	} {
		n.Annotations[k] = v
	}
	n.Labels["nvidia.com/gpu.count"] = itoa(nvml)
	q := *resource.NewQuantity(int64(alloc), resource.DecimalSI)
	n.Status.Allocatable["nvidia.com/gpu"], n.Status.Capacity["nvidia.com/gpu"] = q, q
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	if mod != nil {
		mod(n)
	}
	return n
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// plugin is the device plugin chart's pod on node, ready or held as st says.
func plugin(node string, ready bool, st corev1.ContainerState, restarts int32) *corev1.Pod {
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-device-plugin-" + node, Namespace: "nvidia-device-plugin"},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "nvidia-device-plugin-ctr", Image: "nvcr.io/nvidia/k8s-device-plugin:v0.20.0", Command: []string{"nvidia-device-plugin"}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "nvidia-device-plugin-ctr", State: st, RestartCount: restarts}}}}
}

var running = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}

// world: a node per link and verdict.
func world() []runtime.Object {
	validator := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-operator-validator-x", Namespace: "gpu-operator", Labels: map[string]string{"app": "nvidia-operator-validator"}},
		Spec: corev1.PodSpec{NodeName: "gpu-validator"},
		Status: corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{
			{Name: "driver-validation", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}},
			{Name: "toolkit-validation", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
			{Name: "cuda-validation", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}}}}
	pending := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "train-0", Namespace: "ml"},
		Spec: corev1.PodSpec{NodeSelector: map[string]string{"kubernetes.io/hostname": "gpu-pending"},
			Containers: []corev1.Container{{Name: "c", Image: "x", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("8")}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
			Message: "0/9 nodes are available: 1 Insufficient nvidia.com/gpu."}}}}
	return []runtime.Object{
		node("gpu-healthy", 8, 8, 8, nil), plugin("gpu-healthy", true, running, 0),
		node("gpu-offbus", 8, 7, 7, nil), plugin("gpu-offbus", true, running, 0),
		node("gpu-crash", 8, 8, 0, nil), plugin("gpu-crash", false, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 5m0s"}}, 7),
		node("gpu-pull", 8, 8, 0, nil), plugin("gpu-pull", false, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: `Back-off pulling image "nvcr.io/nvidia/k8s-device-plugin:v0.20.0"`}}, 0),
		node("gpu-validator", 8, 8, 0, func(n *corev1.Node) { delete(n.Annotations, rep.AnnotationDriver) }), validator,
		node("gpu-cordoned", 8, 8, 8, func(n *corev1.Node) { n.Spec.Unschedulable = true }), plugin("gpu-cordoned", true, running, 0),
		node("gpu-fewer", 8, 8, 6, nil), plugin("gpu-fewer", true, running, 0),
		node("gpu-pending", 8, 8, 8, nil), plugin("gpu-pending", true, running, 0), pending,
		node("gpu-noruntime", 8, 8, 0, func(n *corev1.Node) { n.Annotations[rep.AnnotationNvidiaRuntime] = "false" }),
		node("gpu-nodriver", 8, 8, 0, func(n *corev1.Node) { delete(n.Annotations, rep.AnnotationDriver) }),
		node("gpu-upgrade", 8, 8, 8, func(n *corev1.Node) { n.Labels["nvidia.com/gpu-driver-upgrade-state"] = "upgrade-failed" }), plugin("gpu-upgrade", true, running, 0),
		node("gpu-ecc", 8, 8, 8, func(n *corev1.Node) {
			n.Annotations[rep.AnnotationGPUHealth] = "reset"
			n.Annotations[rep.AnnotationGPUHealthDetail] = "0000:07:00.0: row remapping pending (applied at the next GPU reset), 2 uncorrectable ECC errors since the driver loaded"
		}), plugin("gpu-ecc", true, running, 0),
		node("gpu-remapfail", 8, 8, 8, func(n *corev1.Node) {
			n.Annotations[rep.AnnotationGPUHealth] = "service"
			n.Annotations[rep.AnnotationGPUHealthDetail] = "0000:0f:00.0: row remapping failed"
		}), plugin("gpu-remapfail", true, running, 0),
		node("gpu-hot", 8, 8, 8, func(n *corev1.Node) {
			n.Annotations[rep.AnnotationGPUHealth] = "warn" // as an earlier release wrote it
			n.Annotations[rep.AnnotationGPUHealthDetail] = "0000:47:00.0: hardware slowdown: thermal"
		}), plugin("gpu-hot", true, running, 0),
		nodefixtures.NodeObject("cpu-0", nodefixtures.Profiles["cpu"]),
	}
}

// run runs doctor from the cluster alone (--no-agent: the host links are prep's record).
func run(t *testing.T, objs []runtime.Object, args ...string) (string, error) {
	t.Helper()
	return runOn(t, clustertest.New(objs...), append([]string{"--no-agent"}, args...)...)
}

func runOn(t *testing.T, g *clustertest.Getter, args ...string) (string, error) {
	t.Helper()
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	dyn := func(cluster.Getter) (dynamic.Interface, error) {
		return dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{gpusoftware.ClusterPolicyGVR: "ClusterPolicyList", gpusoftware.GPUClusterGVR: "GPUClusterList"}), nil
	}
	cmd := newCmdDoctor(g, streams, dyn)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestDoctorGolden(t *testing.T) {
	for _, f := range []string{"table", "json"} {
		out, err := run(t, world(), "-o", f)
		if cliexit.Code(err, false) != cliexit.Failures {
			t.Fatalf("-o %s: exit %d %v", f, cliexit.Code(err, false), err)
		}
		golden.Assert(t, "doctor."+f+".golden", []byte(out))
	}
}

// TestDoctorVerdicts: each node's verdict, first broken link and remedy.
func TestDoctorVerdicts(t *testing.T) {
	out, _ := run(t, world(), "-o", "json")
	var r doctor.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		verdict doctor.Verdict
		first   string
		remedy  remedy.Action
		detail  string
	}{
		"gpu-healthy":   {doctor.Healthy, "", remedy.None, ""},
		"gpu-offbus":    {doctor.Faulty, doctor.LinkHardware, remedy.Service, "8 GPUs on the PCI bus, NVML sees 7"},
		"gpu-crash":     {doctor.Unschedulable, doctor.LinkSoftware, remedy.Restart, "CrashLoopBackOff"},
		"gpu-pull":      {doctor.Unschedulable, doctor.LinkSoftware, remedy.Configure, "ImagePullBackOff"},
		"gpu-validator": {doctor.Unschedulable, doctor.LinkDriver, remedy.Configure, "no driver"},
		"gpu-cordoned":  {doctor.Unschedulable, doctor.LinkKubernetes, remedy.Configure, "cordoned"},
		// Still serving its GPUs with the old driver.
		"gpu-upgrade":   {doctor.Degraded, doctor.LinkDriver, remedy.Reboot, "upgrade-failed"},
		"gpu-fewer":     {doctor.Degraded, doctor.LinkKubernetes, remedy.Restart, "6 GPUs allocatable of 8"},
		"gpu-pending":   {doctor.Degraded, doctor.LinkKubernetes, remedy.None, "1 GPU pods Pending for this node, ml/train-0: 0/9 nodes are available: 1 Insufficient nvidia.com/gpu."},
		"gpu-noruntime": {doctor.Unschedulable, doctor.LinkContainerd, remedy.Configure, "overwritten by an upgrade"},
		"gpu-nodriver":  {doctor.Unschedulable, doctor.LinkDriver, remedy.Configure, "no driver"},
		"gpu-ecc":       {doctor.Faulty, doctor.LinkHardware, remedy.ResetGPU, "2 uncorrectable ECC errors"},
		"gpu-remapfail": {doctor.Faulty, doctor.LinkHardware, remedy.Service, "row remapping failed"},
		"gpu-hot":       {doctor.Degraded, doctor.LinkHardware, remedy.Watch, "hardware slowdown: thermal"},
	}
	if len(r.Items) != len(want) {
		t.Errorf("%d nodes diagnosed, want the %d GPU nodes", len(r.Items), len(want))
	}
	for _, n := range r.Items {
		w, ok := want[n.Node]
		if !ok {
			t.Errorf("unexpected node %s", n.Node)
			continue
		}
		detail := ""
		for _, l := range n.Links {
			if l.Name == n.FirstBroken {
				detail = l.Detail
			}
		}
		if n.Verdict != w.verdict || n.FirstBroken != w.first || n.Remedy != w.remedy || !strings.Contains(detail, w.detail) {
			t.Errorf("%s: %s, first broken %q (%s), remedy %q; want %s, %q (…%s…), %q", n.Node, n.Verdict, n.FirstBroken, detail, n.Remedy, w.verdict, w.first, w.detail, w.remedy)
		}
		if len(n.Links) != len(doctor.Links) {
			t.Errorf("%s: %d links", n.Node, len(n.Links))
		}
	}
	// The validator's stuck step is named on its node's software link.
	for _, n := range r.Items {
		if n.Node == "gpu-validator" && !strings.Contains(n.Links[4].Detail, "stuck at toolkit-validation: running") {
			t.Errorf("validator: %+v", n.Links[4])
		}
	}
}

func TestDoctorHealthyAndSelection(t *testing.T) {
	objs := []runtime.Object{node("gpu-healthy", 8, 8, 8, nil), plugin("gpu-healthy", true, running, 0), node("gpu-crash", 8, 8, 0, nil)}
	out, err := run(t, objs, "gpu-healthy")
	if err != nil || !strings.Contains(out, "1 GPU node: 1 healthy") {
		t.Fatalf("a healthy node: %v\n%s", err, out)
	}
	if _, err := run(t, objs, "no-such-node"); cliexit.Code(err, false) != cliexit.Usage {
		t.Errorf("unknown node: %v", err)
	}
	if _, err := run(t, objs, "-l", "a=b"); cliexit.Code(err, false) != cliexit.Usage {
		t.Errorf("selector matching nothing: %v", err)
	}
	if _, err := run(t, objs, "-o", "xml"); cliexit.Code(err, false) != cliexit.Usage {
		t.Errorf("-o xml: %v", err)
	}
}
