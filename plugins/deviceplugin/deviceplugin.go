// Package deviceplugin is `kubectl gpu device-plugin`: NVIDIA's device plugin (with GPU
// feature discovery) and the DCGM exporter as Helm releases, without the GPU Operator. Each
// verb is a file of its own; the work is in common/deviceplugin.
package deviceplugin

import (
	"context"

	"github.com/spf13/cobra"
	"helm.sh/helm/v3/pkg/cli/values"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
)

// Chart is the device plugin chart's defaults for the shared chart flags.
var Chart = helmflags.DevicePlugin

// NewCmdDevicePlugin returns `kubectl gpu device-plugin` and its subcommands.
func NewCmdDevicePlugin(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdDevicePlugin(f, streams, op.NewClient)
}

func newCmdDevicePlugin(f cluster.Getter, streams genericiooptions.IOStreams, nc helmflags.ClientFunc) *cobra.Command {
	ro := func() helmflags.Release { return helmflags.Release{Streams: streams, NewClient: nc, Defaults: Chart} }
	cmd := &cobra.Command{
		Use:   "device-plugin",
		Short: "Install, upgrade, report and remove NVIDIA's device plugin, GPU feature discovery and DCGM exporter (Helm), without the GPU Operator",
		Long: `Set up the NVIDIA software on GPU nodes whose driver and container toolkit are on the
host (kubectl gpu prep --install-driver --install-toolkit, or the OS image): NVIDIA's device
plugin chart (nvidia-device-plugin, with GPU feature discovery and node-feature-discovery unless
--gfd=false) and, with --dcgm-exporter, the dcgm-exporter chart, each its own Helm release in
namespace nvidia-device-plugin (visible to 'helm list -n nvidia-device-plugin').

Values are derived from what prep found on the GPU nodes, each with its reason ('values'):
runtimeClassName nvidia where containerd's nvidia runtime is not the default (RuntimeClass
nvidia created when missing), the CDI device-list strategy where containerd and the toolkit
support CDI, the MIG strategy, the node labels the chart schedules on, sharing profiles
(--sharing), and for the exporter a ServiceMonitor only where the cluster serves
monitoring.coreos.com. Your own --set / -f values always win.

Install refuses, changing nothing, when a GPU Operator (ClusterPolicy, GPUCluster) or another
device plugin already allocates GPUs, and when a GPU node lacks a host driver, the toolkit or
containerd's nvidia runtime (every such node named). Then 'kubectl gpu verify' proves it.`,
		SilenceUsage: true,
	}
	for _, verb := range []string{"install", "upgrade"} {
		cmd.AddCommand(newCmdInstall(f, ro(), verb))
	}
	cmd.AddCommand(newCmdValues(f, ro()), newCmdStatus(f, ro()), newCmdUninstall(f, ro()))
	return cmd
}

// ChartOptions are the flags that choose both charts and their values (install, upgrade,
// values): the device plugin chart's under Helm's names, the exporter's prefixed --dcgm-.
type ChartOptions struct {
	helmflags.ChartOptions
	Request dp.Request
	// Strategy and the sharing flags; Replicas 0 and no Strategy: no sharing.
	Strategy string
	Replicas int
	Rename   bool

	DCGMChart   string
	DCGMRepo    string
	DCGMVersion string
	DCGMValues  values.Options
}

func newChartOptions(ro helmflags.Release) *ChartOptions {
	return &ChartOptions{ChartOptions: helmflags.ChartOptions{Release: ro}, Request: dp.NewRequest()}
}

// flags adds the chart flags.
func (o *ChartOptions) flags(cmd *cobra.Command) {
	o.CommonChartFlags(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&o.Request.GFD, "gfd", o.Request.GFD, "GPU feature discovery (labels each GPU node with its GPUs; brings node-feature-discovery unless one runs)")
	fl.BoolVar(&o.Request.DRA, "dra", false, "refused: the device plugin has no DRA mode ('kubectl gpu operator install --dra' installs NVIDIA's DRA driver)")
	fl.StringVar(&o.Strategy, "sharing", "", "share each GPU: time-slicing or mps, with --replicas (the profiles 'operator sharing' writes)")
	fl.IntVar(&o.Replicas, "replicas", 0, "with --sharing: pods per GPU (at least 2)")
	fl.BoolVar(&o.Rename, "rename", false, "with --sharing: advertise the shared GPUs as nvidia.com/gpu.shared")
	fl.BoolVar(&o.Request.DCGM, "dcgm-exporter", false, "also NVIDIA's DCGM exporter (GPU metrics for Prometheus), its own release")
	fl.StringVar(&o.Request.DCGMReleaseName, "dcgm-release-name", dp.DCGMReleaseName, "the DCGM exporter's Helm release name")
	fl.StringVar(&o.DCGMChart, "dcgm-chart", "", "the DCGM exporter chart from a local directory, a .tgz or an oci:// reference")
	fl.StringVar(&o.DCGMRepo, "dcgm-repo", "", "the DCGM exporter's chart repository URL (default "+dp.DCGMRepo+")")
	fl.StringVar(&o.DCGMVersion, "dcgm-version", dp.DCGMVersion, "the DCGM exporter chart's version")
	fl.StringSliceVar(&o.DCGMValues.ValueFiles, "dcgm-values", nil, "the DCGM exporter's values from a YAML file (can repeat)")
	fl.StringArrayVar(&o.DCGMValues.Values, "dcgm-set", nil, "set the DCGM exporter's values (key1=val1,key2=val2)")
}

// Validate checks the sharing flags and the request.
func (o *ChartOptions) Validate() error {
	switch {
	case o.Strategy == "" && (o.Replicas != 0 || o.Rename):
		return cliexit.Usagef("--replicas and --rename go with --sharing time-slicing|mps")
	case o.Strategy != "":
		o.Request.Sharing = &dp.Sharing{Strategy: o.Strategy, Replicas: o.Replicas, Rename: o.Rename}
	}
	return o.Request.Validate()
}

// Plan makes the client and computes both charts' values.
func (o *ChartOptions) Plan(ctx context.Context, offline bool) (*op.Client, *dp.Plan, error) {
	var c *op.Client
	var err error
	if offline {
		c, err = op.NewOfflineClient(o.Getter, o.Namespace, o.Streams.ErrOut)
	} else {
		c, err = o.Client()
	}
	if err != nil {
		return nil, nil, err
	}
	req := o.Request
	req.ReleaseName, req.Derive, req.Source = o.ReleaseName, o.Derive, o.Source()
	if req.User, err = helmflags.UserValues(&o.Values, c); err != nil {
		return nil, nil, err
	}
	if req.Mirror, err = o.MirrorTarget(); err != nil {
		return nil, nil, err
	}
	if req.DCGM {
		if req.DCGMUser, err = helmflags.UserValues(&o.DCGMValues, c); err != nil {
			return nil, nil, err
		}
		chartRef := o.DCGMChart
		if chartRef == "" && o.Mirror != "" && o.DCGMRepo == "" {
			chartRef = o.ChartRefOf(dp.DCGMChartName)
		}
		req.DCGMSource = helmrelease.ChartSource{Chart: chartRef, Repo: o.DCGMRepo, Version: o.DCGMVersion, PlainHTTP: o.PlainHTTP}
	}
	p, err := dp.Values(ctx, c.Client, req)
	return c, p, err
}
