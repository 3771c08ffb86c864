package operator

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// UninstallOptions are the flags of `operator uninstall`.
type UninstallOptions struct {
	helmflags.Release
	KeepCRDs bool
	Yes      bool
	Timeout  time.Duration
}

// NewCmdUninstall returns `operator uninstall`.
func NewCmdUninstall(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdUninstall(f, helmflags.Release{Streams: streams, NewClient: op.NewClient})
}

func newCmdUninstall(f cluster.Getter, ro helmflags.Release) *cobra.Command {
	o := &UninstallOptions{Release: ro}
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove the GPU Operator release (and with --keep-crds=false its CRDs); nodes are untouched",
		Args:  cobra.NoArgs,
		RunE:  verb.RunE(f, o, nil),
	}
	o.ReleaseFlag(cmd)
	cmd.Flags().BoolVar(&o.KeepCRDs, "keep-crds", true, "keep the operator's CRDs (ClusterPolicy, NVIDIADriver, NFD); --keep-crds=false removes them")
	cmd.Flags().BoolVar(&o.Yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", helmflags.DefaultTimeout, "time for Helm's uninstall and its hooks")
	return cmd
}

// Validate checks the flags.
func (o *UninstallOptions) Validate() error {
	if o.Timeout <= 0 {
		return cliexit.Usagef("--timeout must be positive")
	}
	return nil
}

// Run asks, then uninstalls.
func (o *UninstallOptions) Run(ctx context.Context) error {
	if !o.Yes {
		if err := report.Confirm(o.Streams.In, o.Streams.ErrOut, fmt.Sprintf("Remove release %s from namespace %s?", o.ReleaseName, o.Namespace),
			"uninstall removes the GPU Operator from the cluster: pass --yes to confirm when not at a terminal"); err != nil {
			return err
		}
	}
	c, err := o.Client()
	if err != nil {
		return err
	}
	crds, err := c.Uninstall(ctx, o.ReleaseName, o.Timeout, !o.KeepCRDs)
	if len(crds) > 0 || err == nil {
		fmt.Fprintf(o.Streams.Out, "release %s uninstalled from namespace %s\n", o.ReleaseName, o.Namespace)
	}
	for _, n := range crds {
		fmt.Fprintf(o.Streams.Out, "CRD %s removed\n", n)
	}
	return err
}
