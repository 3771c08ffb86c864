// Package operator is `kubectl gpu operator`: the NVIDIA GPU Operator through the Helm SDK.
// Each verb is a file of its own; the work is in common/operator.
package operator

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
)

// NewCmdOperator returns `kubectl gpu operator` and its subcommands.
func NewCmdOperator(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdOperator(f, streams, op.NewClient)
}

func newCmdOperator(f cluster.Getter, streams genericiooptions.IOStreams, nc helmflags.ClientFunc) *cobra.Command {
	ro := func() helmflags.Release { return helmflags.Release{Streams: streams, NewClient: nc} }
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Install, upgrade, report and remove the NVIDIA GPU Operator (Helm)",
		Long: `Manage the NVIDIA GPU Operator as a Helm release (namespace gpu-operator by default,
visible to 'helm list -n gpu-operator'), with chart values derived from what the GPU nodes
have: driver.enabled=false when every GPU node runs a host driver, toolkit.enabled=false
when every GPU node has the container toolkit and the nvidia runtime (both as found by
'kubectl gpu prep'), the RKE2/K3s containerd socket and config for the toolkit. Your own
--set / -f values always win. 'values' shows every derived value with its reason.`,
		SilenceUsage: true,
	}
	for _, verb := range []string{"install", "upgrade"} {
		cmd.AddCommand(newCmdInstall(f, ro(), verb))
	}
	cmd.AddCommand(newCmdValues(f, ro()), newCmdStatus(f, ro()), newCmdUninstall(f, ro()), newCmdSharing(f, ro()), newCmdMIG(f, ro()))
	return cmd
}
