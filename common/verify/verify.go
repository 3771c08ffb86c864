// Package verify runs the CUDA vectoradd proof on GPU nodes: one unprivileged pod per node
// asking for the node's GPUs, all watched by one watch, each failure explained.
package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// Defaults.
const (
	// DefaultImage is NVIDIA's CUDA vectoradd sample (the tag NVIDIA's GPU Operator
	// documentation uses for its verification pod).
	DefaultImage   = "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0"
	Component      = "verify"
	ContainerName  = "vectoradd"
	RuntimeAuto    = "auto"
	RuntimeNone    = "none"
	NvidiaRuntime  = "nvidia"
	Kind           = "VerifyReport"
	DefaultTimeout = 5 * time.Minute
)

// Config is what a verify run does.
type Config struct {
	Namespace string
	// Nodes chosen by name (all must exist and have GPUs), else by Selector among GPU nodes.
	Names    []string
	Selector string
	// GPUs per pod; 0 means all the node's allocatable GPUs of Resource.
	GPUs         int64
	Resource     corev1.ResourceName
	Image        string
	RuntimeClass string
	TolerateAll  bool
	Parallel     int
	Timeout      time.Duration
	Keep         bool
	// Progress receives live progress lines (a terminal); nil for none.
	Progress io.Writer
}

// Report is the `kubectl gpu verify` document.
type Report struct {
	report.TypeMeta `json:",inline"`
	Image           string       `json:"image"`
	RuntimeClass    string       `json:"runtimeClass,omitempty"`
	Namespace       string       `json:"namespace"`
	Items           []NodeResult `json:"items"`
	Summary         Summary      `json:"summary"`
}

// Summary counts the results.
type Summary struct {
	Nodes  int `json:"nodes"`
	Passed int `json:"passed"`
	Failed int `json:"failed"`
}

// NodeResult is one node's outcome.
type NodeResult struct {
	Node            string  `json:"node"`
	GPUs            int64   `json:"gpus"`
	Result          Result  `json:"result"`
	Reason          Reason  `json:"reason,omitempty"`
	Detail          string  `json:"detail,omitempty"`
	Hint            string  `json:"hint,omitempty"`
	DurationSeconds float64 `json:"durationSeconds"`
	Pod             string  `json:"pod"`
}

// target is a node to verify.
type target struct {
	node string
	gpus int64
	pod  string
}

// Plan is the pre-flight result: the nodes and the RuntimeClass, decided before anything
// is created.
type Plan struct {
	Targets      []target
	RuntimeClass string
}

// Prepare validates the config against the cluster with one node list and one
// RuntimeClass get. Every problem here is exit 2 and nothing has been created.
func Prepare(ctx context.Context, cs kubernetes.Interface, cfg *Config) (*Plan, error) {
	if cfg.Resource == "" {
		cfg.Resource = inventory.ResourceGPU
	}
	if !inventory.IsGPUResource(cfg.Resource) {
		return nil, cliexit.Usagef("--resource %q is not an NVIDIA GPU resource (nvidia.com/gpu, nvidia.com/gpu.shared or nvidia.com/mig-*)", cfg.Resource)
	}
	if cfg.GPUs < 0 {
		return nil, cliexit.Usagef("--gpus must be a positive number or \"all\"")
	}
	if _, err := inventory.ParseSelector(cfg.Selector); err != nil {
		return nil, err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: cfg.Selector})
	if err != nil {
		return nil, cluster.APIError("list nodes", err)
	}
	if cfg.Selector != "" && len(nodes.Items) == 0 {
		return nil, cliexit.Usagef("no node matches %q: check the selector with 'kubectl get nodes -l %s'", cfg.Selector, cfg.Selector)
	}
	chosen, err := inventory.Choose(nodes.Items, inventory.Options{Names: cfg.Names, All: true})
	if err != nil {
		return nil, err
	}
	p := &Plan{}
	var tooFew []string
	for _, n := range chosen {
		alloc := n.Status.Allocatable[cfg.Resource]
		have := alloc.Value()
		if have == 0 {
			if len(cfg.Names) > 0 {
				return nil, cliexit.Usagef("node %q has no allocatable %s: run 'kubectl gpu nodes --all' to see what it has, or 'kubectl gpu prep %s'", n.Name, cfg.Resource, n.Name)
			}
			continue
		}
		want := cfg.GPUs
		if want == 0 {
			want = have
		}
		if want > have {
			tooFew = append(tooFew, fmt.Sprintf("%s has %d", n.Name, have))
			continue
		}
		p.Targets = append(p.Targets, target{node: n.Name, gpus: want, pod: PodName(n.Name)})
	}
	if len(tooFew) > 0 {
		return nil, cliexit.Usagef("--gpus %d is more than the node has (%s %s): lower --gpus or use --gpus all", cfg.GPUs, strings.Join(tooFew, ", "), cfg.Resource)
	}
	if len(p.Targets) == 0 {
		what := "no GPU node found"
		if cfg.Selector != "" {
			what += fmt.Sprintf(" matching %q", cfg.Selector)
		}
		return nil, cliexit.Failuresf("%s (no node has allocatable %s): run 'kubectl gpu prep' to check the nodes and 'kubectl gpu operator install' to expose their GPUs", what, cfg.Resource)
	}
	switch rc := cfg.RuntimeClass; rc {
	case RuntimeNone, "":
	case RuntimeAuto:
		_, err := cs.NodeV1().RuntimeClasses().Get(ctx, NvidiaRuntime, metav1.GetOptions{})
		switch {
		case err == nil:
			p.RuntimeClass = NvidiaRuntime
		case apierrors.IsNotFound(err):
			// CDI / NRI mode: the operator creates no RuntimeClass and none is needed.
		default:
			return nil, cluster.APIError("get RuntimeClass nvidia", err)
		}
	default:
		if _, err := cs.NodeV1().RuntimeClasses().Get(ctx, rc, metav1.GetOptions{}); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, cliexit.Usagef("RuntimeClass %q does not exist: list them with 'kubectl get runtimeclass', or use --runtime-class auto", rc)
			}
			return nil, cluster.APIError("get RuntimeClass "+rc, err)
		}
		p.RuntimeClass = rc
	}
	return p, nil
}

