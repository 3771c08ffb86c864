package helmrelease

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"
)

// TestFollowDeadlineDuringRead: a read refused because the wait's deadline is about to
// pass (client-go's rate limiter, before the deadline) is the timeout — the last state read
// once more and ErrNotReadyInTime — not a failure of the read; any other error is returned
// as it is.
func TestFollowDeadlineDuringRead(t *testing.T) {
	c := &Client{Log: io.Discard}
	reads := 0
	st, err := Follow(context.Background(), c, 200*time.Millisecond, func(ctx context.Context) (string, string, bool, error) {
		reads++
		if ctx.Err() == nil && reads == 1 {
			return "", "", false, fmt.Errorf("cannot get ClusterPolicy cluster-policy: %w", errors.New("client rate limiter Wait returned an error: rate: Wait(n=1) would exceed context deadline"))
		}
		return "notReady", "clusterpolicy notReady", false, nil
	})
	if !errors.Is(err, ErrNotReadyInTime) || st != "notReady" {
		t.Errorf("a read refused at the deadline: %q, %v; want the last state and ErrNotReadyInTime", st, err)
	}
	other := errors.New("forbidden")
	if _, err := Follow(context.Background(), c, time.Minute, func(context.Context) (string, string, bool, error) { return "", "", false, other }); !errors.Is(err, other) {
		t.Errorf("another error: %v", err)
	}
}
