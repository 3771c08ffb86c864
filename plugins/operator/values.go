package operator

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/helmflags"
	"github.com/kubectl-gpu/kubectl-gpu/plugins/verb"
)

// ValuesOptions are the flags of `operator values`.
type ValuesOptions struct {
	helmflags.ChartOptions
	Output string
	// ArgoNamespace is where Argo CD runs (-o application).
	ArgoNamespace string
	format        report.Format
	gitops        string
}

// GitOps output forms of `values`.
const (
	outputHelmRelease = "helmrelease"
	outputApplication = "application"
)

// NewCmdValues returns `operator values`.
func NewCmdValues(f cluster.Getter, streams genericiooptions.IOStreams) *cobra.Command {
	return newCmdValues(f, helmflags.Release{Streams: streams, NewClient: op.NewClient})
}

func newCmdValues(f cluster.Getter, ro helmflags.Release) *cobra.Command {
	o := &ValuesOptions{ChartOptions: helmflags.ChartOptions{Release: ro}}
	cmd := &cobra.Command{
		Use:   "values",
		Short: "Show the chart values install would use, and why each derived value is what it is",
		Args:  cobra.NoArgs,
		RunE:  verb.RunE(f, o, nil),
	}
	o.ChartFlags(cmd)
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: table (a commented values file), json, yaml, helmrelease (Flux: Namespace, HelmRepository, HelmRelease) or application (Argo CD)")
	cmd.Flags().StringVar(&o.ArgoNamespace, "argocd-namespace", "argocd", "with -o application: the namespace Argo CD runs in")
	return cmd
}

// Validate checks the flags.
func (o *ValuesOptions) Validate() error {
	if o.Output == outputHelmRelease || o.Output == outputApplication {
		o.gitops = o.Output
		if o.Chart != "" && !strings.HasPrefix(o.Chart, "oci://") {
			return cliexit.Usagef("-o %s needs a chart repository (--repo, or an oci:// --chart), not a local --chart: a GitOps controller pulls the chart itself", o.Output)
		}
		return nil
	}
	var err error
	o.format, err = report.ParseFormat(o.Output, report.Table, report.JSON, report.YAML)
	return err
}

// Run prints the values.
func (o *ValuesOptions) Run(ctx context.Context) error {
	_, ch, doc, err := o.ChartValues(ctx)
	if err != nil {
		return err
	}
	if o.gitops == "" {
		return report.Print(o.Streams.Out, o.format, doc)
	}
	repo := o.Repo
	if ref := o.ChartRef(); strings.HasPrefix(ref, "oci://") {
		repo = ref[:strings.LastIndex(ref, "/")] // an OCI chart: its repository is the path above it
	}
	if repo == "" {
		repo = op.DefaultRepo
	}
	src := helmrelease.GitOpsSource{Repo: repo, Chart: ch.Metadata.Name, Version: ch.Metadata.Version}
	if o.gitops == outputApplication {
		return helmrelease.WriteYAML(o.Streams.Out, helmrelease.ArgoApplication(src, o.ReleaseName, o.Namespace, o.ArgoNamespace, doc.Values))
	}
	return helmrelease.WriteYAML(o.Streams.Out, helmrelease.FluxObjects(src, o.ReleaseName, o.Namespace, doc.Values)...)
}
