// Package doctor is `kubectl gpu doctor`: why a GPU node does not serve GPUs.
package doctor

import (
	"context"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/doctor"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/completion"
)

// DynamicFunc makes the dynamic client (the ClusterPolicy and GPUCluster); command tests give
// a fake one.
type DynamicFunc func(g cluster.Getter) (dynamic.Interface, error)

// Options are the flags of `kubectl gpu doctor`.
type Options struct {
	Request doctor.Request
	Output  string

	format  report.Format
	getter  cluster.Getter
	dynamic DynamicFunc
	Streams genericiooptions.IOStreams
}

// NewCmdDoctor returns `kubectl gpu doctor`.
func NewCmdDoctor(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdDoctor(f, streams, func(g cluster.Getter) (dynamic.Interface, error) {
		cfg, err := g.ToRESTConfig()
		if err != nil {
			return nil, err
		}
		return dynamic.NewForConfig(cfg)
	})
}

func newCmdDoctor(f cluster.Getter, streams genericiooptions.IOStreams, dyn DynamicFunc) *cobra.Command {
	o := &Options{Streams: streams, dynamic: dyn}
	cmd := &cobra.Command{
		Use:   "doctor [NODE...] [-l SELECTOR]",
		Short: "Say why a GPU node does not serve GPUs: each link from the GPUs up to the scheduler, the first broken one and its fix",
		Long: `Walk, for every GPU node (or the nodes named or selected), the chain that makes its GPUs
usable by pods, and give each link its state:

  hardware    GPUs on the PCI bus (prep) against GPUs NVML sees (GPU feature discovery)
  driver      the host's driver (prep) or the operator's driver container; a failed driver upgrade
  toolkit     the NVIDIA Container Toolkit on the host (prep) or the operator's toolkit container
  containerd  containerd's nvidia runtime (prep), default runtime and CDI
  software    the device plugin or DRA kubelet plugin pod on the node, its state and the NVML or
              CDI line of its log; the operator's validator and which init step it is stuck at;
              GPU feature discovery's labels
  kubernetes  the node Ready and schedulable, GPUs advertised (extended resource or DRA) against
              the hardware, taints, GPU pods Pending for this node with the scheduler's reason

A verdict per node — Healthy, Degraded (serves GPUs, with a warning), Unschedulable, Faulty
(hardware) — and for each node not healthy the first broken link with what to do (the kubectl
gpu command where one exists) and its step on the remediation ladder (restart the component,
drain and reset the GPU, reboot, service the hardware; configure where something is missing).

doctor only reads: the cluster in a fixed number of list calls, and what 'kubectl gpu prep'
recorded on each node (run prep first for the host links). Exit 0 when every node is healthy,
1 when any is not, 2 usage.`,
		Example: `  kubectl gpu doctor
  kubectl gpu doctor gpu-node-7
  kubectl gpu doctor -l nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3 -o json`,
		ValidArgsFunction: completion.GPUNodeNames(f),
		SilenceUsage:      true,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Request.Names, o.getter = args, f
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.Request.Selector, "selector", "l", "", "label selector of the nodes to diagnose")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: table, json or yaml")
	return cmd
}

// Validate checks the flags.
func (o *Options) Validate() error {
	var err error
	o.format, err = report.ParseFormat(o.Output, report.Table, report.JSON, report.YAML)
	return err
}

// Run diagnoses and prints; exit 1 when a node is not healthy.
func (o *Options) Run(ctx context.Context) error {
	cs, err := o.getter.Clientset()
	if err != nil {
		return err
	}
	dyn, err := o.dynamic(o.getter)
	if err != nil {
		return err
	}
	r, err := doctor.Diagnose(ctx, cs, dyn, o.Request)
	if err != nil {
		return err
	}
	if err := report.Print(o.Streams.Out, o.format, r); err != nil {
		return err
	}
	if !r.Healthy() {
		return cliexit.Silent{Code: cliexit.Failures}
	}
	return nil
}
