package nodepod

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"
)

// Fit shortens a name to max characters (a label value or an object name), keeping it
// unique with a hash of the whole: names of long node names stay distinct.
func Fit(s string, max int) string {
	if len(s) <= max {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return s[:max-11] + "-" + hex.EncodeToString(sum[:])[:10]
}

// LabelValue fits a node name into a label value.
func LabelValue(s string) string { return Fit(s, 63) }

// DeleteAll calls del for every name, 20 at a time, retrying through an API server
// restart, within a minute of its own: clean-up runs after Ctrl-C or a timeout too, so ctx
// should not be the cancelled one. Other errors are ignored (an object already gone is what
// clean-up wants).
func DeleteAll(ctx context.Context, names []string, del func(ctx context.Context, name string) error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	sem := make(chan struct{}, 20)
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func(n string) {
			defer wg.Done()
			defer func() { <-sem }()
			_ = Retry(ctx, func(ctx context.Context) error { return del(ctx, n) })
		}(n)
	}
	wg.Wait()
}

// DeleteRun deletes every object of a run, found by list (by the run's label) rather than by
// what the client believes it created: a creation cancelled by Ctrl-C may still have
// happened on the server. With inFlight (a creation was cut short) it lists once more after
// a moment for creations that were still on their way; otherwise one look is enough.
func DeleteRun(ctx context.Context, inFlight bool, list func(ctx context.Context) ([]string, error), del func(ctx context.Context, name string) error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	rounds := 1
	if inFlight {
		rounds = 2
	}
	for round := 0; round < rounds; round++ {
		var names []string
		_ = Retry(ctx, func(ctx context.Context) error {
			var err error
			names, err = list(ctx)
			return err
		})
		DeleteAll(ctx, names, del)
		if round+1 < rounds {
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
}
