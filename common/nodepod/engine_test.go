package nodepod

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// kubelet plays the node side for the fake clientset: every pod of the namespace that
// appears is moved to phase after delay, unless its node is in hang. It counts the pods
// that exist and are not finished, and the most there ever were.
type kubelet struct {
	cs    *fake.Clientset
	ns    string
	phase corev1.PodPhase
	delay time.Duration
	hang  map[string]bool

	mu       sync.Mutex
	live     map[string]bool
	peak     int
	finished int
}

func (k *kubelet) run(t *testing.T, ctx context.Context) {
	k.live = map[string]bool{}
	w, err := k.cs.CoreV1().Pods(k.ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				p := ev.Object.(*corev1.Pod)
				k.mu.Lock()
				switch {
				case ev.Type == watch.Deleted:
					delete(k.live, p.Name)
				case ev.Type == watch.Added:
					k.live[p.Name] = true
					if len(k.live) > k.peak {
						k.peak = len(k.live)
					}
					node := p.Labels[LabelNode]
					if !k.hang[node] {
						go k.finish(ctx, p.DeepCopy())
					}
				}
				k.mu.Unlock()
			}
		}
	}()
}

func (k *kubelet) finish(ctx context.Context, p *corev1.Pod) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(k.delay):
	}
	p.Status.Phase = k.phase
	k.mu.Lock()
	delete(k.live, p.Name) // finished: no longer holds a slot
	k.finished++
	k.mu.Unlock()
	_, _ = k.cs.CoreV1().Pods(k.ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{})
}

// echo is a Work on pods whose result is the pod's phase and log.
func echo() Work[string] {
	return Work[string]{
		Component: "test",
		Pod: func(node string, labels map[string]string) *corev1.Pod {
			return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{NodeName: node}}
		},
		Name:       func(node, runID string) string { return "echo-" + node },
		LogOptions: &corev1.PodLogOptions{},
		Classify: func(o Observation) (string, Step) {
			switch {
			case o.Pod == nil:
				return "", Wait
			case o.Pod.Status.Phase != corev1.PodSucceeded && o.Pod.Status.Phase != corev1.PodFailed:
				return "", Wait
			case !o.LogRead:
				return "", NeedLog
			}
			return string(o.Pod.Status.Phase) + ": " + string(o.Log), Done
		},
		CreateFailed: func(node string, err error) (string, error) { return "create: " + err.Error(), nil },
		TimedOut:     func(o Observation) string { return "timed out" },
	}
}

func nodes(n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, fmt.Sprintf("n%02d", i))
	}
	return out
}

