package nodepod

// The run's objects: created a few at a time, labelled with the run, deleted in batches and
// at the end (also after a Ctrl-C), and the clean-up of earlier runs' objects.
import (
	"context"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
)

// create makes the nodes' objects, at most Creators requests at once and at most
// MaxInFlight unfinished nodes. It reports on creatorDone whether a creation was cut short
// by the run's end (then the clean-up looks twice for what it may have made).
func (e *engine[R]) create(ctx context.Context, out chan<- createResult, slots chan struct{}, creatorDone chan<- bool) {
	sem := make(chan struct{}, e.r.Creators)
	var wg sync.WaitGroup
	cutShort := false
	var mu sync.Mutex
	defer func() {
		wg.Wait()
		creatorDone <- cutShort
	}()
	inFlight := 0
	for i, s := range e.nodes {
		if e.r.MaxInFlight > 0 {
			for inFlight >= e.r.MaxInFlight {
				select {
				case <-slots:
					inFlight--
				case <-ctx.Done():
					return
				}
			}
			inFlight++
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func(i int, s *nodeState[R]) {
			defer wg.Done()
			defer func() { <-sem }()
			uid, err := e.createObject(ctx, s)
			if ctx.Err() != nil {
				mu.Lock()
				cutShort = true
				mu.Unlock()
			}
			out <- createResult{i: i, uid: uid, err: err}
		}(i, s)
	}
}

func (e *engine[R]) labels(node string) map[string]string {
	return Labels(e.w.Component, e.runID, node)
}

// Labels are the labels of a run's object (and a Job's pod) for node.
func Labels(component, runID, node string) map[string]string {
	return map[string]string{
		LabelManagedBy: ManagedBy,
		LabelComponent: component,
		LabelRun:       runID,
		LabelNode:      LabelValue(node),
	}
}

// createObject creates a node's pod or Job, retrying through an API server restart; an
// earlier try that succeeded but whose answer was lost counts as created.
func (e *engine[R]) createObject(ctx context.Context, s *nodeState[R]) (string, error) {
	var uid string
	err := Retry(ctx, func(ctx context.Context) error {
		var meta metav1.Object
		var err error
		if e.w.Job != nil {
			j := e.w.Job(s.node, e.labels(s.node))
			j.Name, j.Namespace = s.name, e.ns
			meta, err = e.cs.BatchV1().Jobs(e.ns).Create(ctx, j, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				meta, err = e.cs.BatchV1().Jobs(e.ns).Get(ctx, s.name, metav1.GetOptions{})
			}
		} else {
			p := e.w.Pod(s.node, e.labels(s.node))
			p.Name, p.Namespace = s.name, e.ns
			meta, err = e.cs.CoreV1().Pods(e.ns).Create(ctx, p, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				meta, err = e.cs.CoreV1().Pods(e.ns).Get(ctx, s.name, metav1.GetOptions{})
			}
		}
		if err == nil {
			uid = string(meta.GetUID())
		}
		return err
	})
	return uid, err
}

func (e *engine[R]) deleteObject(ctx context.Context, name string) error {
	return deleteObject(ctx, e.cs, e.ns, e.w.Job != nil, name)
}

// deleteObject deletes a pod or a Job (and, in the background, its pods).
func deleteObject(ctx context.Context, cs kubernetes.Interface, ns string, job bool, name string) error {
	opts := metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}
	if job {
		return cs.BatchV1().Jobs(ns).Delete(ctx, name, opts)
	}
	return cs.CoreV1().Pods(ns).Delete(ctx, name, opts)
}

// deleteRun deletes what is left of the run, found by its label.
func (e *engine[R]) deleteRun(ctx context.Context, cutShort bool) {
	DeleteRun(ctx, cutShort, func(ctx context.Context) ([]string, error) {
		return e.names(ctx, LabelRun+"="+e.runID)
	}, e.deleteObject)
}

func (e *engine[R]) names(ctx context.Context, selector string) ([]string, error) {
	return ObjectNames(ctx, e.cs, e.ns, e.w.Job != nil, selector)
}

// ObjectNames lists the names of the pods (or Jobs) in ns that match selector.
func ObjectNames(ctx context.Context, cs kubernetes.Interface, ns string, jobs bool, selector string) ([]string, error) {
	var names []string
	if jobs {
		list, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return nil, err
		}
		for _, j := range list.Items {
			names = append(names, j.Name)
		}
		return names, nil
	}
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	for _, p := range list.Items {
		names = append(names, p.Name)
	}
	return names, nil
}

// Cleanup removes every object of a component the tool left in ns (`--cleanup`) and returns
// how many.
func Cleanup(ctx context.Context, cs kubernetes.Interface, ns, component string, jobs bool) (int, error) {
	what := "pods"
	if jobs {
		what = "jobs"
	}
	names, err := ObjectNames(ctx, cs, ns, jobs, Selector(component))
	if err != nil {
		return 0, cluster.APIError(fmt.Sprintf("list %s in namespace %s", what, ns), err)
	}
	DeleteAll(ctx, names, func(ctx context.Context, n string) error { return deleteObject(ctx, cs, ns, jobs, n) })
	return len(names), nil
}
