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
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
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
	Parallel     int
	Timeout      time.Duration
	Keep         bool
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

// Plan is the pre-flight result: the nodes and the RuntimeClass, decided before anything
// is created.
type Plan struct {
	Targets      []target
	RuntimeClass string
}

// Prepare validates the config against the cluster with one node list and one
// RuntimeClass get. Every problem here is exit 2 and nothing has been created.
func Prepare(ctx context.Context, cs kubernetes.Interface, req *Request) (*Plan, error) {
	d := req.Default()
	cfg := &d
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
	// DRA is read only when it can matter: --claim dra, or a chosen node without the
	// device plugin's resource (a node whose GPUs DRA may publish).
	need := cfg.Claim == ClaimDRA
	for _, n := range chosen {
		if q := n.Status.Allocatable[cfg.Resource]; q.IsZero() && cfg.Claim != ClaimDevicePlugin {
			need = true
		}
	}
	dra := &inventory.DRAState{}
	if need {
		if dra, err = draState(ctx, cs, cfg); err != nil {
			return nil, err
		}
	}
	p := &Plan{}
	var tooFew []string
	for _, n := range chosen {
		alloc := n.Status.Allocatable[cfg.Resource]
		have, viaDRA := alloc.Value(), false
		if d := dra.Node(n.Name); d != nil && (cfg.Claim == ClaimDRA || cfg.Claim != ClaimDevicePlugin && have == 0) {
			have, viaDRA = draCount(d, cfg.Resource), true
		} else if cfg.Claim == ClaimDRA {
			have = 0
		}
		if have == 0 {
			if len(cfg.Names) > 0 {
				what := "no allocatable " + string(cfg.Resource)
				if cfg.Claim == ClaimDRA {
					what = "no GPU published through DRA (driver " + inventory.DRADriver + ")"
				}
				return nil, cliexit.Usagef("node %q has %s: run 'kubectl gpu nodes --all' to see what it has, or 'kubectl gpu prep %s'", n.Name, what, n.Name)
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
		p.Targets = append(p.Targets, target{node: n.Name, gpus: want, pod: PodName(n.Name), dra: viaDRA, sharing: inventory.Sharing(n)})
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

// draState reads what DRA publishes, unless the pods must use the device plugin. Without
// the permission to list ResourceSlices, auto goes on with the device plugin alone (and
// says so); --claim dra stops.
func draState(ctx context.Context, cs kubernetes.Interface, cfg *Request) (*inventory.DRAState, error) {
	if cfg.Claim == ClaimDevicePlugin {
		return &inventory.DRAState{}, nil
	}
	st, err := inventory.CollectDRA(ctx, cs)
	var le *inventory.DRAListError
	switch {
	case errors.As(err, &le) && cfg.Claim == ClaimAuto && cluster.IsRBACDenied(le.Err):
		if cfg.Warn != nil {
			fmt.Fprintf(cfg.Warn, "warning: GPUs published through DRA are not considered: %v\n", le.APIError())
		}
		return &inventory.DRAState{}, nil
	case errors.As(err, &le):
		return nil, le.APIError()
	}
	return st, err
}

// draCount is how many devices of what resource names DRA publishes for a node: whole GPUs
// for nvidia.com/gpu, MIG devices for a nvidia.com/mig-* resource.
func draCount(d *inventory.DRA, res corev1.ResourceName) int64 {
	if strings.HasPrefix(string(res), inventory.MIGResourcePrefix) {
		return d.MIG
	}
	return d.GPUs
}

// PodName is the verify pod's name for a node: one per node, so that two runs cannot
// book the same GPUs twice.
func PodName(node string) string { return nodepod.Fit("gpu-verify-"+node, 63) }

// Pod builds the verify pod for a target: pinned to its node by node affinity (so the
// scheduler decides and explains), asking for the GPUs as limits, tolerating the GPU
// taint, unprivileged, with a deadline.
func Pod(cfg *Request, rc string, t target, labels map[string]string) *corev1.Pod {
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
		ObjectMeta: metav1.ObjectMeta{Name: t.pod, Namespace: cfg.Namespace, Labels: labels},
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
				Resources:       resources(cfg, t, q),
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
	if t.dra {
		p.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: claimName, ResourceClaimTemplateName: ptr.To(TemplateName(labels[nodepod.LabelRun], t.gpus))}}
	}
	return p
}

// claimName is the pod's name for its GPU claim.
const claimName = "gpu"

// resources asks for the GPUs: the extended resource, or the pod's claim.
func resources(cfg *Request, t target, q resource.Quantity) corev1.ResourceRequirements {
	if t.dra {
		return corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: claimName}}}
	}
	return corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{cfg.Resource: q},
		Requests: corev1.ResourceList{cfg.Resource: q},
	}
}

// Run verifies the plan's nodes and returns the report. The pods are deleted as each node
// finishes and, whatever happens, before it returns (unless cfg.Keep); see nodepod's Ctrl-C
// contract.
func Run(ctx context.Context, cs kubernetes.Interface, req *Request, plan *Plan) (*Report, error) {
	d := req.Default()
	cfg := &d
	if err := nodepod.EnsureNamespace(ctx, cs, cfg.Namespace, nodepod.PSARestricted); err != nil {
		return nil, err
	}
	if err := clearStale(ctx, cs, cfg.Namespace, plan); err != nil {
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
					return Verdict{Done: true, Result: Failed, Reason: ReasonContainerError, Detail: "cannot read the pod's log: " + oneLine(o.LogErr.Error()), Hint: "check 'kubectl logs' permissions and the kubelet"}, nodepod.Done
				}
				return Classify(Observation{Pod: o.Pod, Events: o.Events, Log: string(o.Log), Image: cfg.Image}), nodepod.Done
			}
			v := Classify(Observation{Pod: o.Pod, Events: o.Events, Image: cfg.Image})
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
