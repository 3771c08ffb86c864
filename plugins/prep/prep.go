// Package prep is `kubectl gpu prep`.
package prep

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/buildinfo"
	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/completion"
)

// PrepOptions are the flags of `kubectl gpu prep`.
type PrepOptions struct {
	Names               []string
	Selector            string
	All                 bool
	Apply               bool
	Yes                 bool
	RestartRuntime      bool
	UntaintControlPlane bool
	Image               string
	Parallel            int
	Timeout             time.Duration
	Cleanup             bool
	Output              string

	namespace string
	format    report.Format
	getter    cluster.Getter
	Streams   genericiooptions.IOStreams
}

// NewPrepOptions returns the defaults.
func NewPrepOptions(streams genericiooptions.IOStreams) *PrepOptions {
	return &PrepOptions{Streams: streams, Image: buildinfo.AgentImage(), Parallel: 10, Timeout: 5 * time.Minute}
}

const controlPlaneTaint = "node-role.kubernetes.io/control-plane"

// NewCmdPrep returns `kubectl gpu prep`.
func NewCmdPrep(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewPrepOptions(streams)
	cmd := &cobra.Command{
		Use:   "prep [NODE...] [-l SELECTOR | --all] [--apply [--yes]]",
		Short: "Check (and with --apply, prepare) GPU nodes through one-shot node-agent pods",
		Long: `Check GPU nodes the way the kubeadm and RKE2/K3s runbooks prepare them: NVIDIA GPUs on the
PCI bus, driver (and NVML), nouveau, Secure Boot, kernel headers, container toolkit,
containerd's config (SystemdCgroup, nvidia runtime; RKE2/K3s templates), kubelet cgroup
driver, kernel modules overlay/br_netfilter, sysctls, swap.

Each node runs the node agent once in a Job pinned to it (host root mounted read-only in
check mode), in namespace kubectl-gpu (created with the privileged Pod Security label);
the Jobs are removed at the end, on Ctrl-C and on timeout. What the agent found is left on
the node as gpu.kubectl-gpu.io/ annotations for 'kubectl gpu operator'.

Check mode changes nothing. --apply first shows the exact changes per node (file diffs and
commands), asks for confirmation (refuses without --yes when not at a terminal), applies
them — files written atomically with a backup beside them — and checks again. Container
runtimes are restarted only with --restart-runtime.

Nodes: the named ones, -l, --all, or by default the nodes that look like GPU nodes.
Exit codes: 0 every node ready; 1 a node is not ready; 2 bad input; 130 interrupted.`,
		Example: `  kubectl gpu prep
  kubectl gpu prep gpu-node-1 gpu-node-2 -o wide
  kubectl gpu prep --all --apply
  kubectl gpu prep -l pool=gpu --apply --yes --restart-runtime
  kubectl gpu prep --cleanup`,
		ValidArgsFunction: completion.GPUNodeNames(f),
		SilenceUsage:      true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(f, args); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&o.Selector, "selector", "l", "", "label selector of the nodes")
	fl.BoolVar(&o.All, "all", false, "every node, not only those that look like GPU nodes")
	fl.BoolVar(&o.Apply, "apply", false, "show the changes, ask, apply them and check again")
	fl.BoolVar(&o.Yes, "yes", false, "with --apply: do not ask for confirmation")
	fl.BoolVar(&o.RestartRuntime, "restart-runtime", false, "with --apply: restart containerd / rke2 / k3s when its config changed")
	fl.BoolVar(&o.UntaintControlPlane, "untaint-control-plane", false, "with --apply: remove the control-plane NoSchedule taint from the chosen nodes (single-node clusters)")
	fl.StringVar(&o.Image, "image", o.Image, "node-agent image (a mirror for air-gapped clusters)")
	fl.IntVar(&o.Parallel, "parallel", o.Parallel, "nodes checked at once")
	fl.DurationVar(&o.Timeout, "timeout", o.Timeout, "time for each phase (check, plan, apply)")
	fl.BoolVar(&o.Cleanup, "cleanup", false, "remove prep Jobs left by earlier runs, and do nothing else")
	fl.StringVarP(&o.Output, "output", "o", "", "output format: table, wide, json or yaml")
	return cmd
}

// Complete resolves the namespace and nodes.
func (o *PrepOptions) Complete(f cluster.Getter, args []string) error {
	o.Names, o.getter = args, f
	var err error
	o.namespace, err = cluster.NamespaceOr(f, nodepod.DefaultNamespace)
	return err
}

// Validate checks the flags.
func (o *PrepOptions) Validate() error {
	var err error
	if o.format, err = report.ParseFormat(o.Output, report.Table, report.Wide, report.JSON, report.YAML); err != nil {
		return err
	}
	switch {
	case o.Parallel <= 0:
		return cliexit.Usagef("--parallel must be at least 1")
	case o.Timeout <= 0:
		return cliexit.Usagef("--timeout must be positive")
	case !o.Apply && (o.Yes || o.RestartRuntime || o.UntaintControlPlane):
		return cliexit.Usagef("--yes, --restart-runtime and --untaint-control-plane only go with --apply")
	case len(o.Names) > 0 && o.All:
		return cliexit.Usagef("name nodes or pass --all, not both")
	}
	return nil
}

