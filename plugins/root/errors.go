package root

import (
	"github.com/spf13/cobra"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// flagError makes a bad flag a usage error (exit 2) that names the help command.
func flagError(cmd *cobra.Command, err error) error {
	return cliexit.Usagef("%w: see '%s --help'", err, cmd.CommandPath())
}

// ArgsError is returned by cobra's positional argument checks; the same treatment.
func ArgsError(cmd *cobra.Command, err error) error { return flagError(cmd, err) }
