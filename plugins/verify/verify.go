// Package verify is `kubectl gpu verify`.
package verify

import (
	"context"
	"os"
	"strconv"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/completion"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// VerifyOptions are the flags of `kubectl gpu verify`.
type VerifyOptions struct {
	Names        []string
	Selector     string
	GPUs         string
	Resource     string
	Image        string
	RuntimeClass string
	Claim        string
	TolerateAll  bool
	Parallel     int
	Timeout      time.Duration
	Keep         bool
	Cleanup      bool
	Output       string
	JUnitFile    string

	namespace string
	format    report.Format
	cfg       verify.Request
	getter    cluster.Getter
	Streams   genericiooptions.IOStreams
}

// NewVerifyOptions returns the defaults.
func NewVerifyOptions(streams genericiooptions.IOStreams) *VerifyOptions {
	return &VerifyOptions{
		Streams:      streams,
		GPUs:         "1",
		Resource:     "nvidia.com/gpu",
		Image:        verify.DefaultImage,
		RuntimeClass: verify.RuntimeAuto,
		Parallel:     50,
		Timeout:      verify.DefaultTimeout,
	}
}

// NewCmdVerify returns `kubectl gpu verify`.
func NewCmdVerify(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewVerifyOptions(streams)
	cmd := &cobra.Command{
		Use:   "verify [NODE...] [-l SELECTOR] [--gpus N|all]",
		Short: "Run the CUDA vectoradd proof on every GPU node and say why a node fails",
		Long: `Run NVIDIA's CUDA vectoradd sample on every GPU node (nodes with allocatable
nvidia.com/gpu, or the --resource given), one pod per node, all at once, and report per
node whether it printed "Test PASSED" — or why not: unschedulable (not enough free GPUs,
taints), image pull, the nvidia runtime missing in containerd, a CUDA error in the log, a
deadline, a lost node.

The pods are unprivileged (no host access, read-only root filesystem, all capabilities
dropped), pinned to their node by node affinity, in the namespace --namespace (default
kubectl-gpu, created when missing), labelled app.kubernetes.io/managed-by=kubectl-gpu, and
deleted at the end — also on Ctrl-C and on timeout — unless --keep.

--runtime-class auto uses the RuntimeClass "nvidia" when it exists and none when it does not
(the GPU Operator creates none in CDI / NRI mode).

Each node is asked the way it serves GPUs (--claim auto): through the device plugin's
extended resource where the node has it, else through a DRA claim where NVIDIA's DRA driver
(gpu.nvidia.com) publishes the node's GPUs in ResourceSlices: the run makes a
ResourceClaimTemplate on DeviceClass gpu.nvidia.com (mig.nvidia.com with the profile of a
--resource nvidia.com/mig-*), removed with the pods (and by --cleanup). On a node whose GPUs
are time-sliced or shared through MPS, --gpus counts replicas as the scheduler does, and a
pass proves that the pod reached a GPU, not that it is isolated.

Ctrl-C before every node has a result: exit 130, nothing on stdout. After: the report is
printed with its own exit code. Either way the pods are removed first (unless --keep).
Exit codes: 0 every node passed; 1 a node failed, or there is no GPU node; 2 bad input;
130 interrupted.`,
		Example: `  kubectl gpu verify
  kubectl gpu verify gpu-node-1 --gpus all
  kubectl gpu verify --claim dra --gpus 2
  kubectl gpu verify -l nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3 -o junit > verify.xml
  kubectl gpu verify --image registry.example.com/nvidia/cuda-sample:vectoradd-cuda12.5.0
  kubectl gpu verify --cleanup`,
		ValidArgsFunction: completion.GPUNodeNames(f),
		SilenceUsage:      true,
		RunE:              verb.RunE(f, o, nil),
	}
	fl := cmd.Flags()
	fl.StringVarP(&o.Selector, "selector", "l", "", "label selector of the nodes to verify")
	fl.StringVar(&o.GPUs, "gpus", o.GPUs, `GPUs per pod: a number, or "all" for each node's allocatable count`)
	fl.StringVar(&o.Resource, "resource", o.Resource, "GPU resource to ask for, such as nvidia.com/mig-1g.10gb")
	fl.StringVar(&o.Image, "image", o.Image, "vectoradd image (a mirror of NVIDIA's for air-gapped clusters)")
	fl.StringVar(&o.RuntimeClass, "runtime-class", o.RuntimeClass, `RuntimeClass: "auto", "none" or a name`)
	fl.StringVar(&o.Claim, "claim", string(verify.ClaimAuto), `how pods ask for GPUs: "auto" (the device plugin's resource where a node has it, else a DRA claim where DRA publishes its GPUs), "device-plugin" or "dra"`)
	fl.BoolVar(&o.TolerateAll, "tolerate-all", false, "tolerate every taint, not only nvidia.com/gpu")
	fl.IntVar(&o.Parallel, "parallel", o.Parallel, "pods created at once")
	fl.DurationVar(&o.Timeout, "timeout", o.Timeout, "time for the whole run; pods still going then fail as timed out")
	fl.BoolVar(&o.Keep, "keep", false, "keep the pods for inspection (remove them later with --cleanup)")
	fl.BoolVar(&o.Cleanup, "cleanup", false, "remove verify pods left by earlier runs, and do nothing else")
	fl.StringVarP(&o.Output, "output", "o", "", "output format: table, wide, json, yaml or junit")
	fl.StringVar(&o.JUnitFile, "junit-file", "", "also write the result as JUnit XML to this file")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "wide", "json", "yaml", "junit"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// Complete fills the run's configuration from the flags.
func (o *VerifyOptions) Complete(f cluster.Getter, args []string) error {
	o.Names = args
	o.getter = f
	var err error
	o.namespace, err = cluster.NamespaceOr(f, nodepod.DefaultNamespace)
	return err
}

// Validate checks the flags before anything touches the cluster.
func (o *VerifyOptions) Validate() error {
	var err error
	if o.format, err = report.ParseFormat(o.Output, report.Table, report.Wide, report.JSON, report.YAML, report.JUnit); err != nil {
		return err
	}
	var gpus int64
	if o.GPUs != "all" {
		gpus, err = strconv.ParseInt(o.GPUs, 10, 64)
		if err != nil || gpus <= 0 {
			return cliexit.Usagef(`--gpus %q: want a number of GPUs of at least 1, or "all"`, o.GPUs)
		}
	}
	switch verify.Claim(o.Claim) {
	case verify.ClaimAuto, verify.ClaimDevicePlugin, verify.ClaimDRA:
	default:
		return cliexit.Usagef(`--claim %q: want "auto", "device-plugin" or "dra"`, o.Claim)
	}
	if !inventory.IsGPUResource(corev1.ResourceName(o.Resource)) {
		return cliexit.Usagef("--resource %q is not an NVIDIA GPU resource (nvidia.com/gpu, nvidia.com/gpu.shared or nvidia.com/mig-*)", o.Resource)
	}
	if o.Parallel <= 0 {
		return cliexit.Usagef("--parallel must be at least 1")
	}
	if o.Timeout <= 0 {
		return cliexit.Usagef("--timeout must be positive")
	}
	if err := validateImage(o.Image); err != nil {
		return err
	}
	o.cfg = verify.Request{
		Namespace: o.namespace, Names: o.Names, Selector: o.Selector, GPUs: gpus,
		Resource: corev1.ResourceName(o.Resource), Image: o.Image, RuntimeClass: o.RuntimeClass,
		TolerateAll: o.TolerateAll, Parallel: o.Parallel, Timeout: o.Timeout, Keep: o.Keep,
		Claim: verify.Claim(o.Claim), Warn: o.Streams.ErrOut,
	}
	o.cfg.Progress = report.OnTerminal(o.Streams.ErrOut)
	return nil
}

// Run verifies the nodes and prints the report.
func (o *VerifyOptions) Run(ctx context.Context) error {
	cs, err := o.getter.Clientset()
	if err != nil {
		return err
	}
	if o.Cleanup {
		return report.Removed(o.Streams.ErrOut, "verify pods", o.namespace)(verify.Cleanup(ctx, cs, o.namespace))
	}
	plan, err := verify.Prepare(ctx, cs, &o.cfg)
	if err != nil {
		return err
	}
	rep, err := verify.Run(ctx, cs, &o.cfg, plan)
	if err != nil {
		return err
	}
	if o.JUnitFile != "" {
		if err := writeJUnitFile(o.JUnitFile, rep); err != nil {
			return err
		}
	}
	switch o.format {
	case report.JUnit:
		err = rep.WriteJUnit(o.Streams.Out)
	default:
		err = report.Print(o.Streams.Out, o.format, rep)
		if err == nil && (o.format == report.Table || o.format == report.Wide) {
			rep.WriteSummary(o.Streams.Out)
		}
	}
	if err != nil {
		return err
	}
	if rep.Summary.Failed > 0 {
		return cliexit.Silent{Code: cliexit.Failures}
	}
	return nil
}

func writeJUnitFile(path string, rep *verify.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return cliexit.Usagef("cannot write --junit-file: %w", err)
	}
	if err := rep.WriteJUnit(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
