package nodepod

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

func watches(cs *fake.Clientset) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "watch" {
			n++
		}
	}
	return n
}

// TestSessionNodesJoinWhileItRuns: nodes given one after another, some while others run,
// each get their own result; the watches are opened once for all; nothing is left after
// Close, and a node runs once.
func TestSessionNodesJoinWhileItRuns(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := fake.NewClientset()
	k := &kubelet{cs: cs, ns: "ns", phase: corev1.PodSucceeded, delay: 5 * time.Millisecond}
	k.run(t, ctx)
	before := watches(cs)
	s, err := Open(ctx, cs, Run{Namespace: "ns", Timeout: 20 * time.Second}, echo())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([]Result[string], 8)
	errs := make([]error, 8)
	for i, n := range nodes(8) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 10 * time.Millisecond) // they join at different moments
			results[i], errs[i] = s.Do(n)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if errs[i] != nil || r.Node != nodes(8)[i] || r.Value != "Succeeded: fake logs" || r.Started.IsZero() {
			t.Errorf("node %d: %+v, %v", i, r, errs[i])
		}
	}
	if _, err := s.Do("n00"); err == nil {
		t.Error("a node ran twice in one session")
	}
	if w := watches(cs) - before; w != 2 {
		t.Errorf("%d watches opened for 8 nodes; want 2 (pods, events)", w)
	}
	s.Close()
	s.Close()
	if n := left(t, cs, "ns"); n != 0 {
		t.Fatalf("%d objects left", n)
	}
	if _, err := s.Do("n09"); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("Do after Close: %v", err)
	}
}

// TestSessionTimeoutAndInterrupt: a node whose time is up has TimedOut's result while the
// session goes on; a Ctrl-C makes a waiting Do return ErrInterrupted, and Close leaves
// nothing.
func TestSessionTimeoutAndInterrupt(t *testing.T) {
	cs := fake.NewClientset()
	k := &kubelet{cs: cs, ns: "ns", phase: corev1.PodSucceeded, delay: time.Millisecond, hang: map[string]bool{"n01": true, "n02": true}}
	k.run(t, context.Background())
	ctx, interrupt := context.WithCancel(context.Background())
	s, err := Open(ctx, cs, Run{Namespace: "ns", Timeout: 300 * time.Millisecond}, echo())
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s.Do("n01"); err != nil || r.Value != "timed out" {
		t.Fatalf("hung node: %+v, %v; want timed out", r, err)
	}
	if r, err := s.Do("n00"); err != nil || r.Value != "Succeeded: fake logs" {
		t.Fatalf("after a timeout: %+v, %v", r, err)
	}
	s.Close()
	s, err = Open(ctx, cs, Run{Namespace: "ns"}, echo()) // no bound: n02 waits until Ctrl-C
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, interrupt)
	if _, err := s.Do("n02"); !errors.Is(err, cliexit.ErrInterrupted) {
		t.Fatalf("Do during Ctrl-C: %v; want ErrInterrupted", err)
	}
	s.Close()
	if n := left(t, cs, "ns"); n != 0 {
		t.Fatalf("%d objects left", n)
	}
}

// TestSessionKeepFinished: with KeepFinished a finished node's object stays until a
// Deleter takes it (with the node's objects of other runs, in one request) or Close.
func TestSessionKeepFinished(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	var collections []string
	cs.PrependReactor("delete-collection", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		collections = append(collections, a.(k8stesting.DeleteCollectionAction).GetListRestrictions().Labels.String())
		return true, nil, nil
	})
	k := &kubelet{cs: cs, ns: "ns", phase: corev1.PodSucceeded, delay: time.Millisecond}
	k.run(t, ctx)
	s, err := Open(ctx, cs, Run{Namespace: "ns", Timeout: 20 * time.Second, KeepFinished: true}, echo())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Do("n00"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := left(t, cs, "ns"); n != 1 {
		t.Fatalf("%d objects after the node finished; want its pod kept", n)
	}
	d := NewDeleter(ctx, cs, "ns", false, time.Hour, s.RunID(), "other")
	d.Add("n00", "echo-n00")
	d.Flush()
	want, _ := labels.Parse(LabelRun + " in (" + s.RunID() + ",other)," + LabelNode + " in (n00)")
	if len(collections) != 1 || collections[0] != want.String() {
		t.Fatalf("delete-collection %q; want %q", collections, want)
	}
	s.Close() // the reactor deleted nothing: Close does
	if n := left(t, cs, "ns"); n != 0 {
		t.Fatalf("%d objects left", n)
	}
}
