// Package helmflags holds what the commands that install a chart through the Helm SDK
// share: the release and its namespace, the chart's flags under Helm's names, and the
// values request they make. No command package imports another; they import this.
package helmflags

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/mirror"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// ClientFunc makes the operator client: op.NewClient, or in command tests one on an
// in-memory Helm store and fake clients.
type ClientFunc func(g cluster.Getter, ns string, log io.Writer) (*op.Client, error)

// Defaults are a command's chart: its name, repository, version, release and namespace.
type Defaults struct {
	Chart, Repo, Version, ReleaseName, Namespace string
}

// Operator is the GPU Operator's chart.
var Operator = Defaults{Chart: op.ChartName, Repo: op.DefaultRepo, Version: op.DefaultVersion, ReleaseName: op.DefaultReleaseName, Namespace: op.DefaultNamespace}

// DevicePlugin are the defaults of NVIDIA's device plugin chart.
var DevicePlugin = Defaults{Chart: dp.ChartName, Repo: dp.DefaultRepo, Version: dp.DefaultVersion, ReleaseName: dp.DefaultReleaseName, Namespace: dp.DefaultNamespace}

// Release is what every release verb shares: the release, its namespace, the client.
type Release struct {
	ReleaseName string
	Namespace   string
	Getter      cluster.Getter
	Streams     genericiooptions.IOStreams
	NewClient   ClientFunc
	// Defaults are the command's chart (the GPU Operator's when empty).
	Defaults Defaults
}

// chart is the command's chart defaults.
func (o *Release) chart() Defaults {
	if o.Defaults.Chart == "" {
		return Operator
	}
	return o.Defaults
}

// Complete resolves the release namespace (--namespace, else the chart's); the Helm verbs take
// no arguments.
func (o *Release) Complete(f cluster.Getter, _ []string) error {
	o.Getter = f
	var err error
	o.Namespace, err = cluster.NamespaceOr(f, o.chart().Namespace)
	return err
}

// RenderClient returns the operator client of the release namespace for rendering the
// chart; without derived values (--derive=false, no --dra) it needs no cluster.
func (o *ChartOptions) RenderClient() (*op.Client, error) {
	if !o.Derive && !o.DRA {
		return op.NewOfflineClient(o.Getter, o.Namespace, o.Streams.ErrOut)
	}
	return o.Client()
}

// ReleaseAndNamespace is the release name and namespace.
func (o *ChartOptions) ReleaseAndNamespace() (name, namespace string) {
	return o.ReleaseName, o.Namespace
}

// Client makes the operator client of the release namespace.
func (o *Release) Client() (*op.Client, error) {
	c, err := o.NewClient(o.Getter, o.Namespace, o.Streams.ErrOut)
	if err != nil {
		return nil, err
	}
	c.Progress = report.OnTerminal(o.Streams.ErrOut)
	return c, nil
}

// ReleaseFlag adds --release-name.
func (o *Release) ReleaseFlag(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.ReleaseName, "release-name", o.chart().ReleaseName, "Helm release name")
}

// NewChartOptions returns chart options whose client is the operator's (op.NewClient).
func NewChartOptions(streams genericiooptions.IOStreams) *ChartOptions {
	return &ChartOptions{Release: Release{Streams: streams, NewClient: op.NewClient}}
}

// ChartOptions choose the chart and its values (install, upgrade, values, and mirror);
// Helm's flags keep Helm's names and meaning.
type ChartOptions struct {
	Release
	Chart   string
	Repo    string
	Version string
	Devel   bool
	Values  values.Options
	Derive  bool
	DRA     bool
	Mirror  string
	// PlainHTTP: an oci:// chart over plain HTTP.
	PlainHTTP bool
	// versionFlag tells whether --version was given (not the default).
	versionFlag func() bool
}

// ChartFlags adds the chart's flags (Helm's names), --release-name, --derive, --mirror and
// the GPU Operator's --dra.
func (o *ChartOptions) ChartFlags(cmd *cobra.Command) {
	o.CommonChartFlags(cmd)
	cmd.Flags().BoolVar(&o.DRA, "dra", false, "the GPUCluster (DRA) stack instead of the ClusterPolicy (gpuCluster.deployCR=true, clusterPolicy.deployCR=false), after checking its prerequisites: Kubernetes >= 1.34.2, host drivers >= 580, containerd with CDI, no ClusterPolicy")
}

// CommonChartFlags adds the flags every chart command has: the chart's (Helm's names),
// --release-name, --derive and --mirror.
func (o *ChartOptions) CommonChartFlags(cmd *cobra.Command) {
	o.ReleaseFlag(cmd)
	d := o.chart()
	fl := cmd.Flags()
	fl.StringVar(&o.Chart, "chart", "", "chart from a local directory, a .tgz or an oci:// reference (air-gapped sites)")
	fl.BoolVar(&o.PlainHTTP, "plain-http", false, "read an oci:// --chart over plain HTTP (a registry without TLS, such as a mirror written with --insecure)")
	fl.StringVar(&o.Repo, "repo", "", "chart repository URL (default "+d.Repo+"; a mirror for air-gapped sites)")
	fl.StringVar(&o.Version, "version", d.Version, "chart version")
	o.versionFlag = func() bool { return fl.Changed("version") }
	fl.BoolVar(&o.Devel, "devel", false, "use development versions too (with an empty --version)")
	fl.StringSliceVarP(&o.Values.ValueFiles, "values", "f", nil, "values from a YAML file or URL (can repeat)")
	fl.StringArrayVar(&o.Values.Values, "set", nil, "set values (key1=val1,key2=val2)")
	fl.StringArrayVar(&o.Values.StringValues, "set-string", nil, "set STRING values")
	fl.StringArrayVar(&o.Values.FileValues, "set-file", nil, "set values from files (key=path)")
	fl.StringArrayVar(&o.Values.JSONValues, "set-json", nil, "set JSON values (key=jsonval)")
	fl.BoolVar(&o.Derive, "derive", true, "derive values from the cluster's GPU nodes (--derive=false: chart defaults and your values only)")
	fl.StringVar(&o.Mirror, "mirror", "", "every image from this mirror REGISTRY[/PREFIX] (filled by 'kubectl gpu mirror --to'): the chart's repository keys moved there; the chart too (oci://REGISTRY[/PREFIX]/charts/"+d.Chart+") unless --chart or --repo")
}

