package bench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

// BenchmarkVerifyDRA100: `kubectl gpu verify --claim dra` (in process) over 100 nodes that
// publish four GPUs each in a ResourceSlice, against a floor in the same run that makes the
// same claims: the run's ResourceClaimTemplate and the same pods created in bulk (the real
// scheduler allocates each pod's claim from the slices), one watch, each pod's log read, the
// pods and the template deleted, the claims gone. Goal: ≤ 1.3× the floor.
func BenchmarkVerifyDRA100(b *testing.B) {
	const n = 100
	if n > Nodes {
		b.Skipf("cluster has %d nodes", Nodes)
	}
	setOutcomes(b)
	ctx := context.Background()
	cs := env.Cluster.Client
	nodes := benchNodes(n)
	for _, dc := range nodefixtures.DeviceClasses() {
		if _, err := cs.ResourceV1().DeviceClasses().Create(ctx, dc, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		defer cs.ResourceV1().DeviceClasses().Delete(context.Background(), dc.Name, metav1.DeleteOptions{})
	}
	for _, node := range nodes {
		if _, err := cs.ResourceV1().ResourceSlices().Create(ctx, nodefixtures.DRASlice(node, 4), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	defer cs.ResourceV1().ResourceSlices().DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{})
	cfg := func() *verify.Request {
		return &verify.Request{Namespace: nodepod.DefaultNamespace, Names: nodes, GPUs: 1, Image: verify.DefaultImage,
			RuntimeClass: verify.RuntimeAuto, Claim: verify.ClaimDRA, Parallel: 50, Timeout: 5 * time.Minute}
	}
	runOurs := func(cs kubernetes.Interface) {
		c := cfg()
		plan, err := verify.Prepare(ctx, cs, c)
		if err != nil {
			b.Fatal(err)
		}
		rep, err := verify.Run(ctx, cs, c, plan)
		if err != nil || rep.Summary.Passed != n {
			b.Fatalf("verify --claim dra: %v, %d of %d passed (%+v)", err, rep.Summary.Passed, n, rep.Items[0])
		}
		waitDRAGone(b, cs)
	}
	warm, _ := countingClient(b)
	runOurs(warm)
	var runs floorRuns
	for i := 0; i < b.N; i++ {
		cs, ct := countingClient(b)
		t0 := time.Now()
		runOurs(cs)
		d := time.Since(t0)
		requests := ct.n.Load()
		t1 := time.Now()
		draFloor(b, cs, cfg())
		f := time.Since(t1)
		ratio := runs.add(d, f, requests)
		b.Logf("run %d: verify --claim dra %s, floor %s: %.2f×", i, d.Round(time.Millisecond), f.Round(time.Millisecond), ratio)
	}
	runs.report(b, "verify", n)
}

// draFloor: the run's template and the same pods in bulk, one watch until each succeeded and
// its log was read, then the pods and the template deleted and the claims gone.
func draFloor(b *testing.B, cs kubernetes.Interface, cfg *verify.Request) {
	ctx := context.Background()
	ns := cfg.Namespace
	plan, err := verify.Prepare(ctx, cs, cfg)
	if err != nil {
		b.Fatal(err)
	}
	run := fmt.Sprintf("f%d", time.Now().UnixNano()%1000000)
	sel := nodepod.LabelRun + "=" + run
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { w.Stop() }()
	for _, t := range verify.Templates(cfg, plan, run) {
		if _, err := cs.ResourceV1().ResourceClaimTemplates(ns).Create(ctx, t, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	var names []string
	for _, t := range plan.Targets {
		p := verify.Pod(cfg, plan.RuntimeClass, t, nodepod.Labels(verify.Component, run, ""))
		names = append(names, p.Name)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	awaitFloor(b, cs, ns, sel, w, len(names), true)
	deletePods(b, cs, ns, names)
	_ = cs.ResourceV1().ResourceClaimTemplates(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: sel})
	waitDRAGone(b, cs)
}

// waitDRAGone waits until the verify pods and their claims are gone (both sides wait: the
// next run's claims need the devices free).
func waitDRAGone(b *testing.B, cs kubernetes.Interface) {
	waitGone(b, cs)
	for i := 0; i < 600; i++ {
		l, err := cs.ResourceV1().ResourceClaims(nodepod.DefaultNamespace).List(context.Background(), metav1.ListOptions{})
		if err == nil && len(l.Items) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatal("resource claims not gone")
}
