// Package mirror is `kubectl gpu mirror`: every image an install needs, listed, copied to a
// mirror registry, or carried across an air gap in an OCI layout.
package mirror

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"helm.sh/helm/v3/pkg/cli/values"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/buildinfo"
	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/mirror"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// MirrorOptions are the flags of `kubectl gpu mirror`.
type MirrorOptions struct {
	*helmflags.ChartOptions
	To             string
	ToArchive      string
	FromArchive    string
	Insecure       bool
	SourceInsecure bool
	Parallel       int
	ValuesOut      string
	AgentImage     string
	VerifyImage    string
	DriverOS       []string
	Output         string
	// DevicePlugin mirrors the device plugin's charts instead of the GPU Operator's; DCGM the
	// DCGM exporter's too (DCGMChart: from a local chart).
	DevicePlugin bool
	DCGM         bool
	DCGMChart    string
	DCGMValues   values.Options

	format  report.Format
	target  mirror.Target
	Streams genericiooptions.IOStreams
}

// NewCmdMirror returns `kubectl gpu mirror`.
func NewCmdMirror(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	o := &MirrorOptions{ChartOptions: helmflags.NewChartOptions(streams), Streams: streams, Parallel: 4,
		AgentImage: buildinfo.AgentImage(), VerifyImage: verify.DefaultImage}
	cmd := &cobra.Command{
		Use:   "mirror [--to REGISTRY[/PREFIX] | --to-archive DIR | --from-archive DIR --to REGISTRY]",
		Short: "List every image an install needs, copy them to a mirror registry or an OCI layout",
		Long: `Find every image a GPU Operator install needs — the chart rendered with the values
'kubectl gpu operator install' would use (the derived ones too), including the operand
images the operator is told about through env vars and the ClusterPolicy / GPUCluster spec —
plus the node agent (prep) and the vectoradd image (verify).

Without --to or --to-archive it lists them (-o json|yaml adds the digests the registries
give). --to copies each one into REGISTRY[/PREFIX] at the same path (nvcr.io/nvidia/x:t →
REGISTRY/PREFIX/nvidia/x:t), every platform of an index, digests kept; images the mirror
already holds are skipped, so a second or interrupted run copies only what is missing.
--to-archive writes them into one OCI layout to carry across the air gap; --from-archive
with --to pushes such a layout into the inside registry. The chart goes with them: --to
pushes it as an OCI chart to REGISTRY/PREFIX/charts/gpu-operator (as helm push does; a
version the mirror holds is skipped), --to-archive writes it into the layout's charts/
directory and --from-archive pushes it from there. With -o json|yaml these print a
MirrorResult document: each image with its digest and whether it was copied or already
there, the chart, the values file and the commands that use the mirror.

With --to, the values file that points the chart at the mirror (the chart's own
repository keys) is written to --values-out, and the --image flags for prep and verify are
printed. Registry credentials come from the Docker config and its credential helpers
(docker login / crane auth login); plain-HTTP registries need --insecure. Before copying,
the mirror is asked whether it takes a push: one that does not answer or wants credentials
is exit 2 with nothing copied; an image its source cannot give is exit 1, the others copied.

--device-plugin does the same for 'kubectl gpu device-plugin install' instead of the GPU
Operator: NVIDIA's device plugin chart (its GPU feature discovery and node-feature-discovery
images) and with --dcgm-exporter the DCGM exporter's, rendered with the values that install
would use; --chart, --repo and --version then choose the device plugin chart. --to pushes
both charts to REGISTRY/PREFIX/charts/ and names the command that installs from the mirror
(device-plugin install --mirror, which moves every image and takes the charts from there).`,
		Example: `  kubectl gpu mirror
  kubectl gpu mirror -o json
  kubectl gpu mirror --to registry.example.com:5000/gpu
  kubectl gpu mirror --to-archive ./gpu-images && kubectl gpu mirror --from-archive ./gpu-images --to registry.inside:5000/gpu
  kubectl gpu operator install --chart oci://registry.inside:5000/gpu/charts/gpu-operator -f gpu-operator-mirror-values.yaml
  kubectl gpu mirror --device-plugin --dcgm-exporter --to registry.inside:5000/gpu`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: verb.RunE(f, o, func(cmd *cobra.Command, args []string) {
			if o.DevicePlugin {
				// The chart flags are the device plugin chart's: its defaults where not given.
				o.Defaults = devicePluginChart
				if !cmd.Flags().Changed("version") {
					o.Version = dp.DefaultVersion
				}
				if !cmd.Flags().Changed("release-name") {
					o.ReleaseName = dp.DefaultReleaseName
				}
			}
		}),
	}
	o.ChartFlags(cmd)
	_ = cmd.Flags().MarkHidden("mirror") // the mirror is --to here
	fl := cmd.Flags()
	fl.StringVar(&o.To, "to", "", "mirror registry REGISTRY[/PREFIX] to copy the images into")
	fl.StringVar(&o.ToArchive, "to-archive", "", "write the images into this OCI layout directory")
	fl.StringVar(&o.FromArchive, "from-archive", "", "with --to: push the images of this OCI layout directory")
	fl.BoolVar(&o.Insecure, "insecure", false, "the mirror speaks plain HTTP")
	fl.BoolVar(&o.SourceInsecure, "source-insecure", false, "the source registries speak plain HTTP")
	fl.IntVar(&o.Parallel, "parallel", o.Parallel, "images copied at once (one layer at a time each)")
	fl.StringVar(&o.ValuesOut, "values-out", "gpu-operator-mirror-values.yaml", "with --to: where to write the chart values that use the mirror")
	fl.StringVar(&o.AgentImage, "agent-image", o.AgentImage, "prep's node-agent image")
	fl.StringVar(&o.VerifyImage, "verify-image", o.VerifyImage, "verify's vectoradd image")
	fl.StringSliceVar(&o.DriverOS, "driver-os", nil, "OS tags of the driver image, such as ubuntu22.04 (default: the GPU nodes')")
	fl.StringVarP(&o.Output, "output", "o", "", "output format: table, wide, json or yaml")
	fl.BoolVar(&o.DevicePlugin, "device-plugin", false, "the images and charts of 'kubectl gpu device-plugin install' instead of the GPU Operator's")
	fl.BoolVar(&o.DCGM, "dcgm-exporter", false, "with --device-plugin: the DCGM exporter's too")
	fl.StringVar(&o.DCGMChart, "dcgm-chart", "", "with --dcgm-exporter: the DCGM exporter chart from a local directory, a .tgz or an oci:// reference")
	fl.StringSliceVar(&o.DCGMValues.ValueFiles, "dcgm-values", nil, "with --dcgm-exporter: the DCGM exporter's values from a YAML file (can repeat)")
	fl.StringArrayVar(&o.DCGMValues.Values, "dcgm-set", nil, "with --dcgm-exporter: set the DCGM exporter's values (key1=val1,key2=val2)")
	return cmd
}

