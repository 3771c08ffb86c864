package prep

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Annotations are what prep leaves on a node for `kubectl gpu operator`.
func Annotations(r *rep.Report, now time.Time) map[string]any {
	a := map[string]any{
		flavour.Annotation:                                      r.Flavour,
		flavour.AnnotationPrefix + "driver-version":             nullIfEmpty(r.DriverVersion),
		flavour.AnnotationPrefix + "toolkit-version":            nullIfEmpty(r.ToolkitVersion),
		flavour.AnnotationPrefix + "nvidia-runtime":             strconv.FormatBool(r.NvidiaRuntime),
		flavour.AnnotationPrefix + "containerd-config-version":  nullIfEmpty(strconv.Itoa(r.ContainerdConfigVersion)),
		flavour.AnnotationPrefix + "containerd-default-runtime": nullIfEmpty(r.DefaultRuntime),
		flavour.AnnotationPrefix + "containerd-cdi":             strconv.FormatBool(r.CDI),
		flavour.AnnotationPrefix + "gpus":                       strconv.Itoa(len(r.GPUs)),
		flavour.AnnotationPrefix + "mig":                        nullIfEmpty(migMode(r.GPUs)),
		flavour.AnnotationPrefix + "reported-at":                now.UTC().Format(time.RFC3339),
	}
	// The GPUs' health as NVML read it: the action it calls for, and what is wrong when
	// anything is (unset when NVML did not answer).
	summary, action := rep.Health(r.GPUs)
	a[flavour.AnnotationPrefix+"gpu-health"] = nullIfEmpty(action)
	a[flavour.AnnotationPrefix+"gpu-health-detail"] = nil
	if action != rep.HealthOK && action != "" {
		a[flavour.AnnotationPrefix+"gpu-health-detail"] = nodepod.Fit(summary, 1000)
	}
	if r.ContainerdConfigVersion == 0 {
		a[flavour.AnnotationPrefix+"containerd-config-version"] = nil
	}
	if r.Flavour == "unknown" {
		a[flavour.Annotation] = nil
	}
	return a
}

// migMode is "enabled" when any GPU has MIG on, "disabled" when NVML read the mode of some
// and none has it on, "" when no GPU's mode is known (no driver).
func migMode(gpus []rep.GPU) string {
	mode := ""
	for _, g := range gpus {
		switch g.MIG {
		case "enabled":
			return "enabled"
		case "disabled":
			mode = "disabled"
		}
	}
	return mode
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
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
