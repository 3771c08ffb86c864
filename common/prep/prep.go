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
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// Component labels prep's objects.
const Component = "prep"

// Config is one prep run.
type Config struct {
	Namespace      string
	Names          []string
	Selector       string
	All            bool
	Image          string
	Parallel       int
	Timeout        time.Duration
	RestartRuntime bool
	// Progress receives live progress (a terminal); nil for none.
	Progress io.Writer
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
}

// ChooseNodes picks the nodes: named ones (all must exist), else by selector, else --all,
// else the nodes that look like GPU nodes. Nobody's node is touched unless chosen.
func ChooseNodes(ctx context.Context, cs kubernetes.Interface, cfg *Config) ([]string, error) {
	if _, err := inventory.ParseSelector(cfg.Selector); err != nil {
		return nil, err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: cfg.Selector})
	if err != nil {
		return nil, cluster.APIError("list nodes", err)
	}
	all := cfg.All || cfg.Selector != ""
	chosen, err := inventory.Choose(nodes.Items, inventory.Options{Names: cfg.Names, All: all})
	if err != nil {
		return nil, err
	}
	if len(chosen) == 0 {
		if cfg.Selector != "" {
			return nil, cliexit.Usagef("no node matches %q: check the selector with 'kubectl get nodes -l %s'", cfg.Selector, cfg.Selector)
		}
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
func Job(cfg *Config, node, mode, runID string) *batchv1.Job {
	write := mode == "apply"
	deadline := int64(cfg.Timeout.Seconds())
	if deadline < 30 {
		deadline = 30
	}
	labels := map[string]string{
		nodepod.LabelManagedBy: nodepod.ManagedBy,
		nodepod.LabelComponent: Component,
		nodepod.LabelRun:       runID,
		nodepod.LabelNode:      nodepod.LabelValue(node),
	}
	// The host's / is mounted at /host, the agent's default host root (the image may move
	// it with AGENT_HOST_ROOT: the real-node tests point it at a fake host inside /host).
	args := []string{mode}
	if write && cfg.RestartRuntime {
		args = append(args, "--restart-runtime")
	}
	sc := &corev1.SecurityContext{
		RunAsUser:                ptr.To[int64](0),
		Privileged:               ptr.To(write),
		AllowPrivilegeEscalation: ptr.To(write),
		ReadOnlyRootFilesystem:   ptr.To(true),
	}
	if !write {
		sc.Capabilities = &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"DAC_READ_SEARCH"}}
	}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: JobName(node, runID), Namespace: cfg.Namespace, Labels: labels},
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr.To[int32](0),
			TTLSecondsAfterFinished: ptr.To[int32](300),
			ActiveDeadlineSeconds:   &deadline,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeName:                     node,
					RestartPolicy:                corev1.RestartPolicyNever,
					HostPID:                      true,
					HostNetwork:                  true,
					AutomountServiceAccountToken: ptr.To(false),
					EnableServiceLinks:           ptr.To(false),
					Tolerations:                  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					PriorityClassName:            "",
					Containers: []corev1.Container{{
						Name:            "agent",
						Image:           cfg.Image,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Args:            args,
						Env:             []corev1.EnvVar{{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}},
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

// JobName is the Job's name for a node in a run.
func JobName(node, runID string) string { return nodepod.Fit("gpu-prep-"+node, 57) + "-" + runID }

// RunAgents runs the agent in mode on every node, at most cfg.Parallel Jobs at once, and
// returns one result per node. The Jobs are deleted before it returns, whatever happens.
func RunAgents(ctx context.Context, cs kubernetes.Interface, cfg *Config, nodes []string, mode string) ([]NodeResult, error) {
	if cfg.Parallel <= 0 {
		cfg.Parallel = 10
	}
	runID := rand.String(5)
	ns := cfg.Namespace
	runCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	// Jobs still to delete; each is deleted as soon as its node reported, the rest at the end
	// whatever happens (Ctrl-C, timeout).
	var createdMu sync.Mutex
	created := map[string]bool{}
	var bg sync.WaitGroup
	creatorDone := make(chan struct{})
	creating := false // the creator goroutine runs (an early return happens before it starts)
	defer func() {
		cancel()
		if creating {
			<-creatorDone
		}
		bg.Wait()
		// By label, not by what was recorded: a creation cancelled by Ctrl-C may still have
		// happened on the server.
		nodepod.DeleteRun(context.WithoutCancel(ctx), func(ctx context.Context) ([]string, error) {
			return jobNames(ctx, cs, ns, nodepod.LabelRun+"="+runID)
		}, func(ctx context.Context, n string) error {
			return cs.BatchV1().Jobs(ns).Delete(ctx, n, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
		})
	}()
	release := func(node string) {
		name := JobName(node, runID)
		createdMu.Lock()
		ok := created[name]
		delete(created, name)
		createdMu.Unlock()
		if ok {
			bg.Add(1)
			go func() {
				defer bg.Done()
				deleteJobs(context.WithoutCancel(ctx), cs, ns, []string{name})
			}()
		}
	}

	sel := nodepod.LabelRun + "=" + runID
	w, err := cs.CoreV1().Pods(ns).Watch(runCtx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, cluster.APIError("watch pods in namespace "+ns, err)
	}
	defer func() { w.Stop() }()
	// The Job controller's FailedCreate events: a Pod Security or quota refusal stops the
	// agent's pod before it exists, and only the Job's events say so.
	openEvents := func(ctx context.Context) (watch.Interface, error) {
		return nodepod.WatchEventsFromNow(ctx, cs, ns, "involvedObject.kind=Job,reason=FailedCreate")
	}
	ew, err := openEvents(runCtx)
	if err != nil {
		return nil, cluster.APIError("watch events in namespace "+ns, err)
	}
	defer func() { ew.Stop() }()
	jobNode := map[string]string{}
	for _, n := range nodes {
		jobNode[JobName(n, runID)] = n
	}

	results := map[string]*NodeResult{}
	for _, n := range nodes {
		results[n] = &NodeResult{Node: n}
	}
	type done struct {
		node   string
		result NodeResult
		// fatal ends the run: an RBAC refusal that every node would meet alike.
		fatal error
	}
	var fatal error
	finished := make(chan done, len(nodes))
	sem := make(chan struct{}, cfg.Parallel)
	// Jobs start as slots free up: a slot is held until the node's pod finished.
	creating = true
	go func() {
		defer close(creatorDone)
		for _, n := range nodes {
			select {
			case sem <- struct{}{}:
			case <-runCtx.Done():
				return
			}
			err := nodepod.Retry(runCtx, func(ctx context.Context) error {
				_, err := cs.BatchV1().Jobs(ns).Create(ctx, Job(cfg, n, mode, runID), metav1.CreateOptions{})
				return err
			})
			if apierrors.IsAlreadyExists(err) {
				err = nil // an earlier try succeeded but its answer was lost
			}
			if err != nil {
				if runCtx.Err() != nil {
					return
				}
				if cluster.IsRBACDenied(err) || apierrors.IsUnauthorized(err) {
					finished <- done{node: n, fatal: cluster.APIError("create the agent Job in namespace "+ns, err)}
					return
				}
				finished <- done{n, NodeResult{Node: n, Error: "cannot create the agent Job: " + oneLine(err.Error()), Hint: createHint(ns, err)}, nil}
				continue
			}
			createdMu.Lock()
			created[JobName(n, runID)] = true
			createdMu.Unlock()
		}
	}()

	reading := map[string]bool{}
	remaining := len(nodes)
	prog := report.NewProgress(cfg.Progress)
	defer prog.End()
	reported := 0
	for remaining > 0 {
		select {
		case d := <-finished:
			if d.fatal != nil {
				fatal = d.fatal
				goto out
			}
			if r := results[d.node]; r.Report == nil && r.Error == "" {
				*r = d.result
				remaining--
				release(d.node)
				if cfg.OnReport != nil && r.Report != nil {
					cfg.OnReport(*r)
				}
				<-sem
				reported++
				prog.Node(nodeLine(*r))
				prog.Count(fmt.Sprintf("prep: %d/%d nodes reported", reported, len(nodes)))
			}
		case ev, ok := <-ew.ResultChan():
			if !ok {
				ew, err = nodepod.Rewatch(runCtx, openEvents)
				if runCtx.Err() != nil {
					goto out
				}
				if err != nil {
					return nil, cluster.APIError("watch events", err)
				}
				continue
			}
			e, isEvent := ev.Object.(*corev1.Event)
			if !isEvent {
				continue
			}
			node, mine := jobNode[e.InvolvedObject.Name]
			if !mine || reading[node] {
				continue
			}
			reading[node] = true
			finished <- done{node, NodeResult{Node: node, Error: "the Job controller cannot create the agent pod: " + oneLine(e.Message), Hint: createHint(ns, errors.New(e.Message))}, nil}
		case ev, ok := <-w.ResultChan():
			if !ok {
				if runCtx.Err() != nil {
					goto out
				}
				// The watch ended early (API server restart): open another.
				w, err = nodepod.Rewatch(runCtx, func(ctx context.Context) (watch.Interface, error) {
					return cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: sel})
				})
				if runCtx.Err() != nil {
					goto out
				}
				if err != nil {
					return nil, cluster.APIError("watch pods", err)
				}
				continue
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod || ev.Type == watch.Deleted {
				continue
			}
			node := p.Spec.NodeName
			r := results[node]
			if r == nil || r.Report != nil || r.Error != "" || reading[node] {
				continue
			}
			if msg, hint, failed := podProblem(p, cfg.Image); failed {
				reading[node] = true
				finished <- done{node, NodeResult{Node: node, Error: msg, Hint: hint}, nil}
				continue
			}
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				reading[node] = true
				go func(name, node string) {
					b, err := nodepod.ReadLog(ctx, cs, ns, name, &corev1.PodLogOptions{Container: "agent", LimitBytes: ptr.To[int64](4 << 20)})
					res := NodeResult{Node: node}
					switch {
					case errors.Is(err, nodepod.ErrLogRefused):
						finished <- done{node: node, fatal: err}
						return
					case err != nil:
						res.Error, res.Hint = "cannot read the agent's log: "+oneLine(err.Error()), "check 'kubectl logs' permissions (pods/log)"
					default:
						res.Report, err = rep.Parse(lastJSONLine(b))
						if err != nil {
							res.Error, res.Hint = err.Error(), "run with --image set to the agent image of this plugin's version (kubectl gpu version)"
						}
					}
					finished <- done{node, res, nil}
				}(p.Name, node)
			}
		case <-runCtx.Done():
			goto out
		}
	}
out:
	if ctx.Err() != nil {
		return nil, cliexit.ErrInterrupted
	}
	if fatal != nil {
		return nil, fatal
	}
	out := make([]NodeResult, 0, len(nodes))
	for _, n := range nodes {
		r := results[n]
		if r.Report == nil && r.Error == "" {
			r.Error = fmt.Sprintf("the agent did not finish within %s", cfg.Timeout)
			r.Hint = "the node may be unreachable or the image slow to pull: raise --timeout, or check 'kubectl get pods -n " + ns + "'"
		}
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}

// podProblem reports a pod that will not produce a report: image pull failures and the like.
func podProblem(p *corev1.Pod, image string) (string, string, bool) {
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName":
				return fmt.Sprintf("image %s cannot be pulled: %s", image, oneLine(w.Message)), "push the agent image to a registry the node reaches and pass --image (see docs for mirroring)", true
			case "CreateContainerError", "CreateContainerConfigError", "RunContainerError":
				return fmt.Sprintf("%s: %s", w.Reason, oneLine(w.Message)), "see 'kubectl describe pod' in the prep namespace", true
			}
		}
	}
	return "", "", false
}

