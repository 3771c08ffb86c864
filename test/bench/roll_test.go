package bench

import (
	"context"
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/simnodes"
)

// BenchmarkRoll100: `kubectl gpu prep --apply --reboot --max-unavailable 10` (in process, to
// count its API requests) over 100 simulated nodes whose change needs a reboot, against the
// time one node takes alone in the same run (the mean of three nodes rolled one at a time).
// Each reboot is simulated with a fixed length (the agent's 5 s timer, then 2 s down);
// kwok completes each agent Job's pod after 1–5 s. Goal: wall time ≤ 1.25× (10 waves × one
// node alone) and ≤ 15 API requests per node; each run logs its requests by kind.
func BenchmarkRoll100(b *testing.B) {
	const n, slots = 100, 10
	if n+3 > Nodes {
		b.Skipf("cluster has %d nodes", Nodes)
	}
	ctx := context.Background()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	sim, err := simnodes.SimulateRoll(wctx, env.Cluster, 2*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	setOutcomes(b) // the nodes benchmark's load pods have no controller: a drain refuses them
	nodes := benchNodes(n + 3)
	alone, many := nodes[n:], nodes[:n]
	roll := func(names []string, max int) (time.Duration, int64) {
		cs, ct := countingClient(b)
		cfg := &prep.Request{Namespace: nodepod.DefaultNamespace, Names: names, Image: "agent:bench", Timeout: 5 * time.Minute,
			Apply: true, Roll: &prep.RollOptions{MaxUnavailable: max, RebootTimeout: 5 * time.Minute, DrainTimeout: time.Minute}}
		t0 := time.Now()
		r, err := prep.Run(ctx, cs, cfg)
		d := time.Since(t0)
		if err != nil || len(r.Roll) != len(names) || r.Summary.Ready != len(names) {
			b.Fatalf("roll of %d nodes: %v (%+v)", len(names), err, r)
		}
		for _, rl := range r.Roll {
			if rl.Phase != prep.PhaseDone {
				b.Fatalf("%s: %+v", rl.Node, rl)
			}
		}
		waitJobsGone(b)
		b.Logf("%d nodes, requests per node by kind: %s", len(names), ct.breakdown(len(names)))
		return d, ct.n.Load()
	}
	var ours, single time.Duration
	var requests int64
	for i := 0; i < b.N; i++ {
		sim.Reset()
		a, _ := roll(alone, 1)
		one := a / time.Duration(len(alone))
		d, req := roll(many, slots)
		single += one
		ours += d
		requests += req
		b.Logf("run %d: one node alone %s, %d nodes %d at a time %s: %.2f× %d waves", i, one.Round(time.Millisecond), n, slots, d.Round(time.Millisecond), float64(d)/float64(one*n/slots), n/slots)
	}
	nf := float64(b.N)
	b.ReportMetric(ours.Seconds()/nf, "roll-s/op")
	b.ReportMetric(single.Seconds()/nf, "one-node-s/op")
	b.ReportMetric(float64(ours)/float64(single*time.Duration(n/slots)), "ratio-to-waves")
	b.ReportMetric(float64(requests)/nf/float64(n), "requests/node")
}
