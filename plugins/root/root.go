// Package root assembles the `kubectl gpu` command tree.
package root

import (
	"context"
	"errors"

	"github.com/kubectl-gpu/kubectl-gpu/plugins/mirror"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/doctor"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/nodes"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/operator"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/prep"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/up"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verify"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/version"
)

// NewCmdRoot returns the root command with every subcommand. All commands share one set
// of kubectl flags (cli-runtime's ConfigFlags) on the persistent flags.
func NewCmdRoot(streams genericiooptions.IOStreams) *cobra.Command {
	flags := cluster.NewConfigFlags()
	f := cluster.NewGetter(flags)
	cmd := &cobra.Command{
		Use:   "kubectl-gpu",
		Short: "Prepare, install and verify NVIDIA GPUs on a Kubernetes cluster",
		Long: `kubectl gpu takes a cluster from "some nodes have NVIDIA GPUs" to "GPU workloads are
verified on every GPU node".

  nodes     GPU inventory: per node GPUs allocatable and used (device plugin and DRA),
            product, driver, CUDA, sharing, MIG
  prep      check (and with --apply, prepare) GPU nodes through one-shot node pods;
            install the host driver and toolkit, drain and reboot a few nodes at a time
  operator  install, upgrade, report and remove the NVIDIA GPU Operator (Helm);
            sharing and MIG layouts
  device-plugin  NVIDIA's device plugin, GPU feature discovery and DCGM exporter
            (Helm) without the operator, for hosts that own their driver and toolkit
  verify    run the CUDA vectoradd proof on every GPU node
  doctor    why a GPU node does not serve GPUs: each link from the GPUs up to the
            scheduler, the first broken one and its fix
  up        the whole runbook as one resumable plan: prep, host installs and rolling
            reboot, the GPU Operator or the device plugin, verify
  mirror    every image an install needs: list, copy to a mirror, carry across an air gap
  version   plugin, node-agent image and server versions

Exit codes: 0 success; 1 the command ran and found failures; 2 usage or configuration
error; 130 interrupted.`,
		Annotations: map[string]string{
			cobra.CommandDisplayNameAnnotation: "kubectl gpu",
		},
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	cmd.SetIn(streams.In)
	flags.AddFlags(cmd.PersistentFlags())
	cmd.SetFlagErrorFunc(flagError)

	cmd.AddCommand(
		nodes.NewCmdNodes(f, streams),
		prep.NewCmdPrep(f, streams),
		operator.NewCmdOperator(f, streams),
		deviceplugin.NewCmdDevicePlugin(f, streams),
		verify.NewCmdVerify(f, streams),
		doctor.NewCmdDoctor(f, streams),
		up.NewCmdUp(f, streams),
		mirror.NewCmdMirror(f, streams),
		version.NewCmdVersion(f, streams),
	)
	setFlagErrors(cmd)
	return cmd
}

// Execute runs the command tree. An error raised before any command started (an unknown
// command, a missing argument) is a usage error, exit 2.
func Execute(ctx context.Context, cmd *cobra.Command) error {
	started := false
	cmd.PersistentPreRun = func(*cobra.Command, []string) { started = true }
	err := cmd.ExecuteContext(ctx)
	if err != nil && !started {
		var ce *cliexit.Error
		if !errors.As(err, &ce) {
			return cliexit.Usagef("%w: see 'kubectl gpu --help'", err)
		}
	}
	return err
}

func setFlagErrors(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		c.SetFlagErrorFunc(flagError)
		setFlagErrors(c)
	}
}
