// Package doctor is `kubectl gpu doctor`: why a GPU node does not serve GPUs.
package doctor

import (
	"context"
	"errors"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"

	"github.com/kubectl-gpu/kubectl-gpu/common/buildinfo"
	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/doctor"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/completion"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// DynamicFunc makes the dynamic client (the ClusterPolicy and GPUCluster); command tests give
// a fake one.
type DynamicFunc func(g cluster.Getter) (dynamic.Interface, error)

// Options are the flags of `kubectl gpu doctor`.
type Options struct {
	Request doctor.Request
	Output  string
	// NoAgent reads the host links from prep's last record instead of running the agent.
	NoAgent bool
	Agent   doctor.Agent

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
	o := &Options{Streams: streams, dynamic: dyn, Agent: doctor.Agent{Image: buildinfo.AgentImage(), Timeout: 2 * time.Minute}}
	cmd := &cobra.Command{
		Use:   "doctor [NODE...] [-l SELECTOR]",
		Short: "Say why a GPU node does not serve GPUs: each link from the GPUs up to the scheduler, the first broken one and its fix",
		Long: `Walk, for every GPU node (or the nodes named or selected), the chain that makes its GPUs
usable by pods, and give each link its state:

  hardware    GPUs on the PCI bus against GPUs NVML sees; their health (uncorrectable ECC,
              row remapping, retired pages, slowdowns); the XIDs the driver logged since boot,
              each classed by NVIDIA's XID catalog
  driver      the host's driver (loaded module against the installed libraries, a newer kernel
              without the module, nouveau) or the operator's driver container; a failed upgrade
  toolkit     the NVIDIA Container Toolkit on the host or the operator's toolkit container; the
              CDI spec naming every GPU; the /dev/char links
  containerd  the config containerd loads (with its imported drop-ins, merged as the installed
              containerd merges them): the nvidia runtime, runc's cgroup driver against the
              kubelet's; a drop-in the config no longer imports
  software    the device plugin or DRA kubelet plugin pod on the node, its state and the NVML or
              CDI line of its log; the operator's validator and which init step it is stuck at;
              GPU feature discovery's labels
  kubernetes  the node Ready and schedulable, GPUs advertised (extended resource or DRA) against
              the hardware, taints, GPU pods Pending for this node with the scheduler's reason

A verdict per node — Healthy, Degraded (serves GPUs, with a warning), Unschedulable, Faulty
(hardware) — and for each node not healthy the first broken link with what to do (the kubectl
gpu command where one exists) and its step on the remediation ladder, least disruptive first
(watch: a hardware slowdown; configure what is missing; restart the component; drain and reset
the GPU; reboot; service the hardware). JSON carries each step's token: none, watch, configure,
restart, reset, reboot, service.

doctor changes no node. It reads the cluster in a fixed number of list calls, and runs the
node agent's read-only check on each Ready GPU node (prep's check: one Job per node in
namespace kubectl-gpu, unprivileged, the host mounted read-only; removed when done, on Ctrl-C
and on timeout). The agent reads the kernel log from /var/log/kern.log or /var/log/messages
(a host that keeps it only in the journal: XIDs not read). --no-agent reads the host links
from what 'kubectl gpu prep' last recorded on each node instead (no Job; the read-only
ClusterRole suffices). A node whose agent does not report is diagnosed that way too, with a
note. Exit 0 when every node is healthy, 1 when any is not, 2 usage, 130 interrupted.`,
		Example: `  kubectl gpu doctor
  kubectl gpu doctor gpu-node-7
  kubectl gpu doctor -l nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3 -o json`,
		ValidArgsFunction: completion.GPUNodeNames(f),
		SilenceUsage:      true,
		RunE:              verb.RunE(f, o, nil),
	}
	cmd.Flags().StringVarP(&o.Request.Selector, "selector", "l", "", "label selector of the nodes to diagnose")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: table, json or yaml")
	cmd.Flags().BoolVar(&o.NoAgent, "no-agent", false, "do not run the node agent: read the host links from what 'kubectl gpu prep' last recorded")
	cmd.Flags().StringVar(&o.Agent.Image, "image", o.Agent.Image, "node-agent image (a mirror for air-gapped clusters)")
	cmd.Flags().DurationVar(&o.Agent.Timeout, "timeout", o.Agent.Timeout, "time for the node agent on each node")
	cmd.Flags().IntVar(&o.Agent.Parallel, "parallel", 0, "nodes whose agent runs at once (default 100)")
	return cmd
}

// Complete takes the node names and the agent's namespace (--namespace, else kubectl-gpu).
func (o *Options) Complete(f cluster.Getter, args []string) error {
	o.Request.Names, o.getter = args, f
	ns, err := cluster.NamespaceOr(f, nodepod.DefaultNamespace)
	if err != nil {
		return err
	}
	o.Agent.Namespace = ns
	return nil
}

// Validate checks the flags.
func (o *Options) Validate() error {
	var err error
	if o.format, err = report.ParseFormat(o.Output, report.Table, report.JSON, report.YAML); err != nil {
		return err
	}
	if o.Agent.Timeout <= 0 {
		return cliexit.Usagef("--timeout must be positive")
	}
	if o.Agent.Parallel < 0 {
		return cliexit.Usagef("--parallel must not be negative")
	}
	if !o.NoAgent {
		a := o.Agent
		a.Progress = o.Streams.ErrOut
		o.Request.Agent = &a
	}
	return nil
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
	var ae *doctor.AgentError
	if errors.As(err, &ae) && cliexit.Code(err, false) == cliexit.Usage {
		return cliexit.Usagef("%v; the node agent needs docs/rbac/doctor-agent.yaml's permissions, or pass --no-agent to diagnose from the cluster and prep's last record", err)
	}
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
