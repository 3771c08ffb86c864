package deviceplugin

import (
	"context"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// ValuesOptions are the flags of `device-plugin values`.
type ValuesOptions struct {
	*ChartOptions
	Output        string
	ArgoNamespace string
	format        report.Format
	gitops        string
}

func newCmdValues(f cluster.Getter, ro helmflags.Release) *cobra.Command {
	o := &ValuesOptions{ChartOptions: newChartOptions(ro)}
	cmd := &cobra.Command{
		Use:   "values",
		Short: "Show the values install would use for each chart, and why each derived value is what it is",
		Long: `Show both charts' values as install would use them, each derived one with its reason, the
RuntimeClass install would create, and anything that would refuse the install (another
device plugin, GPU nodes not ready). -o helmrelease (Flux) or application (Argo CD) writes the
same releases as objects for a GitOps controller.`,
		Args: cobra.NoArgs,
		RunE: verb.RunE(f, o, nil),
	}
	o.flags(cmd)
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: table (commented values files), json, yaml, helmrelease (Flux: Namespace, HelmRepository, HelmRelease per chart) or application (Argo CD)")
	cmd.Flags().StringVar(&o.ArgoNamespace, "argocd-namespace", "argocd", "with -o application: the namespace Argo CD runs in")
	return cmd
}

// Validate checks the flags.
func (o *ValuesOptions) Validate() error {
	if err := o.ChartOptions.Validate(); err != nil {
		return err
	}
	if o.Output == "helmrelease" || o.Output == "application" {
		o.gitops = o.Output
		if o.Chart != "" && !strings.HasPrefix(o.Chart, "oci://") || o.DCGMChart != "" && !strings.HasPrefix(o.DCGMChart, "oci://") {
			return cliexit.Usagef("-o %s needs chart repositories (--repo, or an oci:// --chart), not a local chart: a GitOps controller pulls the charts itself", o.Output)
		}
		return nil
	}
	var err error
	o.format, err = report.ParseFormat(o.Output, report.Table, report.JSON, report.YAML)
	return err
}

// Run prints the values.
func (o *ValuesOptions) Run(ctx context.Context) error {
	_, plan, err := o.Plan(ctx, !o.Derive)
	if err != nil {
		return err
	}
	if o.gitops == "" {
		return report.Print(o.Streams.Out, o.format, plan)
	}
	var objs []map[string]any
	for i, r := range plan.Releases {
		ch := plan.Chart(i)
		src := helmrelease.GitOpsSource{Chart: ch.Metadata.Name, Version: ch.Metadata.Version}
		if i == 0 {
			src.Repo, src.RepoName = gitopsRepo(o.ChartRef(), o.Repo, dp.DefaultRepo), "nvidia-device-plugin"
		} else {
			ref := o.DCGMChart
			if ref == "" && o.Mirror != "" && o.DCGMRepo == "" {
				ref = o.ChartRefOf(dp.DCGMChartName)
			}
			src.Repo, src.RepoName = gitopsRepo(ref, o.DCGMRepo, dp.DCGMRepo), "nvidia-dcgm-exporter"
		}
		if o.gitops == "application" {
			objs = append(objs, helmrelease.ArgoApplication(src, r.Release, o.Namespace, o.ArgoNamespace, r.Values))
			continue
		}
		flux := helmrelease.FluxObjects(src, r.Release, o.Namespace, r.Values)
		if i > 0 {
			flux = flux[1:] // the Namespace once
		}
		objs = append(objs, flux...)
	}
	if plan.CreateRuntimeClass != "" {
		objs = append(objs, map[string]any{"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
			"metadata": map[string]any{"name": dp.RuntimeClassName}, "handler": dp.RuntimeClassName})
	}
	return helmrelease.WriteYAML(o.Streams.Out, objs...)
}

// gitopsRepo is the repository a GitOps controller pulls the chart from: an oci:// chart's
// parent, else --repo, else the default.
func gitopsRepo(ref, repo, def string) string {
	switch {
	case strings.HasPrefix(ref, "oci://"):
		return ref[:strings.LastIndex(ref, "/")]
	case repo != "":
		return repo
	}
	return def
}
