package operator

import (
	"context"
	"fmt"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
)

// InstallOptions are the flags of `operator install` and `operator upgrade`.
type InstallOptions struct {
	helmflags.ChartOptions
	Wait        bool
	Timeout     time.Duration
	Atomic      bool
	DryRun      bool
	ReuseValues bool
	ResetValues bool
	LabelNodes  bool

	atomicSet bool
}

// NewCmdInstall returns `operator install` (verb "install") or `operator upgrade`.
func NewCmdInstall(f cluster.Getter, streams genericiooptions.IOStreams, verb string) *cobra.Command {
	return newCmdInstall(f, helmflags.Release{Streams: streams, NewClient: op.NewClient}, verb)
}

func newCmdInstall(f cluster.Getter, ro helmflags.Release, verb string) *cobra.Command {
	o := &InstallOptions{ChartOptions: helmflags.ChartOptions{Release: ro}, Timeout: defaultTimeout}
	cmd := &cobra.Command{
		Use:   verb,
		Short: map[string]string{"install": "Install the GPU Operator, or upgrade it when installed", "upgrade": "Upgrade the GPU Operator, or install it when missing"}[verb],
		Long: `Install or upgrade the NVIDIA GPU Operator (both work as 'helm upgrade --install').
The namespace (default gpu-operator) is created with the privileged Pod Security label when
missing. A first install is atomic unless --atomic=false: a failed install is removed
rather than left half-installed. --wait then follows every component until ClusterPolicy
cluster-policy (GPUCluster gpu-cluster with --dra) is ready or --timeout.

--dra installs the GPU Operator's DRA stack (a GPUCluster: NVIDIA's DRA driver publishes the
GPUs as DeviceClasses gpu.nvidia.com and mig.nvidia.com) in place of the ClusterPolicy, with
the chart's own keys, once the cluster meets its prerequisites; otherwise it refuses with
every unmet one named and changes nothing.`,
		Example: `  kubectl gpu operator install --dry-run
  kubectl gpu operator install --wait
  kubectl gpu operator install --dra --wait
  kubectl gpu operator upgrade --version v26.7.0 --set dcgmExporter.enabled=false
  kubectl gpu operator install --chart ./gpu-operator-v26.7.0.tgz   # air-gapped`,
		Args: cobra.NoArgs,
		RunE: runVerb(f, o, func(cmd *cobra.Command, args []string) {
			o.atomicSet = cmd.Flags().Changed("atomic")
		}),
	}
	o.ChartFlags(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&o.Wait, "wait", false, "wait until ClusterPolicy is ready (progress per component), or --timeout")
	fl.DurationVar(&o.Timeout, "timeout", o.Timeout, "time to wait for Helm operations and --wait")
	fl.BoolVar(&o.Atomic, "atomic", false, "roll back (upgrade) or remove (install) on failure; default on for a first install")
	fl.BoolVar(&o.DryRun, "dry-run", false, "print the values with their reasons and the manifest summary; change nothing")
	fl.BoolVar(&o.ReuseValues, "reuse-values", false, "upgrade: reuse the release's values and merge these on top")
	fl.BoolVar(&o.ResetValues, "reset-values", false, "upgrade: reset to the chart's values, then apply these")
	fl.BoolVar(&o.LabelNodes, "label-nodes", false, "apply the node labels the derived values need (mixed clusters)")
	return cmd
}

// Complete resolves the namespace: --namespace when given, else gpu-operator.
func (o *InstallOptions) Complete(f cluster.Getter) error { return o.Release.Complete(f) }

// Validate checks the flags.
func (o *InstallOptions) Validate() error {
	switch {
	case o.ReuseValues && o.ResetValues:
		return cliexit.Usagef("--reuse-values and --reset-values exclude each other")
	case o.Timeout <= 0:
		return cliexit.Usagef("--timeout must be positive")
	}
	return nil
}

// Run installs or upgrades the release.
func (o *InstallOptions) Run(ctx context.Context) error {
	c, ch, doc, err := o.ChartValues(ctx)
	if err != nil {
		return err
	}
	rel, err := c.Install(ctx, ch, doc, op.InstallRequest{
		ReleaseName: o.ReleaseName, Wait: o.Wait, Timeout: o.Timeout, Atomic: o.Atomic, AtomicDefault: !o.atomicSet,
		DryRun: o.DryRun, ReuseValues: o.ReuseValues, ResetValues: o.ResetValues, LabelNodes: o.LabelNodes,
	})
	if err != nil {
		return err
	}
	if o.DryRun {
		if err := doc.WriteText(o.Streams.Out); err != nil {
			return err
		}
		fmt.Fprintf(o.Streams.Out, "\n# Manifest summary (dry run, nothing changed):\n%s", op.ManifestSummary(rel))
		return nil
	}
	fmt.Fprintf(o.Streams.Out, "release %s revision %d %s: chart %s (app %s) in namespace %s\n", rel.Name, rel.Version, rel.Info.Status,
		ch.Metadata.Name+"-"+ch.Metadata.Version, ch.Metadata.AppVersion, o.Namespace)
	if !o.Wait {
		return nil
	}
	st, err := c.WaitReady(ctx, o.ReleaseName, o.Timeout)
	if st != nil && err != nil {
		_ = st.WriteText(o.Streams.Out)
		return err
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Streams.Out, "GPU Operator ready: %s is ready\n", st.ReadyWhat())
	return nil
}
