// Package operator is `kubectl gpu operator`: the NVIDIA GPU Operator through the Helm SDK.
package operator

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/release"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// OperatorOptions are the flags shared by the operator subcommands; Helm's flags keep
// Helm's names and meaning.
type OperatorOptions struct {
	ReleaseName string
	Chart       string
	Repo        string
	Version     string
	Devel       bool
	Values      values.Options
	Derive      bool
	LabelNodes  bool
	Wait        bool
	Timeout     time.Duration
	Atomic      bool
	DryRun      bool
	ReuseValues bool
	ResetValues bool
	KeepCRDs    bool
	Yes         bool
	Output      string

	atomicSet bool
	// versionFlag tells whether --version was given (not the default).
	versionFlag func() bool
	namespace   string
	format      report.Format
	getter      cluster.Getter
	Streams     genericiooptions.IOStreams
}

// NewOperatorOptions returns the defaults.
func NewOperatorOptions(streams genericiooptions.IOStreams) *OperatorOptions {
	return &OperatorOptions{Streams: streams, ReleaseName: op.DefaultReleaseName, Version: op.DefaultVersion,
		Derive: true, Timeout: 10 * time.Minute, KeepCRDs: true}
}

// NewCmdOperator returns `kubectl gpu operator` and its subcommands.
func NewCmdOperator(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
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
		cmd.AddCommand(newInstall(f, streams, verb))
	}
	cmd.AddCommand(newValues(f, streams), newStatus(f, streams), newUninstall(f, streams))
	return cmd
}

func (o *OperatorOptions) chartFlags(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&o.ReleaseName, "release-name", o.ReleaseName, "Helm release name")
	fl.StringVar(&o.Chart, "chart", "", "chart from a local directory, a .tgz or an oci:// reference (air-gapped sites)")
	fl.StringVar(&o.Repo, "repo", "", "chart repository URL (default "+op.DefaultRepo+"; a mirror for air-gapped sites)")
	fl.StringVar(&o.Version, "version", o.Version, "chart version")
	o.versionFlag = func() bool { return fl.Changed("version") }
	fl.BoolVar(&o.Devel, "devel", false, "use development versions too (with an empty --version)")
	fl.StringSliceVarP(&o.Values.ValueFiles, "values", "f", nil, "values from a YAML file or URL (can repeat)")
	fl.StringArrayVar(&o.Values.Values, "set", nil, "set values (key1=val1,key2=val2)")
	fl.StringArrayVar(&o.Values.StringValues, "set-string", nil, "set STRING values")
	fl.StringArrayVar(&o.Values.FileValues, "set-file", nil, "set values from files (key=path)")
	fl.StringArrayVar(&o.Values.JSONValues, "set-json", nil, "set JSON values (key=jsonval)")
	fl.BoolVar(&o.Derive, "derive", true, "derive values from the cluster's GPU nodes (--derive=false: chart defaults and your values only)")
}

func newInstall(f cluster.Getter, streams genericiooptions.IOStreams, verb string) *cobra.Command {
	o := NewOperatorOptions(streams)
	cmd := &cobra.Command{
		Use:   verb,
		Short: map[string]string{"install": "Install the GPU Operator, or upgrade it when installed", "upgrade": "Upgrade the GPU Operator, or install it when missing"}[verb],
		Long: `Install or upgrade the NVIDIA GPU Operator (both work as 'helm upgrade --install').
The namespace (default gpu-operator) is created with the privileged Pod Security label when
missing. A first install is atomic unless --atomic=false: a failed install is removed
rather than left half-installed. --wait then follows every component until ClusterPolicy
cluster-policy is ready or --timeout.`,
		Example: `  kubectl gpu operator install --dry-run
  kubectl gpu operator install --wait
  kubectl gpu operator upgrade --version v26.7.0 --set dcgmExporter.enabled=false
  kubectl gpu operator install --chart ./gpu-operator-v26.7.0.tgz   # air-gapped`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.atomicSet = cmd.Flags().Changed("atomic")
			if err := o.Complete(f); err != nil {
				return err
			}
			return o.RunInstall(cmd.Context())
		},
	}
	o.chartFlags(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&o.Wait, "wait", false, "wait until ClusterPolicy is ready (progress per component), or --timeout")
	fl.DurationVar(&o.Timeout, "timeout", o.Timeout, "time to wait for Helm operations and --wait")
	fl.BoolVar(&o.Atomic, "atomic", false, "roll back (upgrade) or remove (install) on failure; default on for a first install")
	fl.BoolVar(&o.DryRun, "dry-run", false, "print the values with their reasons and the manifest summary; change nothing")
	fl.BoolVar(&o.ReuseValues, "reuse-values", false, "upgrade: reuse the release's values and merge these on top")
	fl.BoolVar(&o.ResetValues, "reset-values", false, "upgrade: reset to the chart's values, then apply these")
	fl.BoolVar(&o.LabelNodes, "label-nodes", false, "apply the node labels the derived values need (mixed clusters)")
	return cmd
}

