package deviceplugin

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// StatusOptions are the flags of `device-plugin status`.
type StatusOptions struct {
	helmflags.Release
	DCGMReleaseName string
	Output          string
	format          report.Format
}

func newCmdStatus(f cluster.Getter, ro helmflags.Release) *cobra.Command {
	o := &StatusOptions{Release: ro}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Report the releases, their DaemonSets and, per GPU node, each pod and the GPUs it advertises; exit 1 when not ready",
		Long: `Report the device plugin's (and DCGM exporter's) releases, their DaemonSets and, for every GPU
node, the pod of each DaemonSet there with what holds it (an image that cannot be pulled, a
crash with the log line that says why — NVML, CDI — or the scheduler's reason) and the GPUs the
node advertises. Exit 0 when every GPU node serves GPUs, 1 naming the first that does not.`,
		Args: cobra.NoArgs,
		RunE: verb.RunE(f, o, nil),
	}
	o.ReleaseFlag(cmd)
	cmd.Flags().StringVar(&o.DCGMReleaseName, "dcgm-release-name", dp.DCGMReleaseName, "the DCGM exporter's Helm release name (reported when installed)")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: table, json or yaml")
	return cmd
}

// Validate checks the flags.
func (o *StatusOptions) Validate() error {
	var err error
	o.format, err = report.ParseFormat(o.Output, report.Table, report.JSON, report.YAML)
	return err
}

// Run prints the status; exit 1 when not ready.
func (o *StatusOptions) Run(ctx context.Context) error {
	c, err := o.Client()
	if err != nil {
		return err
	}
	st, err := dp.CollectStatus(ctx, c.Client, []string{o.ReleaseName, o.DCGMReleaseName})
	if err != nil {
		return err
	}
	if err := report.Print(o.Streams.Out, o.format, st); err != nil {
		return err
	}
	if !st.Ready {
		return cliexit.Silent{Code: cliexit.Failures}
	}
	return nil
}