// PodName is the verify pod's name for a node: one per node, so that two runs cannot
// book the same GPUs twice.
func PodName(node string) string { return nodepod.Fit("gpu-verify-"+node, 63) }

// Pod builds the verify pod for a target: pinned to its node by node affinity (so the
// scheduler decides and explains), asking for the GPUs as limits, tolerating the GPU
// taint, unprivileged, with a deadline.
func Pod(cfg *Config, rc string, t target, runID string) *corev1.Pod {
	deadline := int64(cfg.Timeout.Seconds())
	if deadline < 30 {
		deadline = 30
	}
	q := *resource.NewQuantity(t.gpus, resource.DecimalSI)
	tolerations := []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	if cfg.TolerateAll {
		tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      t.pod,
			Namespace: cfg.Namespace,
			Labels: map[string]string{
				nodepod.LabelManagedBy: nodepod.ManagedBy,
				nodepod.LabelComponent: Component,
				nodepod.LabelRun:       runID,
				nodepod.LabelNode:      nodepod.LabelValue(t.node),
			},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			ActiveDeadlineSeconds:         &deadline,
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Tolerations:                   tolerations,
			Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
					MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{t.node}}},
				}}},
			}},
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](1000),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            ContainerName,
				Image:           cfg.Image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Resources: corev1.ResourceRequirements{
					Limits:   corev1.ResourceList{cfg.Resource: q},
					Requests: corev1.ResourceList{cfg.Resource: q},
				},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					Privileged:               ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	if rc != "" {
		p.Spec.RuntimeClassName = ptr.To(rc)
	}
	return p
}

// state of one node during the run.
type state struct {
	t       target
	uid     string
	created time.Time
	pod     *corev1.Pod
	events  []corev1.Event
	verdict Verdict
	done    bool
	// logging is set while the log of a finished pod is being read.
	logging bool
	ended   time.Time
}

