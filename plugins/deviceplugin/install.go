package deviceplugin

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// InstallOptions are the flags of `device-plugin install` and `upgrade`.
type InstallOptions struct {
	*ChartOptions
	Install dp.InstallRequest
}

func newCmdInstall(f cluster.Getter, ro helmflags.Release, name string) *cobra.Command {
	o := &InstallOptions{ChartOptions: newChartOptions(ro), Install: dp.InstallRequest{Timeout: helmflags.DefaultTimeout}}
	cmd := &cobra.Command{
		Use: name,
		Short: map[string]string{"install": "Install the device plugin (and DCGM exporter), or upgrade them when installed",
			"upgrade": "Upgrade the device plugin (and DCGM exporter), or install them when missing"}[name],
		Long: `Install or upgrade NVIDIA's device plugin chart (both work as 'helm upgrade --install'),
with GPU feature discovery unless --gfd=false, and with --dcgm-exporter the DCGM exporter chart
as a release of its own. The namespace (default nvidia-device-plugin) is created with the
privileged Pod Security label when missing; RuntimeClass nvidia is created when the values
need it and it is missing. A first install is atomic unless --atomic=false. --wait then
follows every GPU node until its plugin pods are ready and it advertises its GPUs, or
--timeout.

Refused with exit 2 and nothing changed: a GPU Operator or another device plugin already
allocating GPUs; a GPU node without a host driver, the container toolkit or containerd's
nvidia runtime (each named, with the prep command that fixes it); a chart that is not the one
asked for; values that do not parse; a release name another chart holds.`,
		Example: `  kubectl gpu device-plugin install --dry-run
  kubectl gpu device-plugin install --wait
  kubectl gpu device-plugin install --dcgm-exporter --wait
  kubectl gpu device-plugin install --sharing time-slicing --replicas 4
  kubectl gpu device-plugin install --mirror registry.inside:5000/gpu --plain-http   # air-gapped`,
		Args: cobra.NoArgs,
		RunE: verb.RunE(f, o, func(cmd *cobra.Command, _ []string) {
			o.Install = helmflags.InstallRequest(cmd, o.Install)
		}),
	}
	o.flags(cmd)
	helmflags.BindInstall(cmd, &o.Install, helmflags.InstallHelp{
		Wait:       "wait until every GPU node runs the plugin and advertises its GPUs (progress per node), or --timeout",
		Releases:   "releases'",
		LabelNodes: "apply the node labels the chart schedules on (nvidia.com/gpu.present) where nothing else sets them",
	})
	return cmd
}

// Validate checks the flags.
func (o *InstallOptions) Validate() error {
	if err := o.Install.Validate(); err != nil {
		return err
	}
	return o.ChartOptions.Validate()
}

// Run installs or upgrades the releases.
func (o *InstallOptions) Run(ctx context.Context) error {
	c, plan, err := o.Plan(ctx, false)
	if err != nil {
		return err
	}
	req := o.Install
	// Every unready node on a line of its own; the error names the first.
	for i, n := range plan.UnreadyNodes {
		if len(plan.UnreadyNodes) > 1 || i > 0 {
			fmt.Fprintf(o.Streams.ErrOut, "node %s is not ready for the device plugin: %s\n", n.Node, joinReasons(n.Reasons))
		}
	}
	rels, err := dp.Install(ctx, c.Client, plan, req)
	if err != nil {
		return err
	}
	if req.DryRun {
		if err := plan.WriteText(o.Streams.Out); err != nil {
			return err
		}
		for _, rel := range rels {
			fmt.Fprintf(o.Streams.Out, "\n# Manifest summary of release %s (dry run, nothing changed):\n%s", rel.Name, helmrelease.ManifestSummary(rel))
		}
		return nil
	}
	for i, rel := range rels {
		ch := plan.Chart(i)
		fmt.Fprintf(o.Streams.Out, "release %s revision %d %s: chart %s (app %s) in namespace %s\n", rel.Name, rel.Version, rel.Info.Status,
			ch.Metadata.Name+"-"+ch.Metadata.Version, ch.Metadata.AppVersion, o.Namespace)
	}
	if !req.Wait {
		return nil
	}
	st, err := dp.WaitReady(ctx, c.Client, plan.ReleaseNames(), req.Timeout)
	if st != nil && err != nil {
		_ = st.WriteText(o.Streams.Out)
		return err
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(o.Streams.Out, "device plugin ready: %s\n", st.Summary())
	return nil
}

func joinReasons(r []string) string {
	s := ""
	for i, x := range r {
		if i > 0 {
			s += "; "
		}
		s += x
	}
	return s
}
