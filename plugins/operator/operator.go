// Package operator is `kubectl gpu operator`: the NVIDIA GPU Operator through the Helm SDK.
// Each verb is a file of its own; the work is in common/operator.
package operator

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/mirror"
	"helm.sh/helm/v3/pkg/chart"

	"github.com/spf13/cobra"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// NewCmdOperator returns `kubectl gpu operator` and its subcommands.
func NewCmdOperator(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdOperator(f, streams, op.NewClient)
}

// clientFunc makes the operator client: op.NewClient, or in command tests one on an
// in-memory Helm store and fake clients.
type clientFunc func(g cluster.Getter, ns string, log io.Writer) (*op.Client, error)

func newCmdOperator(f cluster.Getter, streams genericiooptions.IOStreams, nc clientFunc) *cobra.Command {
	ro := func() releaseOptions { return releaseOptions{Streams: streams, newClient: nc} }
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

// verb is one operator subcommand's options: complete (the namespace), validate once, run.
type verb interface {
	complete(f cluster.Getter) error
	Validate() error
	Run(ctx context.Context) error
}

// runVerb is a verb's RunE: pre (arguments, flags that were changed) first, then Complete,
// Validate and Run with the command's context.
func runVerb(f cluster.Getter, o verb, pre func(cmd *cobra.Command, args []string)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if pre != nil {
			pre(cmd, args)
		}
		if err := o.complete(f); err != nil {
			return err
		}
		if err := o.Validate(); err != nil {
			return err
		}
		return o.Run(cmd.Context())
	}
}

// releaseOptions are what every verb shares: the release and its namespace.
type releaseOptions struct {
	ReleaseName string
	namespace   string
	getter      cluster.Getter
	Streams     genericiooptions.IOStreams
	newClient   clientFunc
}

func (o *releaseOptions) complete(f cluster.Getter) error {
	o.getter = f
	var err error
	o.namespace, err = cluster.NamespaceOr(f, op.DefaultNamespace)
	return err
}

// NewChartOptions returns chart options for a command outside this package (mirror).
func NewChartOptions(streams genericiooptions.IOStreams) *ChartOptions {
	return &ChartOptions{releaseOptions: releaseOptions{Streams: streams, newClient: op.NewClient}}
}

// Complete resolves the release namespace.
func (o *ChartOptions) Complete(f cluster.Getter) error { return o.complete(f) }

// Client returns the operator client of the release namespace; without derived values
// (--derive=false, no --dra) it needs no cluster.
func (o *ChartOptions) Client() (*op.Client, error) {
	if !o.Derive && !o.DRA {
		return op.NewOfflineClient(o.getter, o.namespace, o.Streams.ErrOut)
	}
	return o.client()
}

// Release is the release name and namespace.
func (o *ChartOptions) Release() (name, namespace string) { return o.ReleaseName, o.namespace }

func (o *releaseOptions) client() (*op.Client, error) {
	c, err := o.newClient(o.getter, o.namespace, o.Streams.ErrOut)
	if err != nil {
		return nil, err
	}
	c.Progress = report.OnTerminal(o.Streams.ErrOut)
	return c, nil
}

func (o *releaseOptions) releaseFlag(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.ReleaseName, "release-name", op.DefaultReleaseName, "Helm release name")
}

// ChartOptions choose the chart and its values (install, upgrade, values, and mirror);
// Helm's flags keep Helm's names and meaning.
type ChartOptions struct {
	releaseOptions
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

func (o *ChartOptions) ChartFlags(cmd *cobra.Command) {
	o.releaseFlag(cmd)
	fl := cmd.Flags()
	fl.StringVar(&o.Chart, "chart", "", "chart from a local directory, a .tgz or an oci:// reference (air-gapped sites)")
	fl.BoolVar(&o.PlainHTTP, "plain-http", false, "read an oci:// --chart over plain HTTP (a registry without TLS, such as a mirror written with --insecure)")
	fl.StringVar(&o.Repo, "repo", "", "chart repository URL (default "+op.DefaultRepo+"; a mirror for air-gapped sites)")
	fl.StringVar(&o.Version, "version", op.DefaultVersion, "chart version")
	o.versionFlag = func() bool { return fl.Changed("version") }
	fl.BoolVar(&o.Devel, "devel", false, "use development versions too (with an empty --version)")
	fl.StringSliceVarP(&o.Values.ValueFiles, "values", "f", nil, "values from a YAML file or URL (can repeat)")
	fl.StringArrayVar(&o.Values.Values, "set", nil, "set values (key1=val1,key2=val2)")
	fl.StringArrayVar(&o.Values.StringValues, "set-string", nil, "set STRING values")
	fl.StringArrayVar(&o.Values.FileValues, "set-file", nil, "set values from files (key=path)")
	fl.StringArrayVar(&o.Values.JSONValues, "set-json", nil, "set JSON values (key=jsonval)")
	fl.BoolVar(&o.Derive, "derive", true, "derive values from the cluster's GPU nodes (--derive=false: chart defaults and your values only)")
	fl.StringVar(&o.Mirror, "mirror", "", "every image from this mirror REGISTRY[/PREFIX] (filled by 'kubectl gpu mirror --to'): the chart's repository keys moved there; the chart too (oci://REGISTRY[/PREFIX]/charts/gpu-operator) unless --chart or --repo")
	fl.BoolVar(&o.DRA, "dra", false, "the GPUCluster (DRA) stack instead of the ClusterPolicy (gpuCluster.deployCR=true, clusterPolicy.deployCR=false), after checking its prerequisites: Kubernetes >= 1.34.2, host drivers >= 580, containerd with CDI, no ClusterPolicy")
}

// valuesRequest merges the user's values by Helm's rules: a syntax error is exit 2.
func (o *ChartOptions) ValuesRequest(c *op.Client) (op.ValuesRequest, error) {
	user, err := o.Values.MergeValues(getter.All(c.Helm.Settings))
	if err != nil {
		return op.ValuesRequest{}, cliexit.Usagef("bad values: %s: check -f / --set syntax (key=value, a.b=c, list[0]=x)", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	var mirrorValues func(*chart.Chart, map[string]any) (map[string]any, string, error)
	if o.Mirror != "" {
		t, err := mirror.ParseTarget(o.Mirror, false)
		if err != nil {
			return op.ValuesRequest{}, err
		}
		mirrorValues = func(ch *chart.Chart, vals map[string]any) (map[string]any, string, error) {
			v, _, err := mirror.Values(ch, vals, t)
			return v, t.String(), err
		}
	}
	return op.ValuesRequest{User: user, Derive: o.Derive, DRA: o.DRA, Mirror: mirrorValues, Source: op.ChartSource{Chart: o.chartRef(), Repo: o.Repo, Version: o.Version,
		Devel: o.Devel, VersionGiven: o.versionFlag != nil && o.versionFlag(), PlainHTTP: o.PlainHTTP}}, nil
}

// chartRef is the chart asked for: --chart, else with --mirror (and no --repo) the chart
// where 'kubectl gpu mirror --to' pushed it; "" for the repository's.
func (o *ChartOptions) chartRef() string {
	if o.Chart != "" || o.Mirror == "" || o.Repo != "" {
		return o.Chart
	}
	t, err := mirror.ParseTarget(o.Mirror, false)
	if err != nil {
		return ""
	}
	return t.ChartRef()
}

// values makes the client and computes the install's values (install, upgrade, values).
func (o *ChartOptions) values(ctx context.Context) (*op.Client, *chart.Chart, *op.ValuesDoc, error) {
	c, err := o.client()
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

const defaultTimeout = 10 * time.Minute
