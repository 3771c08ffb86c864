package operator

import (
	"context"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// StatusOptions are the flags of `operator status`.
type StatusOptions struct {
	helmflags.Release
	Output string
	format report.Format
}

// NewCmdStatus returns `operator status`.
func NewCmdStatus(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdStatus(f, helmflags.Release{Streams: streams, NewClient: op.NewClient})
}

func newCmdStatus(f cluster.Getter, ro helmflags.Release) *cobra.Command {
	o := &StatusOptions{Release: ro}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Report the release, ClusterPolicy, every operand and the validators; exit 1 when not ready",
		Args:  cobra.NoArgs,
		RunE:  verb.RunE(f, o, nil),
	}
	o.ReleaseFlag(cmd)
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
	st, err := c.Status(ctx, o.ReleaseName)
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
