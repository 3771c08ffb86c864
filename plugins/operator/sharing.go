package operator

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// SharingOptions are the flags of `operator sharing`.
type SharingOptions struct {
	helmflags.Release
	Strategy  string
	Replicas  int
	Selector  string
	Rename    bool
	ConfigMap string
	DryRun    bool
	Output    string
	format    report.Format
}

// NewCmdSharing returns `operator sharing`.
func NewCmdSharing(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdSharing(f, helmflags.Release{Streams: streams, NewClient: op.NewClient})
}

func newCmdSharing(f cluster.Getter, ro helmflags.Release) *cobra.Command {
	o := &SharingOptions{Release: ro}
	cmd := &cobra.Command{
		Use:   "sharing time-slicing|mps --replicas N [-l SELECTOR]",
		Short: "Share GPUs through the device plugin: time-slicing or MPS, N replicas per GPU",
		Long: `Write the device plugin's sharing config (its own config format, version v1) into a
ConfigMap of the release namespace, as profile "<strategy>-<N>" (other profiles in the
ConfigMap are kept), and point ClusterPolicy cluster-policy at it (spec.devicePlugin.config).
Without -l the profile is every node's default; with -l only the selected GPU nodes get it,
through the label nvidia.com/device-plugin.config. The device plugin then advertises N
nvidia.com/gpu per GPU (nvidia.com/gpu.shared with --rename).

Refused: MPS on nodes whose GPUs are split with MIG, a selector that matches no GPU node, a
cluster without the ClusterPolicy. Keys of existing profiles that the device plugin does
not read (such as renameByDefault under flags) are warned about. --dry-run prints the
ConfigMap, the ClusterPolicy patch and the node labels, and changes nothing.

A later 'kubectl gpu operator upgrade' keeps this only with
--set devicePlugin.config.name=<ConfigMap> (and .default=<profile>).`,
		Example: `  kubectl gpu operator sharing time-slicing --replicas 4 --dry-run
  kubectl gpu operator sharing mps --replicas 2 -l pool=inference`,
		Args: cobra.ExactArgs(1),
		RunE: verb.RunE(f, o, func(cmd *cobra.Command, args []string) {
			o.Strategy = args[0]
		}),
		ValidArgs: []string{gpusoftware.SharingTimeSlicing, gpusoftware.SharingMPS},
	}
	fl := cmd.Flags()
	fl.IntVar(&o.Replicas, "replicas", 0, "replicas per GPU (at least 2)")
	fl.StringVarP(&o.Selector, "selector", "l", "", "GPU nodes that get this profile (default: every node)")
	fl.BoolVar(&o.Rename, "rename", false, "advertise the shared GPUs as nvidia.com/gpu.shared (renameByDefault)")
	fl.StringVar(&o.ConfigMap, "config-map", op.DefaultSharingConfigMap, "the device plugin's ConfigMap in the release namespace")
	fl.BoolVar(&o.DryRun, "dry-run", false, "print what would change; change nothing")
	fl.StringVarP(&o.Output, "output", "o", "", "output format: table, json or yaml")
	return cmd
}

// Validate checks the arguments.
func (o *SharingOptions) Validate() error {
	var err error
	if o.format, err = report.ParseFormat(o.Output, report.Table, report.JSON, report.YAML); err != nil {
		return err
	}
	switch {
	case o.Strategy != gpusoftware.SharingTimeSlicing && o.Strategy != gpusoftware.SharingMPS:
		return cliexit.Usagef("sharing strategy %q: want time-slicing or mps", o.Strategy)
	case o.Replicas < 2:
		return cliexit.Usagef("--replicas %d: want at least 2 replicas per GPU", o.Replicas)
	}
	return nil
}

// Run writes the config (or shows it).
func (o *SharingOptions) Run(ctx context.Context) error {
	c, err := o.Client()
	if err != nil {
		return err
	}
	plan, err := c.Sharing(ctx, op.SharingRequest{Strategy: o.Strategy, Replicas: o.Replicas, Selector: o.Selector,
		Rename: o.Rename, ConfigMap: o.ConfigMap, DryRun: o.DryRun})
	if err != nil {
		return err
	}
	for _, w := range plan.Warnings {
		fmt.Fprintf(o.Streams.ErrOut, "warning: %s\n", w)
	}
	return report.Print(o.Streams.Out, o.format, plan)
}

// MIGOptions are the flags of `operator mig`.
type MIGOptions struct {
	helmflags.Release
	Profile  string
	Selector string
	DryRun   bool
	Wait     bool
	Timeout  time.Duration
	Output   string
	format   report.Format
}

// NewCmdMIG returns `operator mig`.
func NewCmdMIG(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdMIG(f, helmflags.Release{Streams: streams, NewClient: op.NewClient})
}

func newCmdMIG(f cluster.Getter, ro helmflags.Release) *cobra.Command {
	o := &MIGOptions{Release: ro, Timeout: helmflags.DefaultTimeout}
	cmd := &cobra.Command{
		Use:   "mig PROFILE -l SELECTOR [--wait]",
		Short: "Ask the GPU Operator's MIG manager for a MIG layout on the selected GPU nodes",
		Long: `Label the selected GPU nodes nvidia.com/mig.config=PROFILE; the GPU Operator's MIG manager
then repartitions their GPUs (GPU workloads on them end; the node may be drained or
rebooted) and reports its progress in nvidia.com/mig.config.state, which --wait follows
until every node says success (exit 0), one says failed, or --timeout (exit 1).

PROFILE must be a layout of the MIG manager's ConfigMap (default-mig-parted-config in the
release namespace), such as all-disabled, all-balanced or all-1g.10gb. -l is required.`,
		Example: `  kubectl gpu operator mig all-1g.10gb -l nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB --wait
  kubectl gpu operator mig all-disabled -l pool=training`,
		Args: cobra.ExactArgs(1),
		RunE: verb.RunE(f, o, func(cmd *cobra.Command, args []string) {
			o.Profile = args[0]
		}),
	}
	fl := cmd.Flags()
	fl.StringVarP(&o.Selector, "selector", "l", "", "GPU nodes to repartition (required)")
	fl.BoolVar(&o.DryRun, "dry-run", false, "print the nodes that would be labelled; change nothing")
	fl.BoolVar(&o.Wait, "wait", false, "follow nvidia.com/mig.config.state until every node says success")
	fl.DurationVar(&o.Timeout, "timeout", o.Timeout, "time for --wait")
	fl.StringVarP(&o.Output, "output", "o", "", "output format: table, json or yaml")
	return cmd
}

// Validate checks the flags.
func (o *MIGOptions) Validate() error {
	var err error
	if o.format, err = report.ParseFormat(o.Output, report.Table, report.JSON, report.YAML); err != nil {
		return err
	}
	if o.Timeout <= 0 {
		return cliexit.Usagef("--timeout must be positive")
	}
	return nil
}

// Run labels (and waits).
func (o *MIGOptions) Run(ctx context.Context) error {
	c, err := o.Client()
	if err != nil {
		return err
	}
	plan, err := c.MIG(ctx, op.MIGRequest{Profile: o.Profile, Selector: o.Selector, DryRun: o.DryRun})
	if err != nil {
		return err
	}
	var waitErr error
	if o.Wait && !o.DryRun {
		waitErr = c.WaitMIG(ctx, plan, o.Timeout)
		if waitErr != nil && cliexit.Code(waitErr, false) == cliexit.Interrupted {
			return waitErr
		}
	}
	if err := report.Print(o.Streams.Out, o.format, plan); err != nil {
		return err
	}
	return waitErr
}