func left(t *testing.T, cs *fake.Clientset, ns string) int {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := cs.BatchV1().Jobs(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return len(pods.Items) + len(jobs.Items)
}

func TestExecuteOneResultPerNodeAndNothingLeft(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := fake.NewClientset()
	k := &kubelet{cs: cs, ns: "ns", phase: corev1.PodSucceeded, delay: 5 * time.Millisecond}
	k.run(t, ctx)
	var finished []int
	w := echo()
	w.Finished = func(r Result[string], done, total int) { finished = append(finished, done) }
	res, err := Execute(ctx, cs, Run{Namespace: "ns", Nodes: nodes(12), Timeout: 20 * time.Second}, w)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 12 || len(finished) != 12 || finished[11] != 12 {
		t.Fatalf("%d results, Finished called %v", len(res), finished)
	}
	for i, r := range res {
		if r.Node != nodes(12)[i] || r.Value != "Succeeded: fake logs" || r.Started.IsZero() || r.Ended.Before(r.Started) {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	if n := left(t, cs, "ns"); n != 0 {
		t.Fatalf("%d objects left", n)
	}
}

// TestExecuteMaxInFlight: a freed slot starts the next node; never more unfinished pods
// than asked.
func TestExecuteMaxInFlight(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := fake.NewClientset()
	k := &kubelet{cs: cs, ns: "ns", phase: corev1.PodSucceeded, delay: 10 * time.Millisecond}
	k.run(t, ctx)
	res, err := Execute(ctx, cs, Run{Namespace: "ns", Nodes: nodes(20), MaxInFlight: 3, Timeout: 20 * time.Second}, echo())
	if err != nil || len(res) != 20 {
		t.Fatalf("%d results, %v", len(res), err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.peak > 3 || k.peak == 0 {
		t.Fatalf("peak %d unfinished pods, want 1..3", k.peak)
	}
}

// TestExecuteInterruptedBeforeComplete: Ctrl-C while nodes are still running is
// ErrInterrupted and nothing of the run is left.
func TestExecuteInterruptedBeforeComplete(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := fake.NewClientset()
	k := &kubelet{cs: cs, ns: "ns", phase: corev1.PodSucceeded, delay: time.Millisecond, hang: map[string]bool{"n03": true}}
	k.run(t, context.Background())
	runCtx, interrupt := context.WithCancel(ctx)
	w := echo()
	w.Finished = func(r Result[string], done, total int) {
		if done == total-1 {
			interrupt() // every node but the hung one has finished
		}
	}
	res, err := Execute(runCtx, cs, Run{Namespace: "ns", Nodes: nodes(5), Timeout: 20 * time.Second}, w)
	if !errors.Is(err, cliexit.ErrInterrupted) || res != nil {
		t.Fatalf("got %v, %v; want ErrInterrupted and no results", res, err)
	}
	if n := left(t, cs, "ns"); n != 0 {
		t.Fatalf("%d objects left", n)
	}
}

// TestExecuteInterruptedAfterComplete: a Ctrl-C that lands once every node has a result
// (the clean-up is still to come) does not lose the results.
func TestExecuteInterruptedAfterComplete(t *testing.T) {
	cs := fake.NewClientset()
	k := &kubelet{cs: cs, ns: "ns", phase: corev1.PodFailed, delay: time.Millisecond}
	k.run(t, context.Background())
	runCtx, interrupt := context.WithCancel(context.Background())
	w := echo()
	w.Finished = func(r Result[string], done, total int) {
		if done == total {
			interrupt()
		}
	}
	res, err := Execute(runCtx, cs, Run{Namespace: "ns", Nodes: nodes(4), Timeout: 20 * time.Second}, w)
	if err != nil || len(res) != 4 || res[3].Value != "Failed: fake logs" {
		t.Fatalf("got %v, %v; want 4 results", res, err)
	}
	if n := left(t, cs, "ns"); n != 0 {
		t.Fatalf("%d objects left", n)
	}
}

func TestExecuteTimeout(t *testing.T) {
	cs := fake.NewClientset()
	k := &kubelet{cs: cs, ns: "ns", phase: corev1.PodSucceeded, delay: time.Millisecond, hang: map[string]bool{"n01": true}}
	k.run(t, context.Background())
	res, err := Execute(context.Background(), cs, Run{Namespace: "ns", Nodes: nodes(3), Timeout: 500 * time.Millisecond}, echo())
	if err != nil {
		t.Fatal(err)
	}
	got := []string{res[0].Value, res[1].Value, res[2].Value}
	if strings.Join(got, "|") != "Succeeded: fake logs|timed out|Succeeded: fake logs" {
		t.Fatalf("results %q", got)
	}
	if n := left(t, cs, "ns"); n != 0 {
		t.Fatalf("%d objects left", n)
	}
}

// TestExecuteCreateRefusals: a per-node refusal is that node's result and the run goes on;
// a refusal every node would meet ends the run with the Work's error, nothing left.
func TestExecuteCreateRefusals(t *testing.T) {
	cs := fake.NewClientset()
	k := &kubelet{cs: cs, ns: "ns", phase: corev1.PodSucceeded, delay: time.Millisecond}
	k.run(t, context.Background())
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		if p.Spec.NodeName == "n01" {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, p.Name, errors.New("exceeded quota: q"))
		}
		return false, nil, nil
	})
	res, err := Execute(context.Background(), cs, Run{Namespace: "ns", Nodes: nodes(3), Timeout: 10 * time.Second}, echo())
	if err != nil || !strings.HasPrefix(res[1].Value, "create: ") || res[0].Value != "Succeeded: fake logs" {
		t.Fatalf("got %v, %v", res, err)
	}

	w := echo()
	fatal := errors.New("RBAC: create pods")
	w.CreateFailed = func(node string, err error) (string, error) { return "", fatal }
	if _, err := Execute(context.Background(), cs, Run{Namespace: "ns", Nodes: nodes(3), Timeout: 10 * time.Second}, w); !errors.Is(err, fatal) {
		t.Fatalf("fatal refusal: %v", err)
	}
	if n := left(t, cs, "ns"); n != 0 {
		t.Fatalf("%d objects left", n)
	}
}

// TestExecuteJobs: Jobs are created with the run's labels on their pod template; the pods
// (made here as the Job controller would) are found by the node label.
func TestExecuteJobs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := fake.NewClientset()
	k := &kubelet{cs: cs, ns: "ns", phase: corev1.PodSucceeded, delay: time.Millisecond}
	k.run(t, ctx)
	jw, err := cs.BatchV1().Jobs("ns").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go func() { // the Job controller
		for ev := range jw.ResultChan() {
			j, ok := ev.Object.(*batchv1.Job)
			if !ok || ev.Type != watch.Added {
				continue
			}
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: j.Name + "-x", Labels: j.Spec.Template.Labels}}
			_, _ = cs.CoreV1().Pods("ns").Create(ctx, p, metav1.CreateOptions{})
		}
	}()
	w := echo()
	w.Pod = nil
	w.Job = func(node string, labels map[string]string) *batchv1.Job {
		return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}}}}
	}
	res, err := Execute(ctx, cs, Run{Namespace: "ns", Nodes: nodes(4), MaxInFlight: 2, Timeout: 20 * time.Second}, w)
	if err != nil || len(res) != 4 {
		t.Fatalf("%v %v", res, err)
	}
	for _, r := range res {
		if r.Value != "Succeeded: fake logs" {
			t.Errorf("%s: %q", r.Node, r.Value)
		}
	}
	jobs, _ := cs.BatchV1().Jobs("ns").List(ctx, metav1.ListOptions{})
	if len(jobs.Items) != 0 {
		t.Fatalf("%d Jobs left", len(jobs.Items))
	}
}
