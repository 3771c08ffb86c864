package nodepod

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/watch"
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
