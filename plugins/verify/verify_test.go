package verify

import (
	"context"
	"regexp"
	"strings"
	"testing"

	resourcev1 "k8s.io/api/resource/v1"
	k8stesting "k8s.io/client-go/testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

const passLog = "[Vector addition of 50000 elements]\nCopy input data from the host memory to the CUDA device\nCUDA kernel launch with 196 blocks of 256 threads\nCopy output data from the CUDA device to the host memory\nTest PASSED\nDone\n"

// simCluster is the demo cluster's nodes whose verify pods end as a real node's would:
// the A100s and RKE2 pass, the second A100 has no usable GPU (CUDA error), the K3s node's
// GPU is taken (the scheduler's Insufficient nvidia.com/gpu).
func simCluster(t *testing.T) *clustertest.Getter {
	g := clustertest.New(nodefixtures.DemoObjects(nodepod.DefaultNamespace)...)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	err := g.RunNodes(ctx, nodepod.DefaultNamespace, func(p *corev1.Pod) clustertest.Outcome {
		switch p.Labels[nodepod.LabelNode] {
		case "gpu-a100-1":
			return clustertest.Outcome{Status: &corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{{Name: "vectoradd",
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}}}},
				Log: "Failed to allocate device vector A (error code no CUDA-capable device is detected)!\n"}
		case "gpu-k3s-0":
			return clustertest.Outcome{Status: &corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
				Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
				Message: "0/6 nodes are available: 1 Insufficient nvidia.com/gpu, 5 node(s) didn't match Pod's node affinity/selector."}}}}
		}
		return clustertest.Outcome{Phase: corev1.PodSucceeded, Log: passLog}
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func run(t *testing.T, g *clustertest.Getter, args ...string) (string, string, error) {
	t.Helper()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	cmd := NewCmdVerify(g, streams)
	cmd.SetArgs(append([]string{"--timeout", "20s"}, args...))
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// durations are the only thing that differs between runs.
var (
	tableDuration = regexp.MustCompile(`\s+\d+(\.\d+)?(ms|s)\s+`)
	jsonDuration  = regexp.MustCompile(`"durationSeconds": [0-9.]+`)
)

func TestVerifyGolden(t *testing.T) {
	for _, tc := range []struct {
		name, golden string
		args         []string
	}{
		{"table", "verify.table.golden", nil},
		{"wide", "verify.wide.golden", []string{"-o", "wide"}},
		{"json", "verify.json.golden", []string{"-o", "json"}},
		{"all GPUs of named nodes", "verify.named.golden", []string{"--gpus", "all", "gpu-a100-0", "gpu-rke2-0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := simCluster(t)
			out, _, err := run(t, g, tc.args...)
			want := cliexit.Failures
			if tc.name == "all GPUs of named nodes" {
				want = cliexit.OK
			}
			if cliexit.Code(err, false) != want {
				t.Fatalf("exit %d (%v), want %d\n%s", cliexit.Code(err, false), err, want, out)
			}
			out = tableDuration.ReplaceAllString(out, "   D   ")
			out = jsonDuration.ReplaceAllString(out, `"durationSeconds": 0`)
			golden.Assert(t, tc.golden, []byte(out))
			pods, _ := g.Client.CoreV1().Pods(nodepod.DefaultNamespace).List(context.Background(), metav1.ListOptions{})
			if len(pods.Items) != 0 {
				t.Fatalf("%d pods left", len(pods.Items))
			}
		})
	}
}

// TestVerifyValidate: bad flags are exit 2 before anything reaches the cluster.
func TestVerifyValidate(t *testing.T) {
	g := simCluster(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--gpus", "0"}, `--gpus "0"`},
		{[]string{"--gpus", "two"}, `--gpus "two"`},
		{[]string{"--resource", "cpu"}, `--resource "cpu" is not an NVIDIA GPU resource`},
		{[]string{"--parallel", "0"}, "--parallel"},
		{[]string{"--timeout", "-1s"}, "--timeout"},
		{[]string{"-o", "xml"}, "xml"},
		{[]string{"--gpus", "9", "gpu-a100-0"}, "--gpus 9 is more than the node has"},
	} {
		g.Client.ClearActions()
		out, _, err := run(t, g, tc.args...)
		if cliexit.Code(err, false) != cliexit.Usage || out != "" || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: exit %d %v, stdout %q", tc.args, cliexit.Code(err, false), err, out)
		}
		for _, a := range g.Client.Actions() {
			if a.GetVerb() == "create" {
				t.Errorf("%v: created %s", tc.args, a.GetResource().Resource)
			}
		}
	}
}

// TestVerifyAsksTheWayTheNodeServes: a node whose GPUs DRA publishes gets a pod with a
// claim from the run's ResourceClaimTemplate (removed with the run); a time-sliced node's
// pass says what it proves.
func TestVerifyAsksTheWayTheNodeServes(t *testing.T) {
	g := simCluster(t)
	ctx := context.Background()
	for _, extra := range []struct{ name, profile string }{{"gpu-dra-0", "dra"}, {"gpu-shared-0", "timeslice"}} {
		if _, err := g.Client.CoreV1().Nodes().Create(ctx, nodefixtures.NodeObject(extra.name, nodefixtures.Profiles[extra.profile]), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.Client.ResourceV1().ResourceSlices().Create(ctx, nodefixtures.DRASlice("gpu-dra-0", 4), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	g.Client.ClearActions()
	out, _, err := run(t, g, "--gpus", "2", "gpu-dra-0", "gpu-shared-0")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var template string
	for _, a := range g.Client.Actions() {
		c, ok := a.(k8stesting.CreateAction)
		if !ok {
			continue
		}
		switch o := c.GetObject().(type) {
		case *resourcev1.ResourceClaimTemplate:
			r := o.Spec.Spec.Devices.Requests[0]
			if r.Exactly == nil || r.Exactly.DeviceClassName != "gpu.nvidia.com" || r.Exactly.Count != 2 {
				t.Errorf("template %+v", r)
			}
			template = o.Name
		case *corev1.Pod:
			node := o.Labels[nodepod.LabelNode]
			_, extended := o.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"]
			switch {
			case node == "gpu-dra-0" && (extended || len(o.Spec.ResourceClaims) != 1 || *o.Spec.ResourceClaims[0].ResourceClaimTemplateName != template || len(o.Spec.Containers[0].Resources.Claims) != 1):
				t.Errorf("DRA node's pod asks %+v / %+v", o.Spec.ResourceClaims, o.Spec.Containers[0].Resources)
			case node == "gpu-shared-0" && (!extended || len(o.Spec.ResourceClaims) != 0):
				t.Errorf("device-plugin node's pod asks %+v", o.Spec.Containers[0].Resources)
			}
		}
	}
	if template == "" {
		t.Fatal("no ResourceClaimTemplate made")
	}
	if l, _ := g.Client.ResourceV1().ResourceClaimTemplates(nodepod.DefaultNamespace).List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
		t.Fatalf("%d templates left", len(l.Items))
	}
	if !strings.Contains(out, "gpu-shared-0 (4× time-slicing) share their GPUs: a pass there proves the pod reached a GPU, not that it is isolated") {
		t.Fatalf("no sharing note:\n%s", out)
	}
	if _, _, err := run(t, g, "--claim", "dra", "gpu-shared-0"); cliexit.Code(err, false) != cliexit.Usage || !strings.Contains(err.Error(), "no GPU published through DRA") {
		t.Fatalf("--claim dra on a device-plugin node: %v", err)
	}
}
