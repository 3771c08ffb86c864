package deviceplugin

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/release"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// Request is one `device-plugin install`, `upgrade` or `values`: the charts and what decides
// their values. NewRequest gives the defaults.
type Request struct {
	ReleaseName string
	Source      helmrelease.ChartSource
	// User values (-f, --set…) of the device plugin chart, merged by Helm's rules; they win
	// over derived ones.
	User map[string]any
	// GFD turns GPU feature discovery (and its node-feature-discovery) on.
	GFD bool
	// Derive values from the cluster's GPU nodes.
	Derive bool
	// DRA is refused: the device plugin chart has no DRA mode.
	DRA     bool
	Sharing *Sharing
	// Mirror moves every image repository of both charts to it.
	Mirror helmrelease.RepositoryMapper
	// DCGM installs the DCGM exporter chart too, as release DCGMReleaseName with DCGMUser.
	DCGM            bool
	DCGMReleaseName string
	DCGMSource      helmrelease.ChartSource
	DCGMUser        map[string]any
	// Nodes, when set, are the nodes values are derived from and checked against in place
	// of the cluster's (kubectl gpu up: the nodes as its host changes will leave them).
	Nodes []corev1.Node
}

// NewRequest is a request with the defaults: both charts' default releases and versions,
// GPU feature discovery on, values derived.
func NewRequest() Request {
	return Request{ReleaseName: DefaultReleaseName, Source: helmrelease.ChartSource{Version: DefaultVersion},
		GFD: true, Derive: true, DCGMReleaseName: DCGMReleaseName, DCGMSource: helmrelease.ChartSource{Version: DCGMVersion}}
}

// Validate refuses what no cluster can satisfy.
func (r Request) Validate() error {
	switch {
	case r.DRA:
		return cliexit.Usagef("--dra: NVIDIA's device plugin chart has no DRA mode; GPUs through DRA come from NVIDIA's DRA driver (k8s-dra-driver-gpu), which 'kubectl gpu operator install --dra' installs with the GPU Operator")
	case r.ReleaseName == "":
		return cliexit.Usagef("--release-name must not be empty")
	case r.DCGM && r.DCGMReleaseName == "":
		return cliexit.Usagef("--dcgm-release-name must not be empty")
	case r.DCGM && r.DCGMReleaseName == r.ReleaseName:
		return cliexit.Usagef("--dcgm-release-name %q is the device plugin's release name: choose another", r.DCGMReleaseName)
	}
	return r.Sharing.Validate()
}

// PlanKind is the kind of the values document.
const PlanKind = "DevicePluginValues"

// Plan is what an install would do: each chart's release with its values and their reasons,
// the RuntimeClass it creates, and what refuses it (another device plugin, nodes not ready).
type Plan struct {
	report.TypeMeta `json:",inline"`
	Namespace       string        `json:"namespace"`
	Releases        []ReleasePlan `json:"releases"`
	// CreateRuntimeClass says why RuntimeClass nvidia is created ("": it is not).
	CreateRuntimeClass string `json:"createRuntimeClass,omitempty"`
	// OtherDevicePlugins already allocate GPUs: install refuses.
	OtherDevicePlugins []gpusoftware.GPUAllocator `json:"otherDevicePlugins,omitempty"`
	// UnreadyNodes lack what the plugin needs from the host: install refuses.
	UnreadyNodes []NodeProblem `json:"unreadyNodes,omitempty"`
	GPUNodes     int           `json:"gpuNodes"`

	charts []*chart.Chart
}

// ReleasePlan is one chart's release and values.
type ReleasePlan struct {
	Release    string                  `json:"release"`
	Chart      string                  `json:"chart"`
	Values     map[string]any          `json:"values"`
	Derived    []helmrelease.Derived   `json:"derived"`
	NodeLabels []helmrelease.NodeLabel `json:"nodeLabels,omitempty"`
	Warnings   []string                `json:"warnings,omitempty"`
}