// devicePluginChart is the device plugin chart's defaults for the chart flags.
var devicePluginChart = helmflags.DevicePlugin

// Validate checks the flags once.
func (o *MirrorOptions) Validate() error {
	var err error
	if o.format, err = report.ParseFormat(o.Output, report.Table, report.Wide, report.JSON, report.YAML); err != nil {
		return err
	}
	switch {
	case o.Parallel <= 0:
		return cliexit.Usagef("--parallel must be at least 1")
	case o.FromArchive != "" && o.To == "":
		return cliexit.Usagef("--from-archive pushes into a registry: add --to REGISTRY[/PREFIX]")
	case o.FromArchive != "" && o.ToArchive != "":
		return cliexit.Usagef("--from-archive and --to-archive exclude each other")
	case (o.DCGM || o.DCGMChart != "" || len(o.DCGMValues.ValueFiles)+len(o.DCGMValues.Values) > 0) && !o.DevicePlugin:
		return cliexit.Usagef("--dcgm-exporter, --dcgm-chart, --dcgm-values and --dcgm-set go with --device-plugin")
	case o.DevicePlugin && o.DRA:
		return cliexit.Usagef("--dra is the GPU Operator's: the device plugin has no DRA mode")
	}
	if o.To != "" {
		if o.target, err = mirror.ParseTarget(o.To, o.Insecure); err != nil {
			return err
		}
	}
	return nil
}

// Run lists, copies or archives.
func (o *MirrorOptions) Run(ctx context.Context) error {
	copts := mirror.CopyOptions{Parallel: o.Parallel, SourceInsecure: o.SourceInsecure, Progress: report.OnTerminal(o.Streams.ErrOut)}
	if o.FromArchive != "" {
		return o.print(mirror.FromArchiveAll(ctx, o.FromArchive, o.target, copts))
	}
	c, err := o.RenderClient()
	if err != nil {
		return err
	}
	vreq, err := o.ValuesRequest(c)
	if err != nil {
		return err
	}
	relName, _ := o.ReleaseAndNamespace()
	var list *mirror.List
	if o.DevicePlugin {
		req := dp.NewRequest()
		req.ReleaseName, req.Source, req.User, req.Derive, req.DCGM = relName, vreq.Source, vreq.User, o.Derive, o.DCGM || o.DCGMChart != ""
		req.DCGMSource.Chart, req.DCGMSource.PlainHTTP = o.DCGMChart, o.PlainHTTP
		if req.DCGMUser, err = helmflags.UserValues(&o.DCGMValues, c); err != nil {
			return err
		}
		plan, err := dp.Values(ctx, c.Client, req)
		if err != nil {
			return err
		}
		list, err = mirror.DevicePluginImages(plan, mirror.Request{AgentImage: o.AgentImage, VerifyImage: o.VerifyImage})
		if err != nil {
			return err
		}
	} else if list, err = mirror.Images(ctx, c, mirror.Request{Values: vreq, AgentImage: o.AgentImage, VerifyImage: o.VerifyImage, DriverOS: o.DriverOS, ReleaseName: relName}); err != nil {
		return err
	}
	for _, w := range list.Warnings {
		fmt.Fprintf(o.Streams.ErrOut, "warning: %s\n", w)
	}
	switch {
	case o.ToArchive != "":
		return o.print(mirror.ToArchiveAll(ctx, list, o.ToArchive, copts))
	case o.To != "":
		return o.print(mirror.ToMirror(ctx, c, list, vreq, o.target, o.ValuesOut, copts))
	}
	if o.format == report.JSON || o.format == report.YAML || o.format == report.Wide {
		mirror.Resolve(ctx, list, copts)
	}
	return report.Print(o.Streams.Out, o.format, list)
}

// print shows what a copy did (a partial one too) and returns its error.
func (o *MirrorOptions) print(r *mirror.Result, err error) error {
	if r != nil {
		if perr := report.Print(o.Streams.Out, o.format, r); perr != nil {
			return perr
		}
	}
	return err
}
