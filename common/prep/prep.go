// Package prep runs the node agent on GPU nodes in one-shot privileged Jobs, reads each
// agent's report from its pod log, and removes the Jobs — also on Ctrl-C and on timeout.
package prep

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubectl-gpu/kubectl-gpu/common/buildinfo"
	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/pkginstall"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// Component labels prep's objects.
const Component = "prep"

// DefaultTimeout is the time of each of prep's phases (check, plan, apply) unless a request
// says otherwise.
const DefaultTimeout = 5 * time.Minute

// NewRequest is a request with the defaults: the node agent image of this build, each phase
// DefaultTimeout.
func NewRequest() Request { return Request{Image: buildinfo.AgentImage(), Timeout: DefaultTimeout} }

// Request is one prep operation: what a program (or the command's flags) asks of Run. Run
// never changes it; NewRequest gives the defaults.
type Request struct {
	Namespace      string
	Names          []string
	Selector       string
	All            bool
	Image          string
	Parallel       int
	Timeout        time.Duration
	RestartRuntime bool
	// Apply plans, confirms, applies and checks again (Run); UntaintControlPlane also
	// removes the control-plane NoSchedule taint of the chosen nodes.
	Apply               bool
	UntaintControlPlane bool
	// PlanOut receives the plan of --apply (nil: not shown); Confirm is asked before
	// anything changes (nil: no question) and stops the run with its error.
	PlanOut io.Writer
	Confirm func(question string) error
	// Progress receives progress: live on a terminal; in a pipe, a line when what a roll
	// waits for changes (at most one per node every few seconds); nil for none.
	Progress io.Writer
	// Install names the host packages --apply installs (zero: none); Roll, when set, drains
	// and reboots the nodes whose changes need a reboot, a few at a time (--reboot).
	Install pkginstall.Install
	Roll    *RollOptions
	// OnReport, when set, is called (from one goroutine) with each node's report as soon as
	// it arrives, while slower nodes are still running: the command annotates nodes there.
	OnReport func(NodeResult)
}

// NodeResult is one node's outcome: the agent's report, or why there is none.
type NodeResult struct {
	Node   string      `json:"node"`
	Report *rep.Report `json:"report,omitempty"`
	Error  string      `json:"error,omitempty"`
	Hint   string      `json:"hint,omitempty"`
	// NotStarted: a roll stopped at another node before it reached this one (nothing was
	// changed on it).
	NotStarted bool `json:"notStarted,omitempty"`
}

// DefaultParallel is how many nodes run the agent at once unless --parallel says otherwise:
// check and plan pods are read-only and small (10m CPU, 32 MiB), so up to 100 nodes run at
// once; apply changes nodes (and may restart their runtime), so 10 at a time.
func DefaultParallel(mode rep.Mode) int {
	if mode == rep.ModeApply {
		return 10
	}
	return 100
}

// ChooseNodes picks the nodes: named ones (all must exist), else by selector, else --all,
// else the nodes that look like GPU nodes. Nobody's node is touched unless chosen.
func ChooseNodes(ctx context.Context, cs kubernetes.Interface, req *Request) ([]string, error) {
	chosen, err := inventory.ListAndChoose(ctx, cs, inventory.Options{Names: req.Names, Selector: req.Selector, All: req.All})
	if err != nil {
		return nil, err
	}
	if len(chosen) == 0 {
		return nil, cliexit.Usagef("no node looks like a GPU node (no nvidia.com/gpu resource, no nvidia.com/gpu.present or pci-10de label): name the nodes, or pass -l SELECTOR or --all")
	}
	names := make([]string, len(chosen))
	for i, n := range chosen {
		names[i] = n.Name
	}
	return names, nil
}

// Job builds the agent Job for a node. Check and plan mount the host read-only and are
// not privileged; apply is privileged (nsenter into the host's namespaces) with the host
// root writable.
func Job(req *Request, node string, mode rep.Mode, labels map[string]string) *batchv1.Job {
	return job(req, node, AgentRequest(req, mode, ""), labels)
}

