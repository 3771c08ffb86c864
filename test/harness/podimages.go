package harness

import (
	"context"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
)

// WatchPodImages watches the pods the tool makes in namespace ns (its managed-by label) from
// now on and records the image of each one's first container. The returned function stops
// the watch and returns the images seen.
func WatchPodImages(t testing.TB, ctx context.Context, cs kubernetes.Interface, ns string) (stop func() map[string]bool) {
	t.Helper()
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: nodepod.LabelManagedBy + "=" + nodepod.ManagedBy})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.ResultChan() {
			if p, ok := e.Object.(*corev1.Pod); ok && len(p.Spec.Containers) > 0 {
				mu.Lock()
				seen[p.Spec.Containers[0].Image] = true
				mu.Unlock()
			}
		}
	}()
	return func() map[string]bool {
		w.Stop()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}
