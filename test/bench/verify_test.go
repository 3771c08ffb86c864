package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
)

// The verify benchmarks run kubectl-gpu's verify in-process (to count its API requests)
// over the first n simulated nodes, against in the same run:
//   - the floor: the same pods created in bulk with the same parallelism and waited to
//     completion by one watch, then deleted — what any tool must at least do;
//   - the runbook: the seed's steps done node by node with kubectl (apply, wait, logs,
//     delete), at 100 nodes.
// kwok finishes every verify pod on these nodes 200 ms after it runs and serves
// "Test PASSED" as its log.

var outcomeOnce sync.Once

func benchNodes(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%d", i)
	}
	return names
}

func setOutcomes(b *testing.B) {
	outcomeOnce.Do(func() {
		ctx := context.Background()
		c := env.Cluster
		// The nodes benchmark's load pods hold GPUs; verify needs them free.
		if load, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=gpu-workload"}); err == nil {
			sem := make(chan struct{}, 64)
			var wg sync.WaitGroup
			for _, p := range load.Items {
				wg.Add(1)
				sem <- struct{}{}
				go func(name string) {
					defer wg.Done()
					defer func() { <-sem }()
					_ = c.Client.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{})
				}(p.Name)
			}
			wg.Wait()
		}
		for i := 0; ; i++ {
			l, err := c.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=gpu-workload", Limit: 1})
			if err == nil && len(l.Items) == 0 {
				break
			}
			if i > 1200 {
				b.Fatal("load pods not gone")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := nodepod.EnsureNamespace(ctx, c.Client, nodepod.DefaultNamespace, nodepod.PSARestricted); err != nil {
			b.Fatal(err)
		}
		all := benchNodes(Nodes)
		if err := c.SetPodOutcome(ctx, "verify-pass", verify.Component, all, 0); err != nil {
			b.Fatal(err)
		}
		sem := make(chan struct{}, 32)
		var wg sync.WaitGroup
		for _, n := range all {
			wg.Add(1)
			sem <- struct{}{}
			go func(n string) {
				defer wg.Done()
				defer func() { <-sem }()
				if err := c.SetPodLog(ctx, nodepod.DefaultNamespace, verify.PodName(n), verify.ContainerName, "Test PASSED\n"); err != nil {
					b.Error(err)
				}
			}(n)
		}
		wg.Wait()
	})
}

type countingTransport struct {
	rt http.RoundTripper
	n  atomic.Int64
	mu sync.Mutex
	by map[string]int // "verb resource[/subresource]"
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	c.mu.Lock()
	if c.by == nil {
		c.by = map[string]int{}
	}
	c.by[requestKind(r)]++
	c.mu.Unlock()
	return c.rt.RoundTrip(r)
}

// requestKind names a request by its verb and resource: "list pods", "patch nodes",
// "get pods/log", "watch events".
func requestKind(r *http.Request) string {
	verb := strings.ToLower(r.Method)
	if verb == "get" && r.URL.Query().Get("watch") == "true" {
		verb = "watch"
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	// /api/v1/[namespaces/NS/]RESOURCE[/NAME[/SUB]], /apis/GROUP/VERSION/...
	if len(parts) > 0 && parts[0] == "apis" && len(parts) > 1 {
		parts = parts[1:]
	}
	parts = parts[min(2, len(parts)):]
	if len(parts) >= 2 && parts[0] == "namespaces" && len(parts) > 2 {
		parts = parts[2:]
	}
	res := ""
	if len(parts) > 0 {
		res = parts[0]
	}
	if len(parts) == 1 && verb == "get" {
		verb = "list"
	}
	if len(parts) == 1 && verb == "delete" {
		verb = "deletecollection"
	}
	if len(parts) >= 3 {
		res += "/" + parts[2]
	}
	return verb + " " + res
}

// breakdown is the requests per node by kind, most first.
func (c *countingTransport) breakdown(nodes int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	type kv struct {
		k string
		n int
	}
	var all []kv
	for k, n := range c.by {
		all = append(all, kv{k, n})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n || all[i].n == all[j].n && all[i].k < all[j].k })
	var b strings.Builder
	for _, e := range all {
		fmt.Fprintf(&b, "%s %.2f; ", e.k, float64(e.n)/float64(nodes))
	}
	return strings.TrimSuffix(b.String(), "; ")
}