// Complete resolves the namespace: --namespace when given, else gpu-operator.
func (o *OperatorOptions) Complete(f cluster.Getter) error {
	o.getter = f
	var err error
	if o.namespace, err = cluster.NamespaceOr(f, op.DefaultNamespace); err != nil {
		return err
	}
	if o.ReuseValues && o.ResetValues {
		return cliexit.Usagef("--reuse-values and --reset-values exclude each other")
	}
	return nil
}

// prepare loads the chart and computes the final values.
func (o *OperatorOptions) prepare(ctx context.Context) (*op.Helm, *chart.Chart, *op.ValuesDoc, error) {
	h, err := op.NewHelm(o.getter, o.namespace, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	user, err := o.Values.MergeValues(getter.All(h.Settings))
	if err != nil {
		return nil, nil, nil, cliexit.Usagef("bad values: %s: check -f / --set syntax (key=value, a.b=c, list[0]=x)", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	c, err := h.LoadChart(op.ChartSource{Chart: o.Chart, Repo: o.Repo, Version: o.Version, Devel: o.Devel,
		VersionGiven: o.versionFlag != nil && o.versionFlag()})
	if err != nil {
		return nil, nil, nil, err
	}
	var d op.Derivation
	if o.Derive {
		cs, err := o.getter.Clientset()
		if err != nil {
			return nil, nil, nil, err
		}
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, nil, nil, cluster.APIError("list nodes", err)
		}
		d = op.Derive(nodes.Items)
	}
	final := op.Merge(&d, user)
	doc := &op.ValuesDoc{TypeMeta: report.Meta(op.ValuesKind), Chart: c.Metadata.Name + "-" + c.Metadata.Version,
		Values: final, Derived: d.Values, NodeLabels: d.NodeLabels,
		Warnings: append(d.Warnings, op.StaleKeys(user, c.Values, c.Metadata.Version)...)}
	if doc.Derived == nil {
		doc.Derived = []op.Derived{}
	}
	for _, w := range doc.Warnings {
		fmt.Fprintf(o.Streams.ErrOut, "warning: %s\n", w)
	}
	return h, c, doc, nil
}

// RunInstall installs or upgrades the release.
func (o *OperatorOptions) RunInstall(ctx context.Context) error {
	h, c, doc, err := o.prepare(ctx)
	if err != nil {
		return err
	}
	cs, err := o.getter.Clientset()
	if err != nil {
		return err
	}
	cur, err := h.Current(o.ReleaseName)
	if err != nil {
		return err
	}
	atomic := o.Atomic
	if cur == nil && !o.atomicSet {
		atomic = true // first install: no half-installed release
	}
	if !o.DryRun {
		if err := nodepod.EnsureNamespaceNoPods(ctx, cs, o.namespace, nodepod.PSAPrivileged); err != nil {
			return err
		}
		if o.LabelNodes {
			for _, l := range doc.NodeLabels {
				patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, l.Key, l.Value)
				if _, err := cs.CoreV1().Nodes().Patch(ctx, l.Node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
					return cluster.APIError("label node "+l.Node, err)
				}
				fmt.Fprintf(o.Streams.ErrOut, "labelled node %s %s=%s\n", l.Node, l.Key, l.Value)
			}
		} else if len(doc.NodeLabels) > 0 {
			fmt.Fprintf(o.Streams.ErrOut, "warning: %d GPU nodes need a label for the derived values (see 'kubectl gpu operator values'); pass --label-nodes to apply them\n", len(doc.NodeLabels))
		}
	}
	rel, err := h.InstallOrUpgrade(ctx, c, doc.Values, op.InstallOptions{
		ReleaseName: o.ReleaseName, Wait: o.Wait || atomic, Timeout: o.Timeout, Atomic: atomic,
		DryRun: o.DryRun, ReuseValues: o.ReuseValues, ResetValues: o.ResetValues,
	})
	if err != nil {
		return err
	}
	if o.DryRun {
		if err := doc.WriteText(o.Streams.Out); err != nil {
			return err
		}
		fmt.Fprintf(o.Streams.Out, "\n# Manifest summary (dry run, nothing changed):\n%s", manifestSummary(rel))
		return nil
	}
	fmt.Fprintf(o.Streams.Out, "release %s revision %d %s: chart %s (app %s) in namespace %s\n", rel.Name, rel.Version, rel.Info.Status,
		c.Metadata.Name+"-"+c.Metadata.Version, c.Metadata.AppVersion, o.namespace)
	if !o.Wait {
		return nil
	}
	return o.waitReady(ctx, h)
}

// waitReady follows the status until ClusterPolicy is ready or the timeout.
func (o *OperatorOptions) waitReady(ctx context.Context, h *op.Helm) error {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	tty := report.IsTerminal(o.Streams.ErrOut)
	last := ""
	for {
		st, err := o.collect(ctx, h)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return err
		}
		if st.Ready {
			if tty {
				fmt.Fprint(o.Streams.ErrOut, "\r\033[K")
			}
			fmt.Fprintln(o.Streams.Out, "GPU Operator ready: ClusterPolicy cluster-policy is ready")
			return nil
		}
		if s := st.Summary(); s != last {
			if tty {
				fmt.Fprintf(o.Streams.ErrOut, "\r\033[Kwaiting: %s", s)
			} else {
				fmt.Fprintf(o.Streams.ErrOut, "waiting: %s\n", s)
			}
			last = s
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
			continue
		}
		break
	}
	if tty {
		fmt.Fprintln(o.Streams.ErrOut)
	}
	if context.Cause(ctx) != nil && ctx.Err() == context.Canceled {
		return cliexit.ErrInterrupted
	}
	st, err := o.collect(context.WithoutCancel(ctx), h)
	if err != nil {
		return err
	}
	_ = st.WriteText(o.Streams.Out)
	return cliexit.Failuresf("the GPU Operator is not ready after %s: %s: %s", o.Timeout, st.Failing, st.Hint)
}

