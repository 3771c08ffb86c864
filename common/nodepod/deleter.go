package nodepod

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// maxBatch bounds the nodes of one delete request: the API server deletes a collection's
// objects one after the other, so a run's last batch — which it waits for — stays short,
// and larger bursts go as several requests at once.
const maxBatch = 10

// Deleter deletes the objects of nodes that finished, several nodes in one request: a
// node given to Add is deleted with those given after it within Window, in one
// DeleteCollection selecting the runs' objects of those nodes (a Job's pods go with it).
// Where the API server refuses DeleteCollection (a role without the verb), each object is
// deleted by name. Its requests outlive a Ctrl-C (clean-up runs after it) but not a minute.
type Deleter struct {
	cs     kubernetes.Interface
	ns     string
	jobs   bool
	runIDs []string
	window time.Duration
	ctx    context.Context

	mu      sync.Mutex
	pending map[string][]string // node label value → object names
	timer   *time.Timer
	batches sync.WaitGroup // one per node given and not yet deleted
	refused atomic.Bool    // DeleteCollection was refused: by name from then on
}

// NewDeleter returns a Deleter of the objects (Jobs or pods) of runIDs in ns.
func NewDeleter(ctx context.Context, cs kubernetes.Interface, ns string, jobs bool, window time.Duration, runIDs ...string) *Deleter {
	return &Deleter{cs: cs, ns: ns, jobs: jobs, runIDs: runIDs, window: window, ctx: context.WithoutCancel(ctx), pending: map[string][]string{}}
}

// Add deletes node's objects, named (for a deletion by name), with the next batch.
func (d *Deleter) Add(node string, names ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := LabelValue(node)
	if _, ok := d.pending[v]; !ok {
		d.batches.Add(1)
	}
	d.pending[v] = append(d.pending[v], names...)
	if d.timer == nil {
		d.timer = time.AfterFunc(d.window, d.send)
	}
}

// Flush sends what is pending now and waits for every batch to be deleted. Add must not be
// called while it runs.
func (d *Deleter) Flush() {
	d.send()
	d.batches.Wait()
}

func (d *Deleter) send() {
	d.mu.Lock()
	batch := d.pending
	d.pending = map[string][]string{}
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	nodes := make([]string, 0, len(batch))
	for n := range batch {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for len(nodes) > 0 {
		part := nodes[:min(maxBatch, len(nodes))]
		nodes = nodes[len(part):]
		go func() {
			defer d.batches.Add(-len(part))
			d.delete(part, batch)
		}()
	}
}

func (d *Deleter) delete(nodes []string, names map[string][]string) {
	ctx, cancel := context.WithTimeout(d.ctx, time.Minute)
	defer cancel()
	if !d.refused.Load() {
		err := d.collection(ctx, nodes)
		if err == nil {
			return
		}
		if apierrors.IsForbidden(err) || apierrors.IsMethodNotSupported(err) {
			d.refused.Store(true)
		}
	}
	var all []string
	for _, n := range nodes {
		all = append(all, names[n]...)
	}
	DeleteAll(ctx, all, func(ctx context.Context, name string) error { return deleteObject(ctx, d.cs, d.ns, d.jobs, name) })
}

func (d *Deleter) collection(ctx context.Context, nodes []string) error {
	run, err := labels.NewRequirement(LabelRun, selection.In, d.runIDs)
	if err != nil {
		return err
	}
	node, err := labels.NewRequirement(LabelNode, selection.In, nodes)
	if err != nil {
		return err
	}
	sel := metav1.ListOptions{LabelSelector: labels.NewSelector().Add(*run, *node).String()}
	opts := metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}
	if d.jobs {
		return d.cs.BatchV1().Jobs(d.ns).DeleteCollection(ctx, opts, sel)
	}
	return d.cs.CoreV1().Pods(d.ns).DeleteCollection(ctx, opts, sel)
}