func (o *PrepOptions) config() *prep.Config {
	cfg := &prep.Config{Namespace: o.namespace, Names: o.Names, Selector: o.Selector, All: o.All, Image: o.Image,
		Parallel: o.Parallel, Timeout: o.Timeout, RestartRuntime: o.RestartRuntime}
	cfg.Progress = report.OnTerminal(o.Streams.ErrOut)
	return cfg
}

// Run checks (and applies).
func (o *PrepOptions) Run(ctx context.Context) error {
	cs, err := o.getter.Clientset()
	if err != nil {
		return err
	}
	if o.Cleanup {
		n, err := prep.Cleanup(ctx, cs, o.namespace)
		if err != nil {
			return err
		}
		fmt.Fprintf(o.Streams.ErrOut, "removed %d prep Jobs from namespace %s\n", n, o.namespace)
		return nil
	}
	cfg := o.config()
	nodes, err := prep.ChooseNodes(ctx, cs, cfg)
	if err != nil {
		return err
	}
	if err := nodepod.EnsureNamespace(ctx, cs, o.namespace, nodepod.PSAPrivileged); err != nil {
		return err
	}
	if !o.Apply {
		return o.finish(ctx, cs, "check", nodes, cfg)
	}
	plan, err := prep.RunAgents(ctx, cs, cfg, nodes, "plan")
	if err != nil {
		return err
	}
	planRep := prep.NewReport("plan", plan)
	changes := planRep.WriteChanges(o.Streams.ErrOut)
	untaint := o.untaintTargets(ctx, cs, nodes)
	for _, n := range untaint {
		fmt.Fprintf(o.Streams.ErrOut, "\n=== %s\n$ kubectl taint node %s %s:NoSchedule-\n", n, n, controlPlaneTaint)
		changes++
	}
	if changes == 0 {
		fmt.Fprintln(o.Streams.ErrOut, "nothing to change: every fixable check already passes")
		return o.print(planRep, nil)
	}
	if !o.Yes {
		if !report.IsTerminal(o.Streams.In) {
			return cliexit.Usagef("--apply changes nodes: pass --yes to confirm when not at a terminal (nothing was changed)")
		}
		fmt.Fprintf(o.Streams.ErrOut, "\nApply these changes to %d node(s)? [y/N] ", len(nodes))
		answer, _ := bufio.NewReader(o.Streams.In).ReadString('\n')
		if a := strings.TrimSpace(strings.ToLower(answer)); a != "y" && a != "yes" {
			return cliexit.Usagef("not confirmed: nothing was changed")
		}
	}
	for _, n := range untaint {
		if err := removeTaint(ctx, cs, n); err != nil {
			return err
		}
	}
	return o.finish(ctx, cs, "apply", nodes, cfg)
}

func (o *PrepOptions) finish(ctx context.Context, cs kubernetes.Interface, mode string, nodes []string, cfg *prep.Config) error {
	annotator := prep.NewAnnotator(ctx, cs)
	cfg.OnReport = annotator.Add
	results, err := prep.RunAgents(ctx, cs, cfg, nodes, mode)
	annotateErr := annotator.Wait()
	if err != nil {
		return err
	}
	return o.print(prep.NewReport(mode, results), annotateErr)
}

func (o *PrepOptions) print(r *prep.Report, annotateErr error) error {
	var err error
	switch o.format {
	case report.JSON:
		var b []byte
		b, err = json.MarshalIndent(r, "", "  ")
		if err == nil {
			_, err = fmt.Fprintf(o.Streams.Out, "%s\n", b)
		}
	default:
		err = report.Print(o.Streams.Out, o.format, r)
		if err == nil && (o.format == report.Table || o.format == report.Wide) {
			r.WriteFindings(o.Streams.Out)
		}
	}
	if err != nil {
		return err
	}
	if annotateErr != nil {
		return annotateErr
	}
	if r.Summary.Failed() {
		return cliexit.Silent{Code: cliexit.Failures}
	}
	return nil
}

func (o *PrepOptions) untaintTargets(ctx context.Context, cs kubernetes.Interface, nodes []string) []string {
	if !o.UntaintControlPlane {
		return nil
	}
	var out []string
	for _, n := range nodes {
		node, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			continue
		}
		for _, t := range node.Spec.Taints {
			if t.Key == controlPlaneTaint && t.Effect == corev1.TaintEffectNoSchedule {
				out = append(out, n)
			}
		}
	}
	return out
}

func removeTaint(ctx context.Context, cs kubernetes.Interface, name string) error {
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return cluster.APIError("get node "+name, err)
	}
	var keep []corev1.Taint
	for _, t := range node.Spec.Taints {
		if !(t.Key == controlPlaneTaint && t.Effect == corev1.TaintEffectNoSchedule) {
			keep = append(keep, t)
		}
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"taints": keep}})
	if _, err := cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return cluster.APIError("remove the control-plane taint of node "+name, err)
	}
	return nil
}
