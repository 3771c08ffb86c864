package inventory

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

func node(name string, gpus int64, labels map[string]string, ready bool) corev1.Node {
	rl := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")}
	if gpus > 0 {
		rl[ResourceGPU] = *resource.NewQuantity(gpus, resource.DecimalSI)
	}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Status: corev1.NodeStatus{
			Capacity: rl, Allocatable: rl.DeepCopy(),
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}},
		},
	}
}

func pod(name, nodeName string, phase corev1.PodPhase, gpus ...int64) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       corev1.PodSpec{NodeName: nodeName},
		Status:     corev1.PodStatus{Phase: phase},
	}
	for i, g := range gpus {
		q := *resource.NewQuantity(g, resource.DecimalSI)
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{
			Name:      "c" + string(rune('0'+i)),
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{ResourceGPU: q}, Requests: corev1.ResourceList{ResourceGPU: q}},
		})
	}
	return p
}

func TestBuildCountsAndChoice(t *testing.T) {
	mig := node("mig", 0, map[string]string{LabelMIGStrategy: "mixed"}, true)
	mig.Status.Allocatable["nvidia.com/mig-1g.10gb"] = resource.MustParse("7")
	mig.Status.Capacity["nvidia.com/mig-1g.10gb"] = resource.MustParse("7")
	nodes := []corev1.Node{
		node("b-gpu", 8, map[string]string{LabelProduct: "NVIDIA-A100-SXM4-80GB", LabelMemory: "81920", LabelDriverFull: "550.127.08", LabelRuntimeFull: "12.4"}, true),
		node("a-gpu", 4, nil, false),
		node("cpu", 0, nil, true),
		node("nfd-only", 0, map[string]string{LabelPCIPresent: "true"}, true),
		mig,
	}
	migPod := pod("m", "mig", corev1.PodRunning)
	migPod.Spec.Containers = []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"nvidia.com/mig-1g.10gb": resource.MustParse("2")}, Requests: corev1.ResourceList{"nvidia.com/mig-1g.10gb": resource.MustParse("2")}}}}
	init := pod("init", "a-gpu", corev1.PodPending, 1)
	init.Spec.InitContainers = []corev1.Container{{Name: "i", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{ResourceGPU: resource.MustParse("3")}, Requests: corev1.ResourceList{ResourceGPU: resource.MustParse("3")}}}}
	pods := []corev1.Pod{
		pod("p1", "b-gpu", corev1.PodRunning, 2, 1),
		pod("p2", "b-gpu", corev1.PodRunning, 4),
		pod("done", "b-gpu", corev1.PodSucceeded, 8),  // finished pods hold nothing
		pod("failed", "b-gpu", corev1.PodFailed, 8),   // nor do failed ones
		pod("elsewhere", "cpu", corev1.PodRunning, 1), // a node not in the inventory
		init, // an init container asking for more than the app containers: the max counts
		migPod,
	}
	inv, err := Build(nodes, pods, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Node{}
	var order []string
	for _, n := range inv.Items {
		got[n.Name] = n
		order = append(order, n.Name)
	}
	if want := []string{"a-gpu", "b-gpu", "mig", "nfd-only"}; !equal(order, want) {
		t.Fatalf("nodes = %v, want %v", order, want)
	}
	checks := []struct {
		name       string
		gpus, used int64
		ready      bool
	}{
		{"a-gpu", 4, 3, false},
		{"b-gpu", 8, 7, true},
		{"mig", 7, 2, true},
		{"nfd-only", 0, 0, true},
	}
	for _, c := range checks {
		n := got[c.name]
		if n.GPUs != c.gpus || n.Used != c.used || n.Ready != c.ready {
			t.Errorf("%s: gpus=%d used=%d ready=%v, want %d %d %v", c.name, n.GPUs, n.Used, n.Ready, c.gpus, c.used, c.ready)
		}
	}
	b := got["b-gpu"]
	if b.Product != "NVIDIA-A100-SXM4-80GB" || b.MemoryMiB != 81920 || b.Driver != "550.127.08" || b.CUDA != "12.4" {
		t.Errorf("b-gpu labels not read: %+v", b)
	}
	if want := (Summary{Nodes: 4, GPUNodes: 4, ReadyGPUNodes: 3, GPUs: 19, Used: 12}); inv.Summary != want {
		t.Errorf("summary = %+v, want %+v", inv.Summary, want)
	}
	if got["mig"].migColumn() != "mixed 1g.10gb:7" {
		t.Errorf("mig column = %q", got["mig"].migColumn())
	}

	all, err := Build(nodes, pods, Options{All: true})
	if err != nil || len(all.Items) != 5 {
		t.Fatalf("--all: %d nodes, err %v", len(all.Items), err)
	}
}

func TestBuildNamedNodes(t *testing.T) {
	nodes := []corev1.Node{node("gpu", 2, nil, true), node("cpu", 0, nil, true)}
	inv, err := Build(nodes, nil, Options{Names: []string{"cpu", "gpu", "cpu"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Items) != 2 || inv.Items[0].Name != "cpu" || inv.Items[0].GPUNode {
		t.Fatalf("named nodes: %+v", inv.Items)
	}
	_, err = Build(nodes, nil, Options{Names: []string{"gpu", "nope", "gone"}})
	if cliexit.Code(err, false) != cliexit.Usage || err.Error() != `node "nope", "gone" not found: list nodes with 'kubectl get nodes'` {
		t.Fatalf("missing nodes: %v (code %d)", err, cliexit.Code(err, false))
	}
}

func TestOlderGFDLabels(t *testing.T) {
	n := node("old", 1, map[string]string{
		"nvidia.com/cuda.driver.major": "470", "nvidia.com/cuda.driver.minor": "82", "nvidia.com/cuda.driver.rev": "01",
		"nvidia.com/cuda.runtime.major": "11", "nvidia.com/cuda.runtime.minor": "4",
	}, true)
	inv, err := Build([]corev1.Node{n}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d, c := inv.Items[0].Driver, inv.Items[0].CUDA; d != "470.82.01" || c != "11.4" {
		t.Fatalf("driver %q cuda %q", d, c)
	}
}

func TestParseSelector(t *testing.T) {
	if _, err := ParseSelector("a in (b"); cliexit.Code(err, false) != cliexit.Usage {
		t.Fatalf("bad selector: %v", err)
	}
	if _, err := ParseSelector("nvidia.com/gpu.present=true"); err != nil {
		t.Fatal(err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