func countingClient(b *testing.B) (kubernetes.Interface, *countingTransport) {
	cfg := rest.CopyConfig(env.Cluster.Config)
	cfg.QPS, cfg.Burst = 200, 400 // the plugin's own settings
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	ct := &countingTransport{}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { ct.rt = rt; return ct })
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return cs, ct
}

func runVerify(b *testing.B, cs kubernetes.Interface, nodes []string) {
	cfg := &verify.Request{Namespace: nodepod.DefaultNamespace, Names: nodes, GPUs: 1, Image: verify.DefaultImage,
		RuntimeClass: verify.RuntimeAuto, Parallel: 50, Timeout: 5 * time.Minute}
	plan, err := verify.Prepare(context.Background(), cs, cfg)
	if err != nil {
		b.Fatal(err)
	}
	rep, err := verify.Run(context.Background(), cs, cfg, plan)
	if err != nil {
		b.Fatal(err)
	}
	if rep.Summary.Passed != len(nodes) {
		for _, it := range rep.Items {
			if it.Result != verify.Passed {
				b.Fatalf("%d of %d passed; %s: %s: %s", rep.Summary.Passed, len(nodes), it.Node, it.Reason, it.Detail)
			}
		}
	}
}

// runFloor creates the same pods in bulk, waits for all to succeed with one watch (with
// logs, reads each one's log too, as verify must to know it passed), and deletes them.
func runFloor(b *testing.B, cs kubernetes.Interface, nodes []string, logs ...bool) {
	readLogs := len(logs) > 0 && logs[0]
	ctx := context.Background()
	ns := nodepod.DefaultNamespace
	cfg := &verify.Request{Namespace: ns, GPUs: 1, Image: verify.DefaultImage, Resource: "nvidia.com/gpu", Timeout: 5 * time.Minute}
	run := fmt.Sprintf("floor-%d", time.Now().UnixNano())
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: nodepod.LabelRun + "=" + run})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { w.Stop() }()
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		sem <- struct{}{}
		go func(n string) {
			defer wg.Done()
			defer func() { <-sem }()
			p := verify.Pod(cfg, "", verify.Target(n, 1), nodepod.Labels(verify.Component, run, n))
			if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				b.Error(err)
			}
		}(n)
	}
	wg.Wait()
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = verify.PodName(n)
	}
	awaitFloor(b, cs, ns, nodepod.LabelRun+"="+run, w, len(nodes), readLogs)
	deletePods(b, cs, ns, names)
	waitGone(b, cs)
}

// awaitFloor waits on w (a watch of the floor's pods, selected by sel) until want pods have
// succeeded and, with readLogs, had their log read as verify reads it (retried through
// refusals for up to 30 s); a watch that ends is replaced after a list.
func awaitFloor(b *testing.B, cs kubernetes.Interface, ns, sel string, w watch.Interface, want int, readLogs bool) {
	ctx := context.Background()
	done, seen := map[string]bool{}, map[string]bool{}
	logged := make(chan string, want)
	finished := func(name string) {
		if seen[name] {
			return
		}
		seen[name] = true
		if !readLogs {
			done[name] = true
			return
		}
		go func() {
			_, _ = nodepod.ReadLog(ctx, cs, ns, name, &corev1.PodLogOptions{Container: verify.ContainerName})
			logged <- name
		}()
	}
	timeout := time.After(5 * time.Minute)
	for len(done) < want {
		select {
		case name := <-logged:
			done[name] = true
		case ev, ok := <-w.ResultChan():
			if !ok {
				// The watch ended (API server under load): list what finished, watch again.
				l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
				if err != nil {
					b.Fatal(err)
				}
				for _, p := range l.Items {
					if p.Status.Phase == corev1.PodSucceeded {
						finished(p.Name)
					}
				}
				if w, err = cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: l.ResourceVersion}); err != nil {
					b.Fatal(err)
				}
				defer w.Stop()
				continue
			}
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted && p.Status.Phase == corev1.PodSucceeded {
				finished(p.Name)
			}
		case <-timeout:
			b.Fatalf("floor: %d of %d pods succeeded after 5 minutes", len(done), want)
		}
	}
}

// deletePods deletes the floor's pods, 50 at a time.
func deletePods(b *testing.B, cs kubernetes.Interface, ns string, names []string) {
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = cs.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
		}()
	}
	wg.Wait()
}

// waitGone waits until kwok has removed the deleted pods (outside the timed part's
// comparison: both sides wait for it).
func waitGone(b *testing.B, cs kubernetes.Interface) {
	for i := 0; i < 600; i++ {
		l, err := cs.CoreV1().Pods(nodepod.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: nodepod.Selector(verify.Component)})
		if err == nil && len(l.Items) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatal("verify pods not gone")
}