func createHint(ns string, err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "violates PodSecurity"):
		return fmt.Sprintf("the agent needs privileged pods: label namespace %s pod-security.kubernetes.io/enforce=privileged, or use --namespace", ns)
	case strings.Contains(msg, "exceeded quota"):
		return fmt.Sprintf("a ResourceQuota in namespace %s forbids the agent pod: raise it, or use --namespace", ns)
	case strings.Contains(msg, "forbidden"):
		return fmt.Sprintf("RBAC: you need 'create jobs' in namespace %s", ns)
	}
	return ""
}

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

func deleteJobs(ctx context.Context, cs kubernetes.Interface, ns string, names []string) {
	nodepod.DeleteAll(ctx, names, func(ctx context.Context, n string) error {
		return cs.BatchV1().Jobs(ns).Delete(ctx, n, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
	})
}

// Cleanup removes every prep Job (and so its pods) the tool left in ns.
func Cleanup(ctx context.Context, cs kubernetes.Interface, ns string) (int, error) {
	names, err := jobNames(ctx, cs, ns, nodepod.Selector(Component))
	if err != nil {
		return 0, cluster.APIError("list jobs in namespace "+ns, err)
	}
	deleteJobs(ctx, cs, ns, names)
	return len(names), nil
}

func jobNames(ctx context.Context, cs kubernetes.Interface, ns, selector string) ([]string, error) {
	list, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(list.Items))
	for _, j := range list.Items {
		names = append(names, j.Name)
	}
	return names, nil
}

// nodeLine is the progress line of a node that reported.
func nodeLine(r NodeResult) string {
	state := "ready"
	switch {
	case r.Error != "":
		state = "error: " + r.Error
	case !r.Ready():
		state = "not ready"
	}
	return r.Node + ": " + state
}

func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", " ")
}