func (o *OperatorOptions) collect(ctx context.Context, h *op.Helm) (*op.Status, error) {
	cs, err := o.getter.Clientset()
	if err != nil {
		return nil, err
	}
	cfg, err := o.getter.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	rel, err := h.ReleaseStatus(o.ReleaseName)
	if err != nil {
		return nil, err
	}
	return op.CollectStatus(ctx, cs, dyn, o.namespace, rel)
}

func manifestSummary(rel *release.Release) string {
	counts := map[string]int{}
	for _, doc := range strings.Split(rel.Manifest, "\n---") {
		for _, line := range strings.Split(doc, "\n") {
			if strings.HasPrefix(line, "kind: ") {
				counts[strings.TrimPrefix(line, "kind: ")]++
				break
			}
		}
	}
	var kinds []string
	for k := range counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	for _, k := range kinds {
		fmt.Fprintf(&b, "#   %-32s %d\n", k, counts[k])
	}
	return b.String()
}

func newValues(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOperatorOptions(streams)
	cmd := &cobra.Command{
		Use:   "values",
		Short: "Show the chart values install would use, and why each derived value is what it is",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(f); err != nil {
				return err
			}
			var err error
			if o.format, err = report.ParseFormat(o.Output, report.Table, report.JSON, report.YAML); err != nil {
				return err
			}
			_, _, doc, err := o.prepare(cmd.Context())
			if err != nil {
				return err
			}
			return report.Print(o.Streams.Out, o.format, doc)
		},
	}
	o.chartFlags(cmd)
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: table (a commented values file), json or yaml")
	return cmd
}

