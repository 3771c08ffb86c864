package bench

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/doctor"
)

// BenchmarkDoctor: `kubectl gpu doctor -o json` over the whole cluster (every node a GPU node,
// Pods GPU pods) against the same reads by hand — `kubectl get nodes -o json` and `kubectl
// get pods -A -o json` — alternated in each iteration; its API requests are counted in
// process (a fixed number of list calls: requests per node fall with the cluster's size) and
// the client's peak memory measured. doctor reads the cluster only (no node agent): the issue's
// goal against the prep check's floor applies once it runs the agent.
func BenchmarkDoctor(b *testing.B) {
	fillPods(b)
	ctx := context.Background()
	var ours, base time.Duration
	var peak float64
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		r := env.Gpu(ctx, "doctor", "-o", "json")
		ours += time.Since(t0)
		peak = max(peak, r.PeakRSSMiB)
		var rep doctor.Report
		if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil || len(rep.Items) != Nodes {
			b.Fatalf("kubectl gpu doctor: exit %d %v, %d nodes: %s", r.Code, err, len(rep.Items), r.Stderr)
		}
		t1 := time.Now()
		for _, args := range [][]string{{"get", "nodes", "-o", "json"}, {"get", "pods", "-A", "-o", "json"}} {
			if r := env.Kubectl(ctx, nil, args...); r.Code != 0 {
				b.Fatalf("kubectl %v: exit %d: %s", args, r.Code, r.Stderr)
			}
		}
		base += time.Since(t1)
	}
	cs, ct := countingClient(b)
	if _, err := doctor.Diagnose(ctx, cs, nil, doctor.Request{}); err != nil {
		b.Fatal(err)
	}
	n := float64(b.N)
	b.ReportMetric(float64(ours.Milliseconds())/n, "plugin-ms/op")
	b.ReportMetric(float64(base.Milliseconds())/n, "kubectl-ms/op")
	b.ReportMetric(float64(ours)/float64(base), "ratio")
	b.ReportMetric(float64(ct.n.Load())/float64(Nodes), "requests/node")
	b.ReportMetric(peak, "client-peak-MiB")
}