func job(req *Request, node string, ar rep.AgentRequest, labels map[string]string) *batchv1.Job {
	mode := ar.Mode
	// Apply and reboot change the host; a plan that installs packages asks the host's
	// package manager (a dry run, with a private state under the host's /run).
	write := mode == rep.ModeApply || mode == rep.ModeReboot || mode == rep.ModePlan && req.Install.Any()
	deadline := int64(req.Timeout.Seconds())
	if deadline < 30 {
		deadline = 30
	}
	// The host's / is mounted at /host, the agent's default host root (the image may move
	// it with AGENT_HOST_ROOT: the real-node tests point it at a fake host inside /host).
	args := ar.Args()
	env := []corev1.EnvVar{{Name: rep.EnvNode, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}}
	for _, e := range ar.Env() {
		env = append(env, corev1.EnvVar{Name: e[0], Value: e[1]})
	}
	sc := &corev1.SecurityContext{
		RunAsUser:                ptr.To[int64](0),
		Privileged:               ptr.To(write),
		AllowPrivilegeEscalation: ptr.To(write),
		ReadOnlyRootFilesystem:   ptr.To(true),
	}
	if !write {
		// DAC_READ_SEARCH reads the host's files whatever their mode; SYS_CHROOT lets the
		// agent run the host's own containerd on the host's files (its config loader judges
		// the config), as NVIDIA's toolkit does, without entering the host's namespaces.
		sc.Capabilities = &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"DAC_READ_SEARCH", "SYS_CHROOT"}}
	}
	var grace *int64
	if mode == rep.ModeApply && req.Install.Any() {
		// The package manager the agent started finishes before the pod stops (Ctrl-C, the
		// deadline): killed mid-way it would leave dpkg's work half done.
		grace = ptr.To(int64(pkginstall.InstallGrace.Seconds()))
	}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr.To[int32](0),
			TTLSecondsAfterFinished: ptr.To[int32](300),
			ActiveDeadlineSeconds:   &deadline,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeName:                      node,
					RestartPolicy:                 corev1.RestartPolicyNever,
					TerminationGracePeriodSeconds: grace,
					HostPID:                       true,
					HostNetwork:                   true,
					AutomountServiceAccountToken:  ptr.To(false),
					EnableServiceLinks:            ptr.To(false),
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					PriorityClassName:             "",
					Containers: []corev1.Container{{
						Name:            "agent",
						Image:           req.Image,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Args:            args,
						Env:             env,
						SecurityContext: sc,
						VolumeMounts:    []corev1.VolumeMount{{Name: "host", MountPath: "/host", ReadOnly: !write}},
						Resources: corev1.ResourceRequirements{
							Requests: corev1.ResourceList{corev1.ResourceCPU: resourceQ("10m"), corev1.ResourceMemory: resourceQ("32Mi")},
							Limits:   corev1.ResourceList{corev1.ResourceMemory: resourceQ("256Mi")},
						},
					}},
					Volumes: []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/", Type: ptr.To(corev1.HostPathDirectory)}}}},
				},
			},
		},
	}
}

// AgentRequest is what the agent on node is asked in mode: the restart (in the plan too,
// so that it shows the restart apply will run), the package installs (plan and apply), the
// boot to reboot (bootID, in reboot mode). The host's / is mounted at the agent's default
// host root.
func AgentRequest(req *Request, mode rep.Mode, bootID string) rep.AgentRequest {
	r := rep.AgentRequest{Mode: mode}
	if mode == rep.ModeApply || mode == rep.ModePlan {
		r.RestartRuntime = req.RestartRuntime
		if in := req.Install; in.Any() {
			r.DriverBranch, r.ToolkitVersion, r.PackageRepo, r.PackageKey, r.LockTimeout = in.DriverBranch, in.ToolkitVersion, in.Repo, in.Key, in.LockTimeout
		}
	}
	if mode == rep.ModeReboot {
		r.BootID = bootID
	}
	return r
}

// JobName is the Job's name for a node in a run.
func JobName(node, runID string) string { return nodepod.Fit("gpu-prep-"+node, 57) + "-" + runID }

// RunAgents runs the agent in mode on every node, at most req.Parallel nodes at once, and
// returns one result per node. The Jobs are deleted once their nodes reported (a few nodes'
// in one request) and, whatever happens, before it returns (see nodepod's Ctrl-C contract).
func RunAgents(ctx context.Context, cs kubernetes.Interface, req *Request, nodes []string, mode rep.Mode) ([]NodeResult, error) {
	parallel := req.Parallel
	if parallel <= 0 {
		parallel = DefaultParallel(mode)
	}
	prog := report.ForStream(req.Progress)
	defer prog.End()
	tally := prog.Tally("prep", len(nodes))
	defer tally.Stop()
	work := agentWork(req, mode, func(string) string { return "" })
	work.Started = tally.Started
	work.Finished = func(r nodepod.Result[NodeResult], done, total int) {
		v := r.Value
		v.Node = r.Node
		tally.Finished(r.Node, failureLine(v))
		if req.OnReport != nil && r.Value.Report != nil {
			req.OnReport(r.Value)
		}
	}
	run := nodepod.Run{Namespace: req.Namespace, Nodes: nodes, MaxInFlight: parallel, Timeout: req.Timeout}
	out, err := nodepod.Execute(ctx, cs, run, work)
	if err != nil {
		return nil, err
	}
	res := make([]NodeResult, len(out))
	for i, o := range out {
		res[i] = o.Value
		res[i].Node = o.Node
	}
	sort.Slice(res, func(i, j int) bool { return res[i].Node < res[j].Node })
	return res, nil
}

