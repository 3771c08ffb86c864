// Package verify runs the CUDA vectoradd proof on GPU nodes: one unprivileged pod per node
// asking for the node's GPUs, all watched by one watch, each failure explained.
package verify

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
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

// Request is one verify operation: what a program (or the command's flags) asks of Prepare
// and Run. Neither changes it; Default gives its defaults.
type Request struct {
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
	// Cordoned: the pods tolerate the cordon, to prove a node before it is uncordoned
	// (up's roll).
	Cordoned bool
	Parallel int
	Timeout  time.Duration
	Keep     bool
	// Claim says how the pods ask for GPUs: ClaimAuto (the device plugin's extended
	// resource where the node has it, else a DRA claim where DRA publishes the node's GPUs),
	// ClaimDevicePlugin or ClaimDRA.
	Claim Claim
	// Progress receives live progress lines (a terminal); nil for none.
	Progress io.Writer
	// Warn receives warnings (stderr); nil for none.
	Warn io.Writer
}

// Default is the request with its defaults filled in: the device plugin's whole GPUs
// (nvidia.com/gpu), 10 pods created at once, DefaultTimeout.
func (r Request) Default() Request {
	if r.Resource == "" {
		r.Resource = inventory.ResourceGPU
	}
	if r.Parallel <= 0 {
		r.Parallel = 10
	}
	if r.Timeout <= 0 {
		r.Timeout = DefaultTimeout
	}
	return r
}

// Claim is how a verify pod asks for its GPUs.
type Claim string

// How a verify pod asks for its GPUs.
const (
	ClaimAuto         Claim = "auto"
	ClaimDevicePlugin Claim = "device-plugin"
	ClaimDRA          Claim = "dra"
)

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
	// Claim is how the pod asked for its GPUs: device-plugin or dra.
	Claim Claim `json:"claim"`
	// Sharing is the node's GPU sharing (time-slicing, MPS): a pass there proves that the
	// GPU can be reached, not that it is isolated.
	Sharing string `json:"sharing,omitempty"`
}

// target is a node to verify.
type target struct {
	node string
	gpus int64
	pod  string
	// dra: the GPUs are asked for through a claim (a ResourceClaimTemplate of the run)
	// instead of the extended resource.
	dra bool
	// sharing is the node's GPU sharing ("4× time-slicing"): a pass proves access only.
	sharing string
}

