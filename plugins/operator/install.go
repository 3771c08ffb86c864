package operator

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// InstallOptions are the flags of `operator install` and `operator upgrade`.
type InstallOptions struct {
	helmflags.ChartOptions
	Install helmrelease.InstallRequest
}

// NewCmdInstall returns `operator install` (name "install") or `operator upgrade`.
func NewCmdInstall(f cluster.Getter, streams genericiooptions.IOStreams, name string) *cobra.Command {
	return newCmdInstall(f, helmflags.Release{Streams: streams, NewClient: op.NewClient}, name)
}

func newCmdInstall(f cluster.Getter, ro helmflags.Release, name string) *cobra.Command {
	o := &InstallOptions{ChartOptions: helmflags.ChartOptions{Release: ro}, Install: helmrelease.InstallRequest{Timeout: helmflags.DefaultTimeout}}
	cmd := &cobra.Command{
		Use:   name,
		Short: map[string]string{"install": "Install the GPU Operator, or upgrade it when installed", "upgrade": "Upgrade the GPU Operator, or install it when missing"}[name],
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
		RunE: verb.RunE(f, o, func(cmd *cobra.Command, args []string) {
			o.Install = helmflags.InstallRequest(cmd, o.Install)
		}),
	}
	o.ChartFlags(cmd)
	helmflags.BindInstall(cmd, &o.Install, helmflags.InstallHelp{
		Wait:       "wait until ClusterPolicy is ready (progress per component), or --timeout",
		Releases:   "release's",
		LabelNodes: "apply the node labels the derived values need (mixed clusters)",
	})
	return cmd
}

// Complete resolves the namespace: --namespace when given, else gpu-operator.
func (o *InstallOptions) Complete(f cluster.Getter, args []string) error {
	return o.Release.Complete(f, args)
}

// Validate checks the flags.
func (o *InstallOptions) Validate() error { return o.Install.Validate() }

// Run installs or upgrades the release.
func (o *InstallOptions) Run(ctx context.Context) error {
	c, ch, doc, err := o.ChartValues(ctx)
	if err != nil {
		return err
	}
	req := o.Install
	req.ReleaseName = o.ReleaseName // --release-name, shared by every verb
	rel, err := c.Install(ctx, ch, doc, req)
	if err != nil {
		return err
	}
	if req.DryRun {
		if err := doc.WriteText(o.Streams.Out); err != nil {
			return err
		}
		fmt.Fprintf(o.Streams.Out, "\n# Manifest summary (dry run, nothing changed):\n%s", helmrelease.ManifestSummary(rel))
		return nil
	}
	fmt.Fprintf(o.Streams.Out, "release %s revision %d %s: chart %s (app %s) in namespace %s\n", rel.Name, rel.Version, rel.Info.Status,
		ch.Metadata.Name+"-"+ch.Metadata.Version, ch.Metadata.AppVersion, o.Namespace)
	if !req.Wait {
		return nil
	}
	st, err := c.WaitReady(ctx, o.ReleaseName, req.Timeout)
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