// ValuesRequest merges the user's values by Helm's rules: a syntax error is exit 2.
func (o *ChartOptions) ValuesRequest(c *op.Client) (op.ValuesRequest, error) {
	user, err := UserValues(&o.Values, c)
	if err != nil {
		return op.ValuesRequest{}, err
	}
	m, err := o.MirrorTarget()
	if err != nil {
		return op.ValuesRequest{}, err
	}
	return op.ValuesRequest{User: user, Derive: o.Derive, DRA: o.DRA, Mirror: m, Source: o.Source()}, nil
}

// UserValues merges -f/--set* values by Helm's rules: a syntax error is exit 2.
func UserValues(v *values.Options, c *op.Client) (map[string]any, error) {
	user, err := v.MergeValues(getter.All(c.Helm.Settings))
	if err != nil {
		return nil, cliexit.Usagef("bad values: %s: check -f / --set syntax (key=value, a.b=c, list[0]=x)", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return user, nil
}

// MirrorTarget is --mirror's registry (nil without --mirror).
func (o *ChartOptions) MirrorTarget() (helmrelease.RepositoryMapper, error) {
	if o.Mirror == "" {
		return nil, nil
	}
	t, err := mirror.ParseTarget(o.Mirror, false)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Source is where the chart comes from, as the flags say.
func (o *ChartOptions) Source() helmrelease.ChartSource {
	d := o.chart()
	return helmrelease.ChartSource{Name: d.Chart, DefaultRepo: d.Repo, Chart: o.ChartRef(), Repo: o.Repo, Version: o.Version,
		Devel: o.Devel, VersionGiven: o.versionFlag != nil && o.versionFlag(), PlainHTTP: o.PlainHTTP}
}

// ChartRef is the chart asked for: --chart, else with --mirror (and no --repo) the chart
// where 'kubectl gpu mirror --to' pushed it; "" for the repository's.
func (o *ChartOptions) ChartRef() string {
	if o.Chart != "" || o.Mirror == "" || o.Repo != "" {
		return o.Chart
	}
	return o.ChartRefOf(o.chart().Chart)
}

// ChartRefOf is chart's reference in --mirror ("" without one).
func (o *ChartOptions) ChartRefOf(chart string) string {
	t, err := mirror.ParseTarget(o.Mirror, false)
	if o.Mirror == "" || err != nil {
		return ""
	}
	return t.ChartRefOf(chart)
}

// ChartValues makes the client and computes the install's values (install, upgrade, values).
func (o *ChartOptions) ChartValues(ctx context.Context) (*op.Client, *chart.Chart, *helmrelease.ValuesDoc, error) {
	c, err := o.Client()
	if err != nil {
		return nil, nil, nil, err
	}
	req, err := o.ValuesRequest(c)
	if err != nil {
		return nil, nil, nil, err
	}
	ch, doc, err := c.Values(ctx, req)
	return c, ch, doc, err
}

// InstallHelp are the words of the install flags that differ between the commands.
type InstallHelp struct {
	// Wait is --wait's help; Releases names what --reuse-values and --reset-values act on
	// ("release's", "releases'"); LabelNodes is --label-nodes' help.
	Wait, Releases, LabelNodes string
}

// BindInstall binds the install and upgrade flags (Helm's names) onto r, a command's
// request: --wait, --timeout (r's value is its default), --atomic, --dry-run,
// --reuse-values, --reset-values, --label-nodes.
func BindInstall(cmd *cobra.Command, r *helmrelease.InstallRequest, h InstallHelp) {
	fl := cmd.Flags()
	fl.BoolVar(&r.Wait, "wait", false, h.Wait)
	fl.DurationVar(&r.Timeout, "timeout", r.Timeout, "time to wait for Helm operations and --wait")
	fl.BoolVar(&r.Atomic, "atomic", false, "roll back (upgrade) or remove (install) on failure; default on for a first install")
	fl.BoolVar(&r.DryRun, "dry-run", false, "print the values with their reasons and the manifest summary; change nothing")
	fl.BoolVar(&r.ReuseValues, "reuse-values", false, "upgrade: reuse the "+h.Releases+" values and merge these on top")
	fl.BoolVar(&r.ResetValues, "reset-values", false, "upgrade: reset to the chart"+strings.TrimPrefix(h.Releases, "release")+" values, then apply these")
	fl.BoolVar(&r.LabelNodes, "label-nodes", false, h.LabelNodes)
}

// InstallRequest is the request the flags bound by BindInstall made: a first install
// atomic unless --atomic was given.
func InstallRequest(cmd *cobra.Command, r helmrelease.InstallRequest) helmrelease.InstallRequest {
	r.AtomicDefault = !cmd.Flags().Changed("atomic")
	return r
}

// DefaultTimeout is the Helm commands' --timeout (install, upgrade, uninstall, a MIG change):
// Helm's own default is 5m; a GPU stack's images are large.
const DefaultTimeout = 10 * time.Minute
