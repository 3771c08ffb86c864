// Package verb runs a command's options the one way every kubectl gpu command does, as
// kubectl's own commands do: Complete (flags and arguments into a request), Validate (once),
// Run (with the command's context, which Ctrl-C cancels).
package verb

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
)

// Options are one command's options.
type Options interface {
	Complete(f cluster.Getter, args []string) error
	Validate() error
	Run(ctx context.Context) error
}

// RunE is a command's RunE: pre (what depends on the flags that were changed; nil: nothing)
// first, then Complete, Validate and Run.
func RunE(f cluster.Getter, o Options, pre func(cmd *cobra.Command, args []string)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if pre != nil {
			pre(cmd, args)
		}
		if err := o.Complete(f, args); err != nil {
			return err
		}
		if err := o.Validate(); err != nil {
			return err
		}
		return o.Run(cmd.Context())
	}
}
