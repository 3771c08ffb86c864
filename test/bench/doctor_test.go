package bench

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/doctor"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
)

// BenchmarkDoctor: `kubectl gpu doctor -o json` over the whole cluster (every node a GPU node,
// Pods GPU pods) against the same reads by hand — `kubectl get nodes -o json` and `kubectl
// get pods -A -o json` — alternated in each iteration; its API requests are counted in
// process (a fixed number of list calls: requests per node fall with the cluster's size) and
// the client's peak memory measured. This is the cluster side alone (--no-agent);
// BenchmarkDoctorAgent1000 has the node agent.
func BenchmarkDoctor(b *testing.B) {
	fillPods(b)
	ctx := context.Background()
	var ours, base time.Duration
	var peak float64
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		r := env.Gpu(ctx, "doctor", "--no-agent", "-o", "json")
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

// BenchmarkDoctorAgent100 and BenchmarkDoctorAgent1000: doctor with its node agent, in
// process (to count its API requests), over 100 and 1000 simulated nodes against the prep
// check's floor in the same run (the agent Jobs created at the same parallelism, one watch,
// each pod's log read, the Jobs deleted: see BenchmarkPrep1000); every agent pod's log is the
// real agent's report for a K3s fake host root. Goal: ≤ 1.3× the floor, ≤ 5 requests per node.
func BenchmarkDoctorAgent100(b *testing.B)  { benchDoctorAgent(b, 100) }
func BenchmarkDoctorAgent1000(b *testing.B) { benchDoctorAgent(b, 1000) }

func benchDoctorAgent(b *testing.B, n int) {
	if n > Nodes {
		b.Skipf("cluster has %d nodes", Nodes)
	}
	fillPods(b)
	ctx := context.Background()
	stop := serveAgentReport(b)
	defer stop()
	nodes := benchNodes(n)
	parallel := prep.DefaultParallel(nodereport.ModeCheck)
	var runs floorRuns
	for i := 0; i < b.N; i++ {
		cs, ct := countingClient(b)
		t0 := time.Now()
		r, err := doctor.Diagnose(ctx, cs, nil, doctor.Request{Names: nodes,
			Agent: &doctor.Agent{Namespace: nodepod.DefaultNamespace, Image: "agent:bench", Timeout: 5 * time.Minute}})
		d := time.Since(t0)
		if err != nil || len(r.Items) != n {
			b.Fatalf("doctor: %v", err)
		}
		for _, it := range r.Items {
			if it.Host != doctor.HostAgent {
				b.Fatalf("%s: host links from %s: %v", it.Node, it.Host, r.Notes)
			}
		}
		requests := ct.n.Load()
		waitJobsGone(b)
		t1 := time.Now()
		prepFloor(b, nodes, parallel, true)
		runs.add(d, time.Since(t1), requests)
		waitJobsGone(b)
	}
	runs.report(b, "doctor", n)
}
