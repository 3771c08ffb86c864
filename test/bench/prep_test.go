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
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

// BenchmarkPrep100 and BenchmarkPrep1000: `kubectl gpu prep` (check, its default
// parallelism) run in-process over 100 and 1000 simulated nodes (to count its API requests)
// against two floors in the same run:
//   - floor: the same Jobs created at prep's parallelism (a slot held until the node's pod
//     finished and its log was read), one watch, each pod's log read, the Jobs deleted —
//     the API work a user cannot avoid;
//   - floor-nolog: the same without the log reads, so what kwok's log serving costs shows.
//
// kwok completes Job pods after 1–5 s (its own pod-complete stage) on every side; every
// pod's log is the real agent's report for a K3s fake host root. Goal: ≤ 1.3× the floor.
func BenchmarkPrep100(b *testing.B)  { benchPrep(b, 100) }
func BenchmarkPrep1000(b *testing.B) { benchPrep(b, 1000) }

// BenchmarkPrepAll: prep's check over every node of the cluster, for the table of how the
// cost grows with it (make bench-scale: 100, 1000 and 3000 nodes).
func BenchmarkPrepAll(b *testing.B) { benchPrep(b, Nodes) }

func benchPrep(b *testing.B, n int) {
	if n > Nodes {
		b.Skipf("cluster has %d nodes", Nodes)
	}
	ctx := context.Background()
	stop := serveAgentReport(b)
	defer stop()
	nodes := benchNodes(n)
	parallel := prep.DefaultParallel(nodereport.ModeCheck)
	var runs floorRuns
	var nolog time.Duration
	for i := 0; i < b.N; i++ {
		cs, ct := countingClient(b)
		t0 := time.Now()
		cfg := &prep.Request{Namespace: nodepod.DefaultNamespace, Names: nodes, Image: "agent:bench", Timeout: 5 * time.Minute}
		r, err := prep.Run(ctx, cs, cfg)
		d := time.Since(t0)
		if err != nil || r.Summary.Nodes != n || r.Summary.Ready != n {
			b.Fatalf("prep: %v (%+v)", err, r)
		}
		requests := ct.n.Load()
		waitJobsGone(b)
		t1 := time.Now()
		prepFloor(b, nodes, parallel, true)
		runs.add(d, time.Since(t1), requests)
		waitJobsGone(b)
		t2 := time.Now()
		prepFloor(b, nodes, parallel, false)
		nolog += time.Since(t2)
		waitJobsGone(b)
	}
	runs.report(b, "prep", n)
	b.ReportMetric(nolog.Seconds()/float64(b.N), "floor-nolog-s/op")
	// Once more through the built binary (untimed), for the client's peak memory.
	r := env.Gpu(ctx, append([]string{"prep", "-o", "json"}, nodes...)...)
	if r.Code != 0 {
		b.Fatalf("prep: exit %d %s", r.Code, r.Stderr)
	}
	b.ReportMetric(r.PeakRSSMiB, "client-peak-MiB")
	waitJobsGone(b)
}

// serveAgentReport makes kwok serve, as the log of every agent pod, the real agent's report
// for a K3s fake host root (ready, one GPU); stop ends the serving.
func serveAgentReport(b *testing.B) (stop func()) {
	ctx := context.Background()
	c := env.Cluster
	dir := b.TempDir()
	agent := filepath.Join(dir, "agent")
	if err := harness.BuildSimAgent(agent); err != nil {
		b.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	if err := hostconfigtest.Build("k3s", root, 1); err != nil {
		b.Fatal(err)
	}
	out, err := exec.Command(agent, "check", "--host-root", root).Output()
	if err != nil {
		b.Fatal(err)
	}
	if err := nodepod.EnsureNamespace(ctx, c.Client, nodepod.DefaultNamespace, nodepod.PSAPrivileged); err != nil {
		b.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	if err := c.ServePodLogs(wctx, nodepod.DefaultNamespace, nodepod.Selector(prep.Component), "agent", func(*corev1.Pod) string { return string(out) }); err != nil {
		stop()
		b.Fatal(err)
	}
	return stop
}

// prepFloor runs the nodes' Jobs with at most parallel in flight (a slot is freed when the
// node's pod succeeded and, with logs, its log was read), one watch, then deletes them.
func prepFloor(b *testing.B, nodes []string, parallel int, logs bool) {
	ctx := context.Background()
	cs := env.Cluster.Client
	ns := nodepod.DefaultNamespace
	run := fmt.Sprintf("f%d", time.Now().UnixNano()%100000)
	cfg := &prep.Request{Namespace: ns, Image: "agent:bench", Timeout: 5 * time.Minute}
	sel := nodepod.LabelRun + "=" + run
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { w.Stop() }()
	slots := make(chan struct{}, parallel)
	go func() {
		for _, n := range nodes {
			slots <- struct{}{}
			go func(n string) {
				j := prep.Job(cfg, n, nodereport.ModeCheck, nodepod.Labels(prep.Component, run, n))
				j.Name = prep.JobName(n, run)
				if _, err := cs.BatchV1().Jobs(ns).Create(ctx, j, metav1.CreateOptions{}); err != nil {
					b.Error(err)
				}
			}(n)
		}
	}()
	done, seen := map[string]bool{}, map[string]bool{}
	finished := make(chan string, len(nodes))
	timeout := time.After(5 * time.Minute)
	for len(done) < len(nodes) {
		select {
		case node := <-finished:
			done[node] = true
			<-slots
		case ev, ok := <-w.ResultChan():
			if !ok {
				// The API server ends watches now and then: watch again from the current
				// state, as the plugin does.
				if w, err = cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: sel}); err != nil {
					b.Fatal(err)
				}
				continue
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || p.Status.Phase != corev1.PodSucceeded || ev.Type == watch.Deleted || seen[p.Spec.NodeName] {
				continue
			}
			seen[p.Spec.NodeName] = true
			go func(p *corev1.Pod) {
				if logs {
					// The plugin's own read: a log the node does not serve yet (kwok sets it up
					// as the pod appears, and may be behind) is asked again, as the plugin does.
					if _, err := nodepod.ReadLog(ctx, cs, ns, p.Name, &corev1.PodLogOptions{Container: "agent"}); err != nil {
						b.Error(err)
					}
				}
				finished <- p.Spec.NodeName
			}(p)
		case <-timeout:
			b.Fatalf("floor: %d of %d Jobs done", len(done), len(nodes))
		}
	}
	bg := metav1.DeletePropagationBackground
	var wg sync.WaitGroup
	sem := make(chan struct{}, 20)
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