// agentWork is the engine's Work of the agent in mode: its Job per node (in reboot mode,
// for the boot bootID gives), and how its pod is read.
func agentWork(req *Request, mode rep.Mode, bootID func(node string) string) nodepod.Work[NodeResult] {
	ns := req.Namespace
	return nodepod.Work[NodeResult]{
		Component: Component,
		Job: func(node string, labels map[string]string) *batchv1.Job {
			return job(req, node, AgentRequest(req, mode, bootID(node)), labels)
		},
		Name: JobName,
		// The Job controller's FailedCreate events: a Pod Security or quota refusal stops
		// the agent's pod before it exists, and only the Job's events say so.
		EventSelector: "involvedObject.kind=Job,reason=FailedCreate",
		LogOptions:    &corev1.PodLogOptions{Container: "agent", LimitBytes: ptr.To[int64](4 << 20)},
		Classify: func(o nodepod.Observation) (NodeResult, nodepod.Step) {
			return classify(o, req.Image, ns)
		},
		CreateFailed: func(node string, err error) (NodeResult, error) {
			if cluster.IsRBACDenied(err) || apierrors.IsUnauthorized(err) {
				return NodeResult{}, cluster.APIError("create the agent Job in namespace "+ns, err)
			}
			return NodeResult{Node: node, Error: "cannot create the agent Job: " + cliexit.OneLine(err.Error()), Hint: createHint(ns, err)}, nil
		},
		TimedOut: func(o nodepod.Observation) NodeResult {
			return NodeResult{Node: o.Node, Error: fmt.Sprintf("the agent did not finish within %s", req.Timeout),
				Hint: "the node may be unreachable or the image slow to pull: raise --timeout, or check 'kubectl get pods -n " + ns + "'"}
		},
	}
}

// classify reads a prep pod: a Job that cannot make its pod and a pod that cannot start are
// the node's error; a finished pod's log holds the agent's report.
func classify(o nodepod.Observation, image, ns string) (NodeResult, nodepod.Step) {
	r := NodeResult{Node: o.Node}
	for _, e := range o.Events {
		if e.InvolvedObject.Kind == "Job" && e.Reason == "FailedCreate" {
			r.Error, r.Hint = "the Job controller cannot create the agent pod: "+cliexit.OneLine(e.Message), createHint(ns, errors.New(e.Message))
			return r, nodepod.Done
		}
	}
	p := o.Pod
	if p == nil {
		return r, nodepod.Wait
	}
	if msg, hint, failed := podProblem(p, image); failed {
		r.Error, r.Hint = msg, hint
		return r, nodepod.Done
	}
	if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
		return r, nodepod.Wait
	}
	if !o.LogRead {
		return r, nodepod.NeedLog
	}
	if o.LogErr != nil {
		// A refusal (pods/log) stops the whole run before this: what is left is the node's
		// kubelet not answering the API server's log request.
		r.Error, r.Hint = "cannot read the agent's log: "+cliexit.OneLine(o.LogErr.Error()), "the API server could not get it from the node's kubelet: check the node (kubectl describe node "+o.Node+"), then run the same command again"
		return r, nodepod.Done
	}
	var err error
	if r.Report, err = rep.Parse(lastJSONLine(o.Log)); err != nil {
		r.Error, r.Hint = err.Error(), "run with --image set to the agent image of this plugin's version (kubectl gpu version)"
	} else if r.Report.Error != "" {
		r.Error = "the agent stopped: " + r.Report.Error
	}
	return r, nodepod.Done
}

// podProblem reports a pod that will not produce a report: image pull failures and the like.
func podProblem(p *corev1.Pod, image string) (string, string, bool) {
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			switch {
			case nodepod.ImagePullFailed(w):
				return fmt.Sprintf("image %s cannot be pulled: %s", image, cliexit.OneLine(w.Message)), "push the agent image to a registry the node reaches and pass --image (see docs for mirroring)", true
			case w.Reason == "CreateContainerError", w.Reason == "CreateContainerConfigError", w.Reason == "RunContainerError":
				return fmt.Sprintf("%s: %s", w.Reason, cliexit.OneLine(w.Message)), "see 'kubectl describe pod' in the prep namespace", true
			}
		}
	}
	return "", "", false
}

// refused is what a refusal of the agent's Job or pod asks to change.
var refused = nodepod.Refused{What: "agent pod (privileged)", Level: "privileged", Resource: "jobs"}

func createHint(ns string, err error) string { return refused.Hint(ns, err) }

// lastJSONLine picks the report line out of the log (the agent prints one line of JSON;
// anything before it is noise from the container runtime).
func lastJSONLine(b []byte) []byte {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(strings.TrimSpace(lines[i]), "{") {
			return []byte(lines[i])
		}
	}
	return b
}

// Cleanup removes every prep Job (and so its pods) the tool left in ns.
func Cleanup(ctx context.Context, cs kubernetes.Interface, ns string) (int, error) {
	return nodepod.Cleanup(ctx, cs, ns, Component, true)
}

// failureLine is the progress line of a node that finished without being ready ("" when
// it is ready, or has no GPU to be ready for).
func failureLine(r NodeResult) string {
	switch {
	case r.Error != "":
		return r.Node + ": error: " + r.Error
	case r.Report == nil:
		return "" // no result (a refusal that ends the run says it)
	case !r.Ready() && !r.NoGPU():
		return r.Node + ": not ready: " + failedChecks(r.Report)
	}
	return ""
}
