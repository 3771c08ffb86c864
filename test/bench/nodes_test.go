package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
)

var metav1CreateOptions = metav1.CreateOptions{}

var jsonMarshal = func(v any) ([]byte, error) { return json.Marshal(v) }

// BenchmarkNodes: `kubectl gpu nodes -o json` over the whole cluster against the baseline
// `kubectl get nodes -o json` plus `kubectl get pods -A -o json`, alternated in each
// iteration. Goal: ratio ≤ 1.5.
func BenchmarkNodes(b *testing.B) {
	fillPods(b)
	benchNodesAgainst(b, [][]string{{"get", "nodes", "-o", "json"}, {"get", "pods", "-A", "-o", "json"}}, func(inv inventory.Inventory) string {
		if len(inv.Items) != Nodes || inv.Summary.Used != int64(Pods) {
			return fmt.Sprintf("%d nodes, %d used; want %d and %d", len(inv.Items), inv.Summary.Used, Nodes, Pods)
		}
		return ""
	})
}

// BenchmarkNodesDRA: the same with a ResourceSlice of 4 GPUs published for every node (as
// NVIDIA's DRA driver would), against kubectl get nodes, get pods -A and get resourceslices.
// Goal: ratio ≤ 1.5.
func BenchmarkNodesDRA(b *testing.B) {
	fillPods(b)
	ctx := context.Background()
	cs := env.Cluster.Client
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, n := range benchNodes(Nodes) {
		wg.Add(1)
		sem <- struct{}{}
		go func(n string) {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := cs.ResourceV1().ResourceSlices().Create(ctx, nodefixtures.DRASlice(n, 4), metav1.CreateOptions{}); err != nil {
				b.Error(err)
			}
		}(n)
	}
	wg.Wait()
	defer func() {
		_ = cs.ResourceV1().ResourceSlices().DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{})
	}()
	lists := [][]string{{"get", "nodes", "-o", "json"}, {"get", "pods", "-A", "-o", "json"}, {"get", "resourceslices", "-o", "json"}}
	benchNodesAgainst(b, lists, func(inv inventory.Inventory) string {
		if len(inv.Items) != Nodes || inv.Items[0].DRA == nil || inv.Items[0].DRA.GPUs != 4 {
			return fmt.Sprintf("%d nodes; want %d with 4 DRA GPUs each", len(inv.Items), Nodes)
		}
		return ""
	})
}

// benchNodesAgainst times `kubectl gpu nodes -o json` against the kubectl lists, alternated
// in each iteration; check judges the first inventory ("" when right).
func benchNodesAgainst(b *testing.B, lists [][]string, check func(inventory.Inventory) string) {
	ctx := context.Background()
	var ours, base time.Duration
	var peak float64
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		r := env.Gpu(ctx, "nodes", "-o", "json")
		ours += time.Since(t0)
		peak = max(peak, r.PeakRSSMiB)
		if r.Code != 0 {
			b.Fatalf("kubectl gpu nodes: exit %d: %s", r.Code, r.Stderr)
		}
		if i == 0 {
			var inv inventory.Inventory
			if err := json.Unmarshal([]byte(r.Stdout), &inv); err != nil {
				b.Fatalf("inventory: %v", err)
			}
			if msg := check(inv); msg != "" {
				b.Fatalf("inventory: %s", msg)
			}
		}
		t1 := time.Now()
		for _, args := range lists {
			if r := env.Kubectl(ctx, nil, args...); r.Code != 0 {
				b.Fatalf("kubectl %v: exit %d: %s", args, r.Code, r.Stderr)
			}
		}
		base += time.Since(t1)
	}
	n := float64(b.N)
	b.ReportMetric(float64(ours.Milliseconds())/n, "plugin-ms/op")
	b.ReportMetric(float64(base.Milliseconds())/n, "kubectl-ms/op")
	b.ReportMetric(float64(ours)/float64(base), "ratio")
	b.ReportMetric(peak, "client-peak-MiB")
}

// BenchmarkListNodes: one list of every node as the commands make it (a consistent read,
// which kube-apiserver v1.36 serves from its watch cache once the cache is fresh) against
// the same list at resourceVersion=0 (any version the cache holds, as informers start), each
// pair interleaved: whether the commands gain by asking for the cache's version.
func BenchmarkListNodes(b *testing.B) {
	ctx := context.Background()
	cs, _ := countingClient(b)
	list := func(rv string) func() time.Duration {
		return func() time.Duration {
			t0 := time.Now()
			l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: rv})
			if err != nil || len(l.Items) != Nodes {
				b.Fatalf("list nodes (resourceVersion %q): %v, %d nodes", rv, err, len(l.Items))
			}
			return time.Since(t0)
		}
	}
	pairs(b, list(""), list("0"), "consistent", "cache")
}
