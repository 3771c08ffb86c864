package operator

import (
	"context"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// ValuesOptions are the flags of `operator values`.
type ValuesOptions struct {
	chartOptions
	Output string
	format report.Format
}

// NewCmdValues returns `operator values`.
func NewCmdValues(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdValues(f, releaseOptions{Streams: streams, newClient: op.NewClient})
}

func newCmdValues(f cluster.Getter, ro releaseOptions) *cobra.Command {
	o := &ValuesOptions{chartOptions: chartOptions{releaseOptions: ro}}
	cmd := &cobra.Command{
		Use:   "values",
		Short: "Show the chart values install would use, and why each derived value is what it is",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.complete(f); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	o.chartFlags(cmd)
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: table (a commented values file), json or yaml")
	return cmd
}

// Validate checks the flags.
func (o *ValuesOptions) Validate() error {
	var err error
	o.format, err = report.ParseFormat(o.Output, report.Table, report.JSON, report.YAML)
	return err
}

// Run prints the values.
func (o *ValuesOptions) Run(ctx context.Context) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	req, err := o.valuesRequest(c)
	if err != nil {
		return err
	}
	_, doc, err := c.Values(ctx, req)
	if err != nil {
		return err
	}
	return report.Print(o.Streams.Out, o.format, doc)
}
