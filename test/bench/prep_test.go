package bench

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/fakehost"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

// BenchmarkPrep100 and BenchmarkPrep1000: `kubectl gpu prep` (check) over 100 and 1000
// simulated nodes against the floor: as many bare Jobs of the same spec created and waited
// to completion by one watch, then deleted. kwok completes Job pods after 1–5 s (its own
// pod-complete stage) on both sides; every pod's log is the real agent's report for a K3s
// fake host root. Goal: ≤ 1.3×.
func BenchmarkPrep100(b *testing.B)  { benchPrep(b, 100) }
func BenchmarkPrep1000(b *testing.B) { benchPrep(b, 1000) }

func benchPrep(b *testing.B, n int) {
	if n > Nodes {
		b.Skipf("cluster has %d nodes", Nodes)
	}
	ctx := context.Background()
	c := env.Cluster
	dir := b.TempDir()
	agent := filepath.Join(dir, "agent")
	if err := harness.BuildAgent(agent); err != nil {
		b.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	if err := fakehost.Build("k3s", root, 1); err != nil {
		b.Fatal(err)
	}
	out, err := exec.Command(agent, "check", "--host-root", root).Output()
	if err != nil {
		b.Fatal(err)
	}
	if err := nodepod.EnsureNamespace(ctx, c.Client, nodepod.DefaultNamespace, nodepod.PSAPrivileged); err != nil {
		b.Fatal(err)
	}
	// Serve the report as the log of every agent pod.
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	if err := c.ServePodLogs(wctx, nodepod.DefaultNamespace, nodepod.Selector(prep.Component), "agent", func(*corev1.Pod) string { return string(out) }); err != nil {
		b.Fatal(err)
	}
	nodes := benchNodes(n)
	var ours, floor time.Duration
	var peak float64
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		r := env.Gpu(ctx, append([]string{"prep", "--parallel", "100", "-o", "json"}, nodes...)...)
		ours += time.Since(t0)
		if r.Code != 0 {
			b.Fatalf("prep: exit %d %s", r.Code, r.Stderr)
		}
		peak = max(peak, r.PeakRSSMiB)
		waitJobsGone(b)
		t1 := time.Now()
		prepFloor(b, nodes)
		floor += time.Since(t1)
		waitJobsGone(b)
	}
	b.ReportMetric(ours.Seconds()/float64(b.N), "prep-s/op")
	b.ReportMetric(floor.Seconds()/float64(b.N), "floor-s/op")
	b.ReportMetric(float64(ours)/float64(floor), "ratio-to-floor")
	b.ReportMetric(peak, "client-peak-MiB")
}

func prepFloor(b *testing.B, nodes []string) {
	ctx := context.Background()
	cs := env.Cluster.Client
	ns := nodepod.DefaultNamespace
	run := fmt.Sprintf("f%d", time.Now().UnixNano()%100000)
	cfg := &prep.Config{Namespace: ns, Image: "agent:bench", Timeout: 5 * time.Minute}
	sel := nodepod.LabelRun + "=" + run
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { w.Stop() }()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 100)
	for _, n := range nodes {
		wg.Add(1)
		sem <- struct{}{}
		go func(n string) {
			defer wg.Done()
			defer func() { <-sem }()
			j := prep.Job(cfg, n, nodereport.ModeCheck, nodepod.Labels(prep.Component, run, n))
			j.Name = prep.JobName(n, run)
			if _, err := cs.BatchV1().Jobs(ns).Create(ctx, j, metav1.CreateOptions{}); err != nil {
				b.Error(err)
			}
		}(n)
	}
	done := map[string]bool{}
	timeout := time.After(5 * time.Minute)
	for len(done) < len(nodes) {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				// The API server ends watches now and then: list what finished meanwhile
				// and watch again from there, as the plugin does.
				l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
				if err != nil {
					b.Fatal(err)
				}
				for _, p := range l.Items {
					if p.Status.Phase == corev1.PodSucceeded {
						done[p.Spec.NodeName] = true
					}
				}
				if w, err = cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: l.ResourceVersion}); err != nil {
					b.Fatal(err)
				}
				continue
			}
			if p, ok := ev.Object.(*corev1.Pod); ok && p.Status.Phase == corev1.PodSucceeded {
				done[p.Spec.NodeName] = true
			}
		case <-timeout:
			b.Fatalf("floor: %d of %d Jobs done", len(done), len(nodes))
		}
	}
	wg.Wait()
	bg := metav1.DeletePropagationBackground
	for _, n := range nodes {
		wg.Add(1)
		sem <- struct{}{}
		go func(n string) {
			defer wg.Done()
			defer func() { <-sem }()
			_ = cs.BatchV1().Jobs(ns).Delete(ctx, prep.JobName(n, run), metav1.DeleteOptions{PropagationPolicy: &bg})
		}(n)
	}
	wg.Wait()
}

func waitJobsGone(b *testing.B) {
	cs := env.Cluster.Client
	for i := 0; i < 1200; i++ {
		jobs, err1 := cs.BatchV1().Jobs(nodepod.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: nodepod.Selector(prep.Component)})
		pods, err2 := cs.CoreV1().Pods(nodepod.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: nodepod.Selector(prep.Component)})
		if err1 == nil && err2 == nil && len(jobs.Items) == 0 && len(pods.Items) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatal("prep Jobs not gone")
}