func benchVerify(b *testing.B, n int) {
	if n > Nodes {
		b.Skipf("cluster has %d nodes", Nodes)
	}
	setOutcomes(b)
	nodes := benchNodes(n)
	// One untimed run first: the first run after the cluster was loaded (or after the prep
	// benchmarks) also pays for kwok and the API server warming their caches.
	warm, _ := countingClient(b)
	runVerify(b, warm, nodes)
	waitGone(b, warm)
	var runs floorRuns
	var floorLogs time.Duration
	for i := 0; i < b.N; i++ {
		cs, ct := countingClient(b)
		t0 := time.Now()
		runVerify(b, cs, nodes)
		d := time.Since(t0)
		requests := ct.n.Load()
		waitGone(b, cs)
		t1 := time.Now()
		runFloor(b, cs, nodes)
		runs.add(d, time.Since(t1), requests)
		waitGone(b, cs)
		t2 := time.Now()
		runFloor(b, cs, nodes, true)
		floorLogs += time.Since(t2)
	}
	runs.report(b, "verify", n)
	b.ReportMetric(floorLogs.Seconds()/float64(b.N), "floor-logs-s/op")
	b.ReportMetric(float64(runs.ours)/float64(floorLogs), "ratio-to-floor-logs")
	// Once more through the built binary (untimed), for the client's peak memory.
	r := env.Gpu(context.Background(), append([]string{"verify", "--parallel", "50", "-o", "json"}, nodes...)...)
	if r.Code != 0 {
		b.Fatalf("verify: exit %d %s", r.Code, r.Stderr)
	}
	b.ReportMetric(r.PeakRSSMiB, "client-peak-MiB")
	waitGone(b, env.Cluster.Client)
}

func BenchmarkVerify100(b *testing.B)  { benchVerify(b, 100) }
func BenchmarkVerify1000(b *testing.B) { benchVerify(b, 1000) }

// BenchmarkVerifyAll: verify over every node of the cluster, for the table of how the cost
// grows with it (make bench-scale: 100, 1000 and 3000 nodes).
func BenchmarkVerifyAll(b *testing.B) { benchVerify(b, Nodes) }

// BenchmarkVerifyRunbook100: the runbook by hand (kubectl apply, wait, logs, delete per
// node) against kubectl gpu verify over the same 100 nodes.
func BenchmarkVerifyRunbook100(b *testing.B) {
	setOutcomes(b)
	ctx := context.Background()
	nodes := benchNodes(100)
	dir := b.TempDir()
	var manual, ours time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		for _, n := range nodes {
			p := verify.Pod(&verify.Request{Namespace: nodepod.DefaultNamespace, GPUs: 1, Image: verify.DefaultImage, Resource: "nvidia.com/gpu", Timeout: time.Minute}, "", verify.Target(n, 1), nodepod.Labels(verify.Component, "runbook", n))
			p.APIVersion, p.Kind = "v1", "Pod"
			f := filepath.Join(dir, n+".json")
			if err := writeJSON(f, p); err != nil {
				b.Fatal(err)
			}
			for _, args := range [][]string{
				{"apply", "-f", f},
				{"wait", "-n", nodepod.DefaultNamespace, "--for=jsonpath={.status.phase}=Succeeded", "pod/" + p.Name, "--timeout=60s"},
				{"logs", "-n", nodepod.DefaultNamespace, p.Name},
				{"delete", "-n", nodepod.DefaultNamespace, "pod", p.Name, "--wait=false"},
			} {
				if r := env.Kubectl(ctx, nil, args...); r.Code != 0 {
					b.Fatalf("kubectl %v: %s", args, r.Stderr)
				}
			}
		}
		manual += time.Since(t0)
		cs, _ := countingClient(b)
		waitGone(b, cs)
		t1 := time.Now()
		r := env.Gpu(ctx, append([]string{"verify"}, nodes...)...)
		ours += time.Since(t1)
		if r.Code != 0 {
			b.Fatalf("kubectl gpu verify: %s", r.Stderr)
		}
		waitGone(b, cs)
	}
	nf := float64(b.N)
	b.ReportMetric(manual.Seconds()/nf, "runbook-s/op")
	b.ReportMetric(ours.Seconds()/nf, "verify-s/op")
	b.ReportMetric(float64(manual)/float64(ours), "speedup")
}

func writeJSON(path string, v any) error {
	b, err := jsonMarshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
