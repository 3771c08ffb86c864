package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
)

func TestNodesMatchesCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.Cluster
	// GPUs in use: 3 on one A100 node from two pods, 1 on the K3s node, and a finished pod
	// that must not count.
	for _, p := range []struct {
		name, node string
		gpus       int64
	}{{"train-a", "gpu-a100-0", 2}, {"train-b", "gpu-a100-0", 1}, {"infer", "gpu-k3s-0", 1}} {
		if _, err := c.RunGPUPod(ctx, "default", p.name, p.node, p.gpus); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = c.Client.CoreV1().Pods("default").Delete(context.Background(), p.name, metav1.DeleteOptions{})
		})
	}

	r := env.Gpu(ctx, "nodes", "-o", "json")
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.Code, r.Stderr)
	}
	var inv inventory.Inventory
	if err := json.Unmarshal([]byte(r.Stdout), &inv); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.Stdout)
	}
	if inv.APIVersion != "gpu.kubectl-gpu.io/v1alpha1" || inv.Kind != "NodeInventory" {
		t.Fatalf("document type %q %q", inv.APIVersion, inv.Kind)
	}

	// What the cluster holds, counted independently of the plugin.
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantGPUs := map[string]int64{}
	for _, n := range nodes.Items {
		if q, ok := n.Status.Allocatable["nvidia.com/gpu"]; ok {
			wantGPUs[n.Name] = q.Value()
		}
	}
	wantUsed := map[string]int64{}
	for _, p := range pods.Items {
		if p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed" {
			continue
		}
		for _, ctr := range p.Spec.Containers {
			if q, ok := ctr.Resources.Requests["nvidia.com/gpu"]; ok {
				wantUsed[p.Spec.NodeName] += q.Value()
			}
		}
	}
	if len(inv.Items) != 5 {
		t.Fatalf("%d GPU nodes listed, want 5 (cpu-0 is not a GPU node)", len(inv.Items))
	}
	for _, n := range inv.Items {
		if n.GPUs != wantGPUs[n.Name] || n.Used != wantUsed[n.Name] {
			t.Errorf("%s: gpus %d used %d, cluster has %d and %d", n.Name, n.GPUs, n.Used, wantGPUs[n.Name], wantUsed[n.Name])
		}
		if !n.Ready {
			t.Errorf("%s not ready", n.Name)
		}
	}
	if inv.Summary.Used != 4 || inv.Summary.GPUs != 21 {
		t.Errorf("summary %+v, want 21 GPUs with 4 used", inv.Summary)
	}

	table := env.Gpu(ctx, "nodes")
	lines := strings.Split(strings.TrimSpace(table.Stdout), "\n")
	if table.Code != 0 || len(lines) != 6 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("table: exit %d\n%s%s", table.Code, table.Stdout, table.Stderr)
	}
	if !strings.Contains(table.Stdout, "gpu-rke2-0") || !strings.Contains(lines[1], "gpu-a100-0   True    8      3") {
		t.Errorf("table rows:\n%s", table.Stdout)
	}
}

func TestVersionThroughKubectl(t *testing.T) {
	ctx := context.Background()
	r := env.Gpu(ctx, "version", "-o", "json")
	if r.Code != 0 {
		t.Fatalf("exit %d: %s", r.Code, r.Stderr)
	}
	var doc struct {
		Kind   string
		Server struct{ GitVersion string }
		Client struct{ AgentImage string }
	}
	if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Kind != "VersionInfo" || doc.Server.GitVersion != "v1.36.3" || !strings.Contains(doc.Client.AgentImage, "gpu-node-agent:") {
		t.Fatalf("version document: %s", r.Stdout)
	}
}

// TestBadInput: each case exits 2 with one line on stderr naming the problem and nothing on
// stdout.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	garbled := filepath.Join(dir, "garbled")
	if err := os.WriteFile(garbled, []byte("apiVersion: v1\nkind: Config\nclusters: [oops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreachable := filepath.Join(dir, "unreachable")
	if err := os.WriteFile(unreachable, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"unknown node", nil, []string{"nodes", "no-such-node"}, `node "no-such-node" not found`},
		{"invalid selector", nil, []string{"nodes", "-l", "a in (b"}, "invalid label selector"},
		{"unknown output", nil, []string{"nodes", "-o", "xml"}, `unknown output format "xml"`},
		{"unknown flag", nil, []string{"nodes", "--frobnicate"}, "unknown flag: --frobnicate"},
		{"unknown command", nil, []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown context", nil, []string{"nodes", "--context", "nope"}, `context "nope"`},
		{"missing kubeconfig", []string{"KUBECONFIG=" + filepath.Join(dir, "missing")}, []string{"nodes"}, "no cluster configured"},
		{"garbled kubeconfig", []string{"KUBECONFIG=" + garbled}, []string{"nodes"}, "cannot load the kubeconfig"},
		{"unreachable server", []string{"KUBECONFIG=" + unreachable}, []string{"nodes"}, "the cluster is unreachable"},
		{"version requires server", []string{"KUBECONFIG=" + unreachable}, []string{"version", "--require-server"}, "the cluster is unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := env.Kubectl(ctx, tc.env, append([]string{"gpu"}, tc.args...)...)
			lines := strings.Split(strings.TrimRight(r.Stderr, "\n"), "\n")
			if r.Code != 2 || r.Stdout != "" || len(lines) != 1 || !strings.HasPrefix(lines[0], "error: ") || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2, empty stdout, one line containing %q", r.Code, r.Stdout, r.Stderr, tc.want)
			}
		})
	}
}
