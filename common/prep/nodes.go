package prep

import (
	"context"
	"errors"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
)

// nodeWatch is a roll's view of the nodes: one informer (a list and a watch, opened again
// by client-go when the API server ends it) instead of a get per node and a watch per
// reboot. Waiters are woken on every change.
type nodeWatch struct {
	inf     cache.SharedIndexInformer
	stop    context.CancelFunc
	mu      sync.Mutex
	changed chan struct{} // closed (and replaced) on each change
}

func watchNodes(ctx context.Context, cs kubernetes.Interface) (*nodeWatch, error) {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().Nodes().List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return cs.CoreV1().Nodes().Watch(ctx, o)
		},
	}
	w := &nodeWatch{changed: make(chan struct{})}
	w.inf = cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, cs), &corev1.Node{}, 0, cache.Indexers{})
	wake := func(any) { w.wake() }
	if _, err := w.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: wake, DeleteFunc: wake, UpdateFunc: func(_, n any) { w.wake() },
	}); err != nil {
		return nil, err
	}
	// A refusal (RBAC) stops the roll before it starts; the API server away is waited for
	// (client-go lists and watches again, backing off), not logged: the roll's progress says
	// what it waits for.
	syncCtx, refused := context.WithCancelCause(ctx)
	defer refused(nil)
	if err := w.inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		if !nodepod.Transient(err) {
			refused(err)
		}
	}); err != nil {
		return nil, err
	}
	ctx, w.stop = context.WithCancel(ctx)
	go w.inf.RunWithContext(ctx)
	if !cache.WaitForCacheSync(syncCtx.Done(), w.inf.HasSynced) {
		w.stop()
		if err := context.Cause(syncCtx); err != nil && !errors.Is(err, context.Canceled) {
			return nil, cluster.APIError("watch nodes", err)
		}
		return nil, cliexit.ErrInterrupted
	}
	return w, nil
}

func (w *nodeWatch) wake() {
	w.mu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// next is closed at the next change.
func (w *nodeWatch) next() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// get is the node as last seen (nil when it is not in the cluster).
func (w *nodeWatch) get(name string) *corev1.Node {
	o, ok, _ := w.inf.GetStore().GetByKey(name)
	if !ok {
		return nil
	}
	return o.(*corev1.Node)
}
