package nodes

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

// cluster holds the demo cluster's nodes (same profiles as the local cluster) and a pod
// holding 4 GPUs on gpu-a100-0.
func demoCluster() *clustertest.Getter {
	var objs []runtime.Object
	for _, s := range nodefixtures.DefaultNodes {
		for i := 0; i < s.Count; i++ {
			n := nodefixtures.NodeObject(s.Prefix+"-"+string(rune('0'+i)), nodefixtures.Profiles[s.Profile])
			// What kwok's node-initialize stage adds on the real cluster.
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
			objs = append(objs, n)
		}
	}
	objs = append(objs, nodefixtures.GPUPod("default", "training-0", "gpu-a100-0", 4))
	// Today's scheduling: a node whose GPUs DRA publishes (one allocated to a claim), a
	// time-sliced node, a MIG node as the MIG manager left it.
	for _, extra := range []struct{ name, profile string }{{"gpu-dra-0", "dra"}, {"gpu-shared-0", "timeslice"}, {"gpu-mig-0", "mig"}} {
		n := nodefixtures.NodeObject(extra.name, nodefixtures.Profiles[extra.profile])
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
		objs = append(objs, n)
	}
	objs = append(objs, nodefixtures.DRASlice("gpu-dra-0", 4), nodefixtures.AllocatedClaim("ml", "train-gpu", "gpu-dra-0", "gpu-1"))
	return clustertest.New(objs...)
}

func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	cmd := NewCmdNodes(demoCluster(), streams)
	cmd.SetArgs(append([]string{}, args...))
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestNodesGolden(t *testing.T) {
	for _, tc := range []struct {
		name, golden string
		args         []string
	}{
		{"table", "nodes.table.golden", nil},
		{"wide", "nodes.wide.golden", []string{"-o", "wide"}},
		{"all", "nodes.all.golden", []string{"--all"}},
		{"json", "nodes.json.golden", []string{"-o", "json"}},
		{"yaml", "nodes.yaml.golden", []string{"-o", "yaml"}},
		{"selector", "nodes.selector.golden", []string{"-l", "nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := run(t, tc.args...)
			if err != nil || errOut != "" {
				t.Fatalf("err %v, stderr %q", err, errOut)
			}
			golden.Assert(t, tc.golden, []byte(out))
		})
	}
}

func TestNodesJSONIsVersioned(t *testing.T) {
	out, _, err := run(t, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Summary    struct{ GPUs, Used int64 }
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.APIVersion != "gpu.kubectl-gpu.io/v1alpha1" || doc.Kind != "NodeInventory" || doc.Summary.GPUs != 42 || doc.Summary.Used != 5 { // 21 + 4 DRA + 8 shared + 9 MIG; 4 + 1 claim
		t.Fatalf("document: %+v", doc)
	}
}

func TestNodesBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"unknown node", []string{"nope"}, `node "nope" not found: list nodes with 'kubectl get nodes'`},
		{"bad selector", []string{"-l", "a in (b"}, `invalid label selector "a in (b"`},
		{"bad output", []string{"-o", "xml"}, `unknown output format "xml": use one of table, wide, json, yaml`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := run(t, tc.args...)
			if cliexit.Code(err, false) != cliexit.Usage {
				t.Fatalf("exit code %d for %v", cliexit.Code(err, false), err)
			}
			if !bytes.HasPrefix([]byte(err.Error()), []byte(tc.msg)) {
				t.Fatalf("message %q, want prefix %q", err, tc.msg)
			}
			if out != "" {
				t.Fatalf("stdout not empty: %q", out)
			}
		})
	}
}

func TestNodesNoGPUNodes(t *testing.T) {
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	cmd := NewCmdNodes(clustertest.New(nodefixtures.NodeObject("cpu-0", nodefixtures.Profiles["cpu"])), streams)
	cmd.SetArgs([]string{})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 || !bytes.Contains(errOut.Bytes(), []byte("kubectl gpu prep")) || !bytes.Contains(errOut.Bytes(), []byte("kubectl gpu operator install")) {
		t.Fatalf("stdout %q stderr %q", out, errOut)
	}
}