// Run verifies the plan's nodes and returns the report. The pods are deleted once their
// nodes finished (a few nodes' in one request) and, whatever happens, before it returns (unless cfg.Keep); see nodepod's Ctrl-C
// contract.
func Run(ctx context.Context, cs kubernetes.Interface, req *Request, plan *Plan) (*Report, error) {
	d := req.Default()
	cfg := &d
	// The namespace and an earlier run's pods are seen to at once (a namespace that does not
	// exist yet has no pods).
	stale := make(chan error, 1)
	go func() { stale <- clearStale(ctx, cs, cfg.Namespace, plan) }()
	if err := nodepod.EnsureNamespace(ctx, cs, cfg.Namespace, nodepod.PSARestricted); err != nil {
		<-stale
		return nil, err
	}
	if err := <-stale; err != nil {
		return nil, err
	}
	targets := map[string]target{}
	nodes := make([]string, len(plan.Targets))
	for i, t := range plan.Targets {
		targets[t.node], nodes[i] = t, t.node
	}
	progress := report.NewProgress(cfg.Progress)
	defer progress.End()
	tally := progress.Tally("verify", len(nodes))
	defer tally.Stop()
	work := nodepod.Work[Verdict]{
		Component: Component,
		Pod: func(node string, labels map[string]string) *corev1.Pod {
			return Pod(cfg, plan.RuntimeClass, targets[node], labels)
		},
		Name:          func(node, _ string) string { return targets[node].pod },
		EventSelector: fields.OneTermEqualSelector("involvedObject.kind", "Pod").String(),
		LogOptions:    &corev1.PodLogOptions{Container: ContainerName, TailLines: ptr.To[int64](100), LimitBytes: ptr.To[int64](64 << 10)},
		Classify: func(o nodepod.Observation) (Verdict, nodepod.Step) {
			if o.Pod == nil && !o.Deleted {
				return Verdict{}, nodepod.Wait
			}
			if o.LogRead {
				if o.LogErr != nil {
					return Verdict{Done: true, Result: Failed, Reason: ReasonContainerError, Detail: "cannot read the pod's log: " + oneLine(o.LogErr.Error()), Hint: "the API server could not get it from the node's kubelet: check the node (kubectl describe node " + o.Node + "), then run again"}, nodepod.Done
				}
				return Classify(o, cfg.Image), nodepod.Done
			}
			v := Classify(o, cfg.Image)
			switch {
			case !v.Done:
				return v, nodepod.Wait
			case o.Pod != nil && (o.Pod.Status.Phase == corev1.PodSucceeded || o.Pod.Status.Phase == corev1.PodFailed):
				return v, nodepod.NeedLog
			}
			return v, nodepod.Done
		},
		CreateFailed: func(node string, err error) (Verdict, error) {
			c := createFailure(cfg.Namespace, err)
			if isFatalCreate(err) {
				return c.Verdict, c.asError()
			}
			return c.Verdict, nil
		},
		TimedOut: func(o nodepod.Observation) Verdict { return timeoutVerdict(o, cfg.Timeout) },
		Started:  tally.Started,
		Finished: func(r nodepod.Result[Verdict], done, total int) {
			tally.Finished(r.Node, failureLine(r.Node, r.Value))
		},
	}
	runID := nodepod.NewRunID()
	if ts := Templates(cfg, plan, runID); len(ts) > 0 {
		// The DRA pods' claims come from the run's templates, removed with the run.
		defer func() {
			if !cfg.Keep {
				_, _ = removeTemplates(context.WithoutCancel(ctx), cs, cfg.Namespace, nodepod.LabelRun+"="+runID)
			}
		}()
		if err := createTemplates(ctx, cs, cfg.Namespace, ts); err != nil {
			if ctx.Err() != nil {
				return nil, cliexit.ErrInterrupted
			}
			return nil, err
		}
	}
	run := nodepod.Run{RunID: runID, Namespace: cfg.Namespace, Nodes: nodes, Creators: cfg.Parallel, Timeout: cfg.Timeout, Keep: cfg.Keep}
	results, err := nodepod.Execute(ctx, cs, run, work)
	if err != nil {
		return nil, err
	}
	rep := &Report{TypeMeta: report.Meta(Kind), Image: cfg.Image, RuntimeClass: plan.RuntimeClass, Namespace: cfg.Namespace}
	for _, res := range results {
		t, v := targets[res.Node], res.Value
		r := NodeResult{Node: t.node, GPUs: t.gpus, Result: v.Result, Reason: v.Reason, Detail: v.Detail, Hint: v.Hint, Pod: t.pod,
			DurationSeconds: res.Duration().Round(100 * time.Millisecond).Seconds(), Claim: ClaimDevicePlugin, Sharing: t.sharing}
		if t.dra {
			r.Claim = ClaimDRA
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

func timeoutVerdict(o nodepod.Observation, timeout time.Duration) Verdict {
	where := "before the pod was created"
	switch {
	case o.Pod == nil:
	case o.Pod.Spec.NodeName == "":
		where = "while the pod waited to be scheduled"
	case o.Pod.Status.Phase == corev1.PodPending:
		where = "while the pod was starting (image pull or container creation)"
	default:
		where = "while the pod was " + strings.ToLower(string(o.Pod.Status.Phase))
	}
	detail := fmt.Sprintf("timed out after %s %s", timeout, where)
	if ev := o.Events; len(ev) > 0 {
		detail += "; last event: " + ev[len(ev)-1].Reason + ": " + oneLine(ev[len(ev)-1].Message)
	}
	if hasClaims(o.Pod) && o.Pod.Spec.NodeName == "" {
		return Verdict{Done: true, Result: Failed, Reason: ReasonClaimPending, Detail: "the GPU claim was not allocated: " + detail,
			Hint: "check the claim with 'kubectl get resourceclaims' (--keep) and the DRA driver's ResourceSlices for the node"}
	}
	return Verdict{Done: true, Result: Failed, Reason: ReasonTimeout, Detail: detail, Hint: "raise --timeout, or run with --keep and 'kubectl describe pod' to see where it stalls"}
}

type createVerdict struct{ Verdict }

func (c createVerdict) asError() error {
	return cliexit.Usagef("%s: %s", c.Detail, c.Hint)
}

// refused is what a refusal of a verify pod asks to change (the pod is restricted).
var refused = nodepod.Refused{What: "pod", Level: "restricted (or baseline)", Resource: "pods"}

func createFailure(ns string, err error) createVerdict {
	msg := oneLine(err.Error())
	v := Verdict{Done: true, Result: Failed, Reason: ReasonCreate, Detail: "cannot create the verify pod: " + msg, Hint: "see the error"}
	if h := refused.Hint(ns, err); h != "" {
		v.Hint = h
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

// Cleanup removes every verify pod and ResourceClaimTemplate the tool left in ns and returns
// how many pods.
func Cleanup(ctx context.Context, cs kubernetes.Interface, ns string) (int, error) {
	n, err := nodepod.Cleanup(ctx, cs, ns, Component, false)
	if err != nil {
		return n, err
	}
	// Without DRA served, or without the permission to list templates, there are none of ours.
	if _, err := removeTemplates(ctx, cs, ns, nodepod.Selector(Component)); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) {
		return n, cluster.APIError("list ResourceClaimTemplates in namespace "+ns, err)
	}
	return n, nil
}

// countLine is the live count of a run.
// failureLine is the progress line of a node that did not pass ("" when it passed).
func failureLine(node string, v Verdict) string {
	if v.Result == Passed || v.Result == "" { // "": no verdict (a refusal that ends the run says it)
		return ""
	}
	return fmt.Sprintf("%s: %s: %s", node, v.Result, v.Detail)
}

// Target names a node to verify with gpus GPUs (for building pods outside a Plan).
func Target(node string, gpus int64) target {
	return target{node: node, gpus: gpus, pod: PodName(node)}
}
