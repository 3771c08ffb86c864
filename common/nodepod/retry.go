package nodepod

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// Transient tells whether an API error may go away by itself (the API server restarting,
// overloaded or briefly unreachable), as opposed to a refusal that will stay.
func Transient(err error) bool {
	switch {
	case err == nil:
		return false
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err), apierrors.IsNotFound(err),
		apierrors.IsBadRequest(err), apierrors.IsInvalid(err), apierrors.IsAlreadyExists(err),
		apierrors.IsMethodNotSupported(err), apierrors.IsNotAcceptable(err):
		return false
	}
	return true
}

// Retry calls fn every second while it fails transiently, until it succeeds, fails for
// good, or ctx ends.
func Retry(ctx context.Context, fn func(context.Context) error) error {
	for {
		err := fn(ctx)
		if err == nil || !Transient(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

// Rewatch opens a watch with open, retrying while the API server is away. A run whose watch
// ended (an API server restart) goes on with a new one: its first events are the current
// state of the objects, so nothing that happened meanwhile is lost.
func Rewatch(ctx context.Context, open func(context.Context) (watch.Interface, error)) (watch.Interface, error) {
	var w watch.Interface
	err := Retry(ctx, func(ctx context.Context) error {
		var err error
		w, err = open(ctx)
		return err
	})
	return w, err
}

// WatchEventsFromNow watches the namespace's events that match fieldSelector from this
// moment on. A watch opened without a resource version first replays every matching event
// still stored (they live an hour): in the tool's namespace after a run over a thousand
// nodes that is thousands, read before the first new one. A list of one item gives the
// current resource version to start from.
func WatchEventsFromNow(ctx context.Context, cs kubernetes.Interface, ns, fieldSelector string) (watch.Interface, error) {
	l, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: fieldSelector, Limit: 1})
	if err != nil {
		return nil, err
	}
	return cs.CoreV1().Events(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fieldSelector, ResourceVersion: l.ResourceVersion})
}
