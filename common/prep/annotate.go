package prep

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// Annotations are what prep leaves on a node for the other commands: the report's facts
// (nodereport.Facts, their one home).
func Annotations(r *rep.Report, now time.Time) map[string]any {
	return rep.FactsOf(r, now).Annotations()
}

// Annotator writes the annotations on each node with a report (one merge patch each), in
// the background as reports arrive; Wait returns the first error.
type Annotator struct {
	ctx      context.Context
	cs       kubernetes.Interface
	mu       sync.Mutex
	firstErr error
	wg       sync.WaitGroup
	sem      chan struct{}
}

// NewAnnotator returns an Annotator. Its patches outlive a Ctrl-C (a report that arrived is
// written on its node) but not a minute.
func NewAnnotator(ctx context.Context, cs kubernetes.Interface) *Annotator {
	return &Annotator{ctx: context.WithoutCancel(ctx), cs: cs, sem: make(chan struct{}, 20)}
}

// Add annotates the node of n (in the background).
func (a *Annotator) Add(n NodeResult) {
	if n.Report == nil {
		return
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": Annotations(n.Report, time.Now())}})
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.sem <- struct{}{}
		defer func() { <-a.sem }()
		ctx, cancel := context.WithTimeout(a.ctx, time.Minute)
		defer cancel()
		err := nodepod.Retry(ctx, func(ctx context.Context) error {
			_, err := a.cs.CoreV1().Nodes().Patch(ctx, n.Node, types.MergePatchType, patch, metav1.PatchOptions{})
			return err
		})
		if err != nil {
			a.mu.Lock()
			if a.firstErr == nil {
				a.firstErr = cluster.APIError("annotate node "+n.Node, err)
			}
			a.mu.Unlock()
		}
	}()
}

// Wait waits for every patch and returns the first error.
func (a *Annotator) Wait() error {
	a.wg.Wait()
	return a.firstErr
}