func newStatus(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOperatorOptions(streams)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Report the release, ClusterPolicy, every operand and the validators; exit 1 when not ready",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(f); err != nil {
				return err
			}
			var err error
			if o.format, err = report.ParseFormat(o.Output, report.Table, report.JSON, report.YAML); err != nil {
				return err
			}
			h, err := op.NewHelm(o.getter, o.namespace, nil)
			if err != nil {
				return err
			}
			st, err := o.collect(cmd.Context(), h)
			if err != nil {
				return err
			}
			if err := report.Print(o.Streams.Out, o.format, st); err != nil {
				return err
			}
			if !st.Ready {
				return cliexit.Silent{Code: cliexit.Failures}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.ReleaseName, "release-name", o.ReleaseName, "Helm release name")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: table, json or yaml")
	return cmd
}

func newUninstall(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	o := NewOperatorOptions(streams)
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove the GPU Operator release (and with --keep-crds=false its CRDs); nodes are untouched",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(f); err != nil {
				return err
			}
			if !o.Yes {
				if !report.IsTerminal(o.Streams.In) {
					return cliexit.Usagef("uninstall removes the GPU Operator from the cluster: pass --yes to confirm when not at a terminal")
				}
				fmt.Fprintf(o.Streams.ErrOut, "Remove release %s from namespace %s? [y/N] ", o.ReleaseName, o.namespace)
				var answer string
				_, _ = fmt.Fscanln(o.Streams.In, &answer)
				if answer != "y" && answer != "yes" {
					return cliexit.Usagef("not confirmed: nothing removed")
				}
			}
			h, err := op.NewHelm(o.getter, o.namespace, nil)
			if err != nil {
				return err
			}
			if err := h.Uninstall(o.ReleaseName, o.Timeout); err != nil {
				return err
			}
			fmt.Fprintf(o.Streams.Out, "release %s uninstalled from namespace %s\n", o.ReleaseName, o.namespace)
			if !o.KeepCRDs {
				return o.removeCRDs(cmd.Context())
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.ReleaseName, "release-name", o.ReleaseName, "Helm release name")
	cmd.Flags().BoolVar(&o.KeepCRDs, "keep-crds", true, "keep the operator's CRDs (ClusterPolicy, NVIDIADriver, NFD); --keep-crds=false removes them")
	cmd.Flags().BoolVar(&o.Yes, "yes", false, "do not ask for confirmation")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", o.Timeout, "time for Helm's uninstall and its hooks")
	return cmd
}

// operatorCRDGroups are the API groups of the CRDs the chart installs.
var operatorCRDGroups = []string{"nvidia.com", "nfd.k8s-sigs.io"}

func (o *OperatorOptions) removeCRDs(ctx context.Context) error {
	cfg, err := o.getter.ToRESTConfig()
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	crdGVR := crdResource()
	list, err := dyn.Resource(crdGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return cluster.APIError("list CustomResourceDefinitions", err)
	}
	for _, crd := range list.Items {
		for _, g := range operatorCRDGroups {
			if strings.HasSuffix(crd.GetName(), "."+g) {
				if err := dyn.Resource(crdGVR).Delete(ctx, crd.GetName(), metav1.DeleteOptions{}); err != nil {
					return cluster.APIError("delete CRD "+crd.GetName(), err)
				}
				fmt.Fprintf(o.Streams.Out, "CRD %s removed\n", crd.GetName())
			}
		}
	}
	return nil
}
