package nodepod

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func podsOf(t *testing.T, cs *fake.Clientset, run string, nodes ...string) {
	t.Helper()
	for _, n := range nodes {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p-" + n + "-" + run, Namespace: "ns", Labels: Labels("test", run, n)}}
		if _, err := cs.CoreV1().Pods("ns").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeleterBatches: nodes given within the window are deleted in one request that
// selects exactly their objects of the runs; a later node goes in the next.
func TestDeleterBatches(t *testing.T) {
	cs := fake.NewClientset()
	podsOf(t, cs, "r1", "a", "b", "c", "keep")
	podsOf(t, cs, "r2", "a", "b", "c")
	podsOf(t, cs, "other", "a")
	var mu sync.Mutex
	var requests []string
	cs.PrependReactor("delete-collection", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sel := a.(k8stesting.DeleteCollectionAction).GetListRestrictions().Labels
		mu.Lock()
		requests = append(requests, sel.String())
		mu.Unlock()
		list, _ := cs.Tracker().List(schema.GroupVersionResource{Version: "v1", Resource: "pods"}, schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, "ns")
		for _, p := range list.(*corev1.PodList).Items {
			if sel.Matches(labels.Set(p.Labels)) {
				_ = cs.Tracker().Delete(schema.GroupVersionResource{Version: "v1", Resource: "pods"}, "ns", p.Name)
			}
		}
		return true, nil, nil
	})
	d := NewDeleter(context.Background(), cs, "ns", false, 100*time.Millisecond, "r1", "r2")
	d.Add("a")
	d.Add("b")
	time.Sleep(300 * time.Millisecond) // the window passed: a and b went together
	d.Add("c")
	d.Flush()
	mu.Lock()
	defer mu.Unlock()
	if len(requests) != 2 {
		t.Fatalf("%d requests %q; want 2 (a and b, then c)", len(requests), requests)
	}
	pods, _ := cs.CoreV1().Pods("ns").List(context.Background(), metav1.ListOptions{})
	var names []string
	for _, p := range pods.Items {
		names = append(names, p.Name)
	}
	if len(names) != 2 || names[0] != "p-a-other" || names[1] != "p-keep-r1" {
		t.Fatalf("left %v; want another run's pod and an unnamed node's", names)
	}
}

// TestDeleterRefused: a role without deletecollection: each object is deleted by name,
// and the collection is not asked again.
func TestDeleterRefused(t *testing.T) {
	cs := fake.NewClientset()
	podsOf(t, cs, "r1", "a", "b")
	asked := 0
	cs.PrependReactor("delete-collection", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		asked++
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", nil)
	})
	d := NewDeleter(context.Background(), cs, "ns", false, time.Millisecond, "r1")
	d.Add("a", "p-a-r1")
	d.Flush()
	d.Add("b", "p-b-r1")
	d.Flush()
	if n := left(t, cs, "ns"); n != 0 || asked != 1 {
		t.Fatalf("%d pods left, deletecollection asked %d times; want 0 left, asked once", n, asked)
	}
}
