package nodepod

// The run's two watches (its pods, the namespace's Warning events), opened before the first
// object exists and opened again when the API server ends them early.
import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
)

// openWatches opens the run's pod and event watches, at once: both are open before the
// first object exists.
func (e *engine[R]) openWatches(ctx context.Context) error {
	type opened struct {
		w   watch.Interface
		err error
	}
	evc := make(chan opened, 1)
	go func() {
		w, err := e.openEvents(e.runCtx)
		evc <- opened{w, err}
	}()
	var err error
	e.podWatch, err = e.openPods(e.runCtx)
	ev := <-evc
	e.evWatch = ev.w
	if err != nil {
		return cliexit.InterruptedOr(ctx, cluster.APIError("watch pods in namespace "+e.ns, err))
	}
	if ev.err != nil {
		return cliexit.InterruptedOr(ctx, cluster.APIError("watch events in namespace "+e.ns, ev.err))
	}
	return nil
}

func (e *engine[R]) openPods(ctx context.Context) (watch.Interface, error) {
	return e.cs.CoreV1().Pods(e.ns).Watch(ctx, metav1.ListOptions{LabelSelector: LabelRun + "=" + e.runID})
}

func (e *engine[R]) openEvents(ctx context.Context) (watch.Interface, error) {
	return WatchEventsFromNow(ctx, e.cs, e.ns, e.w.EventSelector)
}

// rewatch opens a watch again after it ended early (an API server restart): a new one
// starts with the current state of the run's pods, so nothing that happened meanwhile is
// lost. A failure ends the run (nil: the loop stops before reading it again).
func (e *engine[R]) rewatch(open func(context.Context) (watch.Interface, error), what string) watch.Interface {
	w, err := Rewatch(e.runCtx, open)
	if err != nil && e.runCtx.Err() == nil {
		e.fatal = cluster.APIError(what, err)
	}
	return w
}

func stop(w *watch.Interface) {
	if *w != nil {
		(*w).Stop()
	}
}