// Run verifies the plan's nodes and returns the report. The pods are deleted before it
// returns (unless cfg.Keep), also when ctx is cancelled or the timeout passes.
func Run(ctx context.Context, cs kubernetes.Interface, cfg *Config, plan *Plan) (*Report, error) {
	if cfg.Parallel <= 0 {
		cfg.Parallel = 10
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if err := nodepod.EnsureNamespace(ctx, cs, cfg.Namespace, nodepod.PSARestricted); err != nil {
		return nil, err
	}
	if err := clearStale(ctx, cs, cfg.Namespace, plan); err != nil {
		return nil, err
	}
	runID := rand.String(8)
	states := map[string]*state{}
	byPod := map[string]*state{}
	for _, t := range plan.Targets {
		s := &state{t: t}
		states[t.node] = s
		byPod[t.pod] = s
	}

	runCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	// The run's pods are deleted whatever happens, once no creation is under way, with a
	// context of their own (not the cancelled one).
	creatorDone := make(chan struct{})
	creating := false // the creator goroutine runs (an early return happens before it starts)
	defer func() {
		cancel()
		if creating {
			<-creatorDone
		}
		if !cfg.Keep {
			deleteRun(context.WithoutCancel(ctx), cs, cfg.Namespace, runID)
		}
	}()

	// One watch for the run's pods and one for their events, opened before any pod exists.
	sel := nodepod.LabelRun + "=" + runID
	openPods := func(ctx context.Context) (watch.Interface, error) {
		return cs.CoreV1().Pods(cfg.Namespace).Watch(ctx, metav1.ListOptions{LabelSelector: sel})
	}
	openEvents := func(ctx context.Context) (watch.Interface, error) {
		return nodepod.WatchEventsFromNow(ctx, cs, cfg.Namespace, fields.OneTermEqualSelector("involvedObject.kind", "Pod").String())
	}
	podWatch, err := openPods(runCtx)
	if err != nil {
		return nil, cluster.APIError("watch pods in namespace "+cfg.Namespace, err)
	}
	defer func() { podWatch.Stop() }()
	evWatch, err := openEvents(runCtx)
	if err != nil {
		return nil, cluster.APIError("watch events in namespace "+cfg.Namespace, err)
	}
	defer func() { evWatch.Stop() }()

	type logResult struct {
		pod string
		log string
		err error
	}
	logs := make(chan logResult, len(plan.Targets))
	type createResult struct {
		pod, uid string
		err      error
	}
	createErrs := make(chan createResult, len(plan.Targets))

	// Create the pods with bounded parallelism.
	creating = true
	go func() {
		defer close(creatorDone)
		sem := make(chan struct{}, cfg.Parallel)
		var wg sync.WaitGroup
		for _, t := range plan.Targets {
			select {
			case sem <- struct{}{}:
			case <-runCtx.Done():
				wg.Wait()
				return
			}
			wg.Add(1)
			go func(t target) {
				defer wg.Done()
				defer func() { <-sem }()
				var p *corev1.Pod
				err := nodepod.Retry(runCtx, func(ctx context.Context) error {
					var err error
					p, err = cs.CoreV1().Pods(cfg.Namespace).Create(ctx, Pod(cfg, plan.RuntimeClass, t, runID), metav1.CreateOptions{})
					return err
				})
				if apierrors.IsAlreadyExists(err) {
					// An earlier try succeeded but its answer was lost.
					p, err = cs.CoreV1().Pods(cfg.Namespace).Get(runCtx, t.pod, metav1.GetOptions{})
				}
				r := createResult{pod: t.pod, err: err}
				if err == nil {
					r.uid = string(p.UID)
				}
				createErrs <- r
			}(t)
		}
		wg.Wait()
	}()

	remaining := len(plan.Targets)
	var fatal error
	progress := report.NewProgress(cfg.Progress)
	defer progress.End()
	finish := func(s *state, v Verdict) {
		if s.done {
			return
		}
		s.done, s.verdict, s.ended = true, v, time.Now()
		remaining--
		progress.Node(nodeLine(s))
	}
	evaluate := func(s *state) {
		if s.done || s.logging || s.pod == nil {
			return
		}
		v := Classify(Observation{Pod: s.pod, Events: s.ownEvents(), Image: cfg.Image})
		if !v.Done {
			return
		}
		if s.pod != nil && (s.pod.Status.Phase == corev1.PodSucceeded || s.pod.Status.Phase == corev1.PodFailed) {
			s.logging = true
			go func(name string) {
				b, err := nodepod.ReadLog(ctx, cs, cfg.Namespace, name, &corev1.PodLogOptions{Container: ContainerName, TailLines: ptr.To[int64](100), LimitBytes: ptr.To[int64](64 << 10)})
				logs <- logResult{pod: name, log: string(b), err: err}
			}(s.pod.Name)
			return
		}
		finish(s, v)
	}
	for remaining > 0 && fatal == nil {
		select {
		case ce := <-createErrs:
			s := byPod[ce.pod]
			if ce.err != nil {
				if runCtx.Err() != nil {
					continue
				}
				finish(s, createFailure(cfg.Namespace, ce.err).Verdict)
				if isFatalCreate(ce.err) {
					fatal = createFailure(cfg.Namespace, ce.err).asError()
				}
				continue
			}
			s.created, s.uid = time.Now(), ce.uid
			evaluate(s)
		case ev, ok := <-podWatch.ResultChan():
			if !ok {
				// The watch ended early (API server restart): open another.
				podWatch, err = nodepod.Rewatch(runCtx, openPods)
				if runCtx.Err() != nil {
					goto out
				}
				if err != nil {
					fatal = cluster.APIError("watch pods", err)
				}
				continue
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod {
				continue
			}
			s := byPod[p.Name]
			if s == nil {
				continue
			}
			if ev.Type == watch.Deleted {
				s.pod = nil
				finish(s, Classify(Observation{}))
				continue
			}
			s.pod = p
			if s.created.IsZero() {
				s.created = p.CreationTimestamp.Time
			}
			evaluate(s)
		case ev, ok := <-evWatch.ResultChan():
			if !ok {
				evWatch, err = nodepod.Rewatch(runCtx, openEvents)
				if runCtx.Err() != nil {
					goto out
				}
				if err != nil {
					fatal = cluster.APIError("watch events", err)
				}
				continue
			}
			e, isEvent := ev.Object.(*corev1.Event)
			if !isEvent {
				continue
			}
			if s := byPod[e.InvolvedObject.Name]; s != nil && e.Type == corev1.EventTypeWarning {
				s.events = append(s.events, *e)
				evaluate(s)
			}
		case lr := <-logs:
			s := byPod[lr.pod]
			s.logging = false
			if errors.Is(lr.err, nodepod.ErrLogRefused) {
				// The same for every pod: stop with the permission named.
				fatal = lr.err
				continue
			}
			if lr.err != nil {
				finish(s, Verdict{Done: true, Result: Failed, Reason: ReasonContainerError, Detail: "cannot read the pod's log: " + oneLine(lr.err.Error()), Hint: "check 'kubectl logs' permissions and the kubelet"})
				continue
			}
			finish(s, Classify(Observation{Pod: s.pod, Events: s.ownEvents(), Log: lr.log, Image: cfg.Image}))
		case <-runCtx.Done():
			goto out
		}
		progress.Count(countLine(states))
	}
out:
	if ctx.Err() != nil {
		return nil, cliexit.ErrInterrupted
	}
	if fatal != nil {
		return nil, fatal
	}
	for _, s := range states {
		if !s.done {
			finish(s, timeoutVerdict(s, cfg.Timeout))
		}
	}
	rep := &Report{TypeMeta: report.Meta(Kind), Image: cfg.Image, RuntimeClass: plan.RuntimeClass, Namespace: cfg.Namespace}
	for _, t := range plan.Targets {
		s := states[t.node]
		r := NodeResult{Node: t.node, GPUs: t.gpus, Result: s.verdict.Result, Reason: s.verdict.Reason, Detail: s.verdict.Detail, Hint: s.verdict.Hint, Pod: t.pod}
		if !s.created.IsZero() {
			r.DurationSeconds = s.ended.Sub(s.created).Round(100 * time.Millisecond).Seconds()
		}
		rep.Items = append(rep.Items, r)
		rep.Summary.Nodes++
		if r.Result == Passed {
			rep.Summary.Passed++
		} else {
			rep.Summary.Failed++
		}
	}
	sort.Slice(rep.Items, func(i, j int) bool { return rep.Items[i].Node < rep.Items[j].Node })
	return rep, nil
}

// ownEvents are the events about this run's pod: a pod of the same name from an earlier
// run has another UID, and its events (kept for an hour) must not count.
func (s *state) ownEvents() []corev1.Event {
	uid := s.uid
	if uid == "" && s.pod != nil {
		uid = string(s.pod.UID)
	}
	var out []corev1.Event
	for _, e := range s.events {
		if uid != "" && string(e.InvolvedObject.UID) == uid {
			out = append(out, e)
		}
	}
	return out
}

func timeoutVerdict(s *state, timeout time.Duration) Verdict {
	where := "before the pod was created"
	switch {
	case s.pod == nil:
	case s.pod.Spec.NodeName == "":
		where = "while the pod waited to be scheduled"
	case s.pod.Status.Phase == corev1.PodPending:
		where = "while the pod was starting (image pull or container creation)"
	default:
		where = "while the pod was " + strings.ToLower(string(s.pod.Status.Phase))
	}
	detail := fmt.Sprintf("timed out after %s %s", timeout, where)
	if ev := s.ownEvents(); len(ev) > 0 {
		detail += "; last event: " + ev[len(ev)-1].Reason + ": " + oneLine(ev[len(ev)-1].Message)
	}
	return Verdict{Done: true, Result: Failed, Reason: ReasonTimeout, Detail: detail, Hint: "raise --timeout, or run with --keep and 'kubectl describe pod' to see where it stalls"}
}

type createVerdict struct{ Verdict }

func (c createVerdict) asError() error {
	return cliexit.Usagef("%s: %s", c.Detail, c.Hint)
}

func createFailure(ns string, err error) createVerdict {
	msg := oneLine(err.Error())
	v := Verdict{Done: true, Result: Failed, Reason: ReasonCreate, Detail: "cannot create the verify pod: " + msg, Hint: "see the error"}
	switch {
	case strings.Contains(msg, "violates PodSecurity"):
		v.Hint = fmt.Sprintf("namespace %s enforces a Pod Security level the pod does not meet: label it pod-security.kubernetes.io/enforce=restricted (or baseline), or use --namespace", ns)
	case strings.Contains(msg, "exceeded quota"):
		v.Hint = fmt.Sprintf("a ResourceQuota in namespace %s forbids the pod: raise it, or use another --namespace", ns)
	case apierrors.IsForbidden(err):
		v.Hint = fmt.Sprintf("RBAC: you need 'create pods' in namespace %s", ns)
	}
	return createVerdict{v}
}

// isFatalCreate tells whether a creation error will hit every pod alike (no point going on).
func isFatalCreate(err error) bool {
	return apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) || apierrors.IsInvalid(err)
}

// clearStale removes finished verify pods left for the plan's nodes (a run that was killed)
// and refuses to run over a verify that is still going.
func clearStale(ctx context.Context, cs kubernetes.Interface, ns string, plan *Plan) error {
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: nodepod.Selector(Component)})
	if err != nil {
		return cluster.APIError("list pods in namespace "+ns, err)
	}
	mine := map[string]bool{}
	for _, t := range plan.Targets {
		mine[t.pod] = true
	}
	var stale []string
	for _, p := range list.Items {
		if !mine[p.Name] {
			continue
		}
		if p.DeletionTimestamp == nil && (p.Status.Phase == corev1.PodPending || p.Status.Phase == corev1.PodRunning) {
			return cliexit.Usagef("a verify pod %s/%s is already running on node %s (another 'kubectl gpu verify'?): wait for it, or remove it with 'kubectl gpu verify --cleanup'", ns, p.Name, p.Spec.NodeName)
		}
		stale = append(stale, p.Name)
	}
	if len(stale) == 0 {
		return nil
	}
	deletePods(ctx, cs, ns, stale)
	// Wait until they are gone, so the names are free.
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		left := 0
		for _, n := range stale {
			if _, err := cs.CoreV1().Pods(ns).Get(ctx, n, metav1.GetOptions{}); err == nil {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return cliexit.Failuresf("old verify pods in namespace %s are still terminating: run again in a minute", ns)
}

// deletePods deletes pods by name in parallel; they are gone or going when it returns.
func deletePods(ctx context.Context, cs kubernetes.Interface, ns string, names []string) {
	nodepod.DeleteAll(ctx, names, func(ctx context.Context, n string) error {
		return cs.CoreV1().Pods(ns).Delete(ctx, n, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	})
}

// deleteRun deletes the pods of one run, found by its label.
func deleteRun(ctx context.Context, cs kubernetes.Interface, ns, runID string) {
	nodepod.DeleteRun(ctx, func(ctx context.Context) ([]string, error) {
		return podNames(ctx, cs, ns, nodepod.LabelRun+"="+runID)
	}, func(ctx context.Context, n string) error {
		return cs.CoreV1().Pods(ns).Delete(ctx, n, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	})
}

func podNames(ctx context.Context, cs kubernetes.Interface, ns, selector string) ([]string, error) {
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(list.Items))
	for _, p := range list.Items {
		names = append(names, p.Name)
	}
	return names, nil
}

// Cleanup removes every verify pod the tool left in ns and returns how many.
func Cleanup(ctx context.Context, cs kubernetes.Interface, ns string) (int, error) {
	names, err := podNames(ctx, cs, ns, nodepod.Selector(Component))
	if err != nil {
		return 0, cluster.APIError("list pods in namespace "+ns, err)
	}
	deletePods(ctx, cs, ns, names)
	return len(names), nil
}

// countLine is the live count of a run.
func countLine(states map[string]*state) string {
	passed, failed, running := 0, 0, 0
	for _, s := range states {
		switch {
		case !s.done:
			running++
		case s.verdict.Result == Passed:
			passed++
		default:
			failed++
		}
	}
	return fmt.Sprintf("verify: %d nodes: %d passed, %d failed, %d running", len(states), passed, failed, running)
}

// nodeLine is the progress line of a node that finished.
func nodeLine(s *state) string {
	line := fmt.Sprintf("%s: %s", s.t.node, s.verdict.Result)
	if s.verdict.Result != Passed {
		line += ": " + s.verdict.Detail
	}
	return line
}

// Target names a node to verify with gpus GPUs (for building pods outside a Plan).
func Target(node string, gpus int64) target {
	return target{node: node, gpus: gpus, pod: PodName(node)}
}