// Chart is the loaded chart of release i.
func (p *Plan) Chart(i int) *chart.Chart { return p.charts[i] }

// ReleaseNames are the plan's releases, the device plugin's first.
func (p *Plan) ReleaseNames() []string {
	var out []string
	for _, r := range p.Releases {
		out = append(out, r.Release)
	}
	return out
}

// Values loads the charts and computes their values from the cluster; with a cluster it also
// finds what would refuse an install. Warnings go to the Client's Log.
func Values(ctx context.Context, c *helmrelease.Client, req Request) (*Plan, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	dpChart, err := c.Helm.LoadChart(Source(req.Source))
	if err != nil {
		return nil, err
	}
	var dcgmChart *chart.Chart
	if req.DCGM {
		if dcgmChart, err = c.Helm.LoadChart(DCGMSource(req.DCGMSource)); err != nil {
			return nil, err
		}
	}
	p := &Plan{TypeMeta: report.Meta(PlanKind), Namespace: c.Namespace}
	opts := Options{GFD: req.GFD, DCGM: req.DCGM, Sharing: req.Sharing}
	var d Derivation
	if c.CS == nil {
		d = Derive(nil, Facts{}, opts)
		d.DevicePlugin.Warnings = nil
	} else {
		nodes := &corev1.NodeList{Items: req.Nodes}
		if req.Nodes == nil {
			if nodes, err = c.CS.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
				return nil, cluster.APIError("list nodes", err)
			}
		}
		p.GPUNodes = len(GPUNodes(nodes.Items))
		if req.Derive {
			f, err := facts(ctx, c, req.ReleaseName)
			if err != nil {
				return nil, err
			}
			d = Derive(nodes.Items, f, opts)
		} else {
			d = Derive(nil, Facts{}, opts)
			d.DevicePlugin.Warnings = nil
		}
		p.CreateRuntimeClass = d.CreateRuntimeClass
		p.UnreadyNodes = Prerequisites(nodes.Items)
		if p.OtherDevicePlugins, err = otherAllocators(ctx, c, req.ReleaseName); err != nil {
			return nil, err
		}
	}
	add := func(name string, ch *chart.Chart, dv helmrelease.Derivation, user map[string]any) error {
		doc, err := c.Document(ch, dv, user, req.Mirror)
		if err != nil {
			return err
		}
		p.Releases = append(p.Releases, ReleasePlan{Release: name, Chart: doc.Chart, Values: doc.Values, Derived: doc.Derived, NodeLabels: doc.NodeLabels, Warnings: doc.Warnings})
		p.charts = append(p.charts, ch)
		return nil
	}
	if err := add(req.ReleaseName, dpChart, d.DevicePlugin, req.User); err != nil {
		return nil, err
	}
	if req.DCGM {
		if err := add(req.DCGMReleaseName, dcgmChart, d.DCGM, req.DCGMUser); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// otherAllocators are the GPU allocators other than this release's own device plugin.
func otherAllocators(ctx context.Context, c *helmrelease.Client, release string) ([]gpusoftware.GPUAllocator, error) {
	return gpusoftware.GPUAllocators(ctx, c.CS, c.Dyn, c.Namespace, release)
}

// facts reads what the derivation needs besides the nodes.
func facts(ctx context.Context, c *helmrelease.Client, releaseName string) (Facts, error) {
	var f Facts
	_, err := c.CS.NodeV1().RuntimeClasses().Get(ctx, RuntimeClassName, metav1.GetOptions{})
	switch {
	case err == nil:
		f.RuntimeClass = true
	case !apierrors.IsNotFound(err):
		return f, cluster.APIError("get RuntimeClass "+RuntimeClassName, err)
	}
	if _, err := c.CS.Discovery().ServerResourcesForGroupVersion(MonitoringGroupVersion); err == nil {
		f.Monitoring = true
	} else if !apierrors.IsNotFound(err) && !strings.Contains(err.Error(), "not found") {
		return f, cluster.APIError("ask the API server whether it serves "+MonitoringGroupVersion, err)
	}
	dss, err := c.CS.AppsV1().DaemonSets(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return f, cluster.APIError("list DaemonSets", err)
	}
	for i := range dss.Items {
		// The release's own NFD (the chart's subchart, running since an earlier install)
		// is not another one: counting it would turn it off at the next upgrade.
		if ds := &dss.Items[i]; isNFDWorker(ds) && !madeByRelease(ds, releaseName, c.Namespace) {
			f.NFD = ds.Namespace + "/" + ds.Name
			break
		}
	}
	return f, nil
}

// madeByRelease tells whether Helm release name in namespace ns made the DaemonSet.
func madeByRelease(ds *appsv1.DaemonSet, name, ns string) bool {
	return ds.Annotations["meta.helm.sh/release-name"] == name && ds.Annotations["meta.helm.sh/release-namespace"] == ns
}

// isNFDWorker tells whether a DaemonSet runs node-feature-discovery's worker.
func isNFDWorker(ds *appsv1.DaemonSet) bool {
	for _, c := range ds.Spec.Template.Spec.Containers {
		if strings.Contains(c.Image, "node-feature-discovery") && (len(c.Command) > 0 && strings.HasSuffix(c.Command[0], "nfd-worker") || strings.HasSuffix(ds.Name, "-worker")) {
			return true
		}
	}
	return false
}

// WriteText prints each release's values as a values file, the reasons as comments.
func (p *Plan) WriteText(w io.Writer) error {
	for i, r := range p.Releases {
		if i > 0 {
			fmt.Fprintln(w, "---")
		}
		fmt.Fprintf(w, "# Release %s in namespace %s\n", r.Release, p.Namespace)
		doc := helmrelease.ValuesDoc{Chart: r.Chart, Values: r.Values, Derived: r.Derived, NodeLabels: r.NodeLabels}
		if err := doc.WriteText(w); err != nil {
			return err
		}
	}
	if p.CreateRuntimeClass != "" {
		fmt.Fprintf(w, "# %s\n", p.CreateRuntimeClass)
	}
	for _, a := range p.OtherDevicePlugins {
		fmt.Fprintf(w, "# refused: %s already allocates GPUs\n", a)
	}
	for _, n := range p.UnreadyNodes {
		fmt.Fprintf(w, "# refused: node %s: %s\n", n.Node, strings.Join(n.Reasons, "; "))
	}
	return nil
}

// InstallRequest is how the releases are installed (Helm's own options).
type InstallRequest = helmrelease.InstallRequest

// Install checks what refuses the plan (exit 2, nothing changed), creates RuntimeClass
// nvidia when the plan says so, then installs or upgrades each release (the device plugin's
// first). req.ReleaseName is ignored: each release has its own.
func Install(ctx context.Context, c *helmrelease.Client, p *Plan, req InstallRequest) ([]*release.Release, error) {
	if len(p.OtherDevicePlugins) > 0 {
		var s, rm []string
		for _, a := range p.OtherDevicePlugins {
			s = append(s, a.String())
			if c := a.RemoveCommand(); c != "" {
				rm = append(rm, "'"+c+"'")
			}
		}
		how := "remove it"
		if len(rm) > 0 {
			how = "remove it (" + strings.Join(rm, ", ") + ")"
		}
		return nil, cliexit.Usagef("%s already allocates GPUs, and two device plugins on one node advertise its GPUs twice: nothing installed; %s, or on a GPU Operator keep its device plugin and skip this command", strings.Join(s, ", "), how)
	}
	if len(p.UnreadyNodes) > 0 {
		return nil, cliexit.WithCode(cliexit.Usage, &PrerequisitesError{Problems: p.UnreadyNodes, GPUNodes: p.GPUNodes})
	}
	// Two releases are checked both before either changes (a Helm dry run of each, against
	// the server for an upgrade): an upgrade of the device plugin followed by an exporter
	// the API server refuses (a ServiceMonitor whose CRD is going away) left one release
	// changed and the other not.
	if len(p.Releases) > 1 && !req.DryRun {
		for i, r := range p.Releases {
			// Only what is upgraded: a release installed afresh has nothing the API server
			// can check before it exists (Helm's dry run of an install renders on the client,
			// and swaps the configuration's cluster client and release store for fakes).
			if cur, err := c.Helm.Current(r.Release); err != nil || cur == nil || cur.Info == nil || cur.Info.Status == release.StatusUninstalled {
				continue
			}
			rq := req
			rq.ReleaseName, rq.DryRun, rq.Wait, rq.LabelNodes = r.Release, true, false, false
			doc := &helmrelease.ValuesDoc{Chart: r.Chart, Values: r.Values, Derived: r.Derived, NodeLabels: r.NodeLabels}
			if _, err := c.InstallChart(ctx, p.charts[i], doc, rq); err != nil {
				return nil, cliexit.WithCode(cliexit.Code(err, false), fmt.Errorf("nothing changed: release %s would fail, so neither release was installed or upgraded: %w", r.Release, err))
			}
		}
	}
	created := false
	if p.CreateRuntimeClass != "" && !req.DryRun {
		// Before the charts: the API server admits no pod naming a RuntimeClass that does not
		// exist.
		rc := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: RuntimeClassName, Labels: map[string]string{"app.kubernetes.io/managed-by": "kubectl-gpu"}}, Handler: RuntimeClassName}
		switch _, err := c.CS.NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{}); {
		case err == nil:
			created = true
			fmt.Fprintf(c.Log, "created RuntimeClass %s (handler %s)\n", RuntimeClassName, RuntimeClassName)
		case !apierrors.IsAlreadyExists(err):
			return nil, cluster.APIError("create RuntimeClass "+RuntimeClassName, err)
		}
	}
	var out []*release.Release
	for i, r := range p.Releases {
		rq := req
		rq.ReleaseName = r.Release
		rq.ValuesCommand = "kubectl gpu device-plugin values"
		doc := &helmrelease.ValuesDoc{Chart: r.Chart, Values: r.Values, Derived: r.Derived, NodeLabels: r.NodeLabels}
		rel, err := c.InstallChart(ctx, p.charts[i], doc, rq)
		if err != nil {
			if created && len(out) == 0 {
				// Nothing installed: the RuntimeClass made for it goes too.
				if derr := c.CS.NodeV1().RuntimeClasses().Delete(context.WithoutCancel(ctx), RuntimeClassName, metav1.DeleteOptions{}); derr == nil {
					fmt.Fprintf(c.Log, "removed RuntimeClass %s again: nothing was installed\n", RuntimeClassName)
				}
			}
			if len(out) > 0 {
				err = cliexit.WithCode(cliexit.Code(err, false), fmt.Errorf("release %s is installed; %w", out[0].Name, err))
			}
			return out, err
		}
		out = append(out, rel)
	}
	return out, nil
}

// Uninstall removes the releases that exist of names (the device plugin's and the DCGM
// exporter's); none of them existing is exit 2. RuntimeClass nvidia stays: other pods may
// use it. It returns the releases removed.
func Uninstall(ctx context.Context, c *helmrelease.Client, names []string, timeout time.Duration) ([]string, error) {
	var removed []string
	for _, n := range names {
		cur, err := c.Helm.Current(n)
		if err != nil {
			return removed, err
		}
		if cur == nil || cur.Info != nil && cur.Info.Status == release.StatusUninstalled {
			continue
		}
		if err := c.Helm.Uninstall(n, timeout); err != nil {
			return removed, err
		}
		removed = append(removed, n)
	}
	if len(removed) == 0 {
		return nil, cliexit.Usagef("no release %s in namespace %s: list releases with 'helm list -A'", strings.Join(names, " or "), c.Namespace)
	}
	return removed, nil
}
