package deviceplugin

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// UninstallOptions are the flags of `device-plugin uninstall`.
type UninstallOptions struct {
	helmflags.Release
	DCGMReleaseName string
	Yes             bool
	Timeout         time.Duration
}

func newCmdUninstall(f cluster.Getter, ro helmflags.Release) *cobra.Command {
	o := &UninstallOptions{Release: ro}
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove the device plugin's and DCGM exporter's releases; nodes and RuntimeClass nvidia are left as they are",
		Args:  cobra.NoArgs,
		RunE:  verb.RunE(f, o, nil),
	}
	o.ReleaseFlag(cmd)
	cmd.Flags().StringVar(&o.DCGMReleaseName, "dcgm-release-name", dp.DCGMReleaseName, "the DCGM exporter's Helm release name (removed when installed)")
	cmd.Flags().BoolVar(&o.Yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", helmflags.DefaultTimeout, "time for Helm's uninstall")
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
		if err := report.Confirm(o.Streams.In, o.Streams.ErrOut, fmt.Sprintf("Remove releases %s and %s (when installed) from namespace %s? GPU nodes stop advertising GPUs.", o.ReleaseName, o.DCGMReleaseName, o.Namespace),
			"uninstall removes the device plugin from the cluster: pass --yes to confirm when not at a terminal"); err != nil {
			return err
		}
	}
	c, err := o.Client()
	if err != nil {
		return err
	}
	removed, err := dp.Uninstall(ctx, c.Client, []string{o.ReleaseName, o.DCGMReleaseName}, o.Timeout)
	for _, r := range removed {
		fmt.Fprintf(o.Streams.Out, "release %s uninstalled from namespace %s\n", r, o.Namespace)
	}
	return err
}
