package mirror

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"helm.sh/helm/v3/pkg/chart"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// What the node agent's and the verify image's list entries say they are for.
const (
	agentFrom  = "kubectl gpu prep (node agent)"
	verifyFrom = "kubectl gpu verify"
)

// ListKind is the kind of the image list document.
const ListKind = "ImageList"

// List is every image an install needs.
type List struct {
	report.TypeMeta `json:",inline"`
	Chart           string   `json:"chart"`
	DriverOS        []string `json:"driverOS,omitempty"`
	Images          []Image  `json:"images"`
	Warnings        []string `json:"warnings,omitempty"`
	// charts are the charts rendered, the first the one Chart names (mirror --to and
	// --to-archive carry them too).
	charts []*chart.Chart
	// devicePlugin: the list is mirror --device-plugin's.
	devicePlugin bool
}

// LoadedChart is the (first) chart the list was rendered from.
func (l *List) LoadedChart() *chart.Chart { return l.charts[0] }

// Request is what install the list is for.
type Request struct {
	Values op.ValuesRequest
	// AgentImage and VerifyImage are prep's and verify's images.
	AgentImage  string
	VerifyImage string
	// DriverOS are the driver image's OS tags; empty: read from the GPU nodes when the
	// chart deploys the driver and the cluster answers.
	DriverOS    []string
	ReleaseName string
}

// Images lists every image of an install: the chart rendered with the values install would
// use (derived ones included), the node agent and the verify image.
func Images(ctx context.Context, c *op.Client, req Request) (*List, error) {
	ch, doc, err := c.Values(ctx, req.Values)
	if err != nil {
		return nil, err
	}
	l := &List{TypeMeta: report.Meta(ListKind), Chart: doc.Chart, Warnings: doc.Warnings, charts: []*chart.Chart{ch}}
	ro := RenderOptions{ReleaseName: req.ReleaseName, Namespace: c.Namespace, DriverOS: req.DriverOS}
	if req.Values.DRA {
		ro.APIVersions = []string{"resource.k8s.io/v1", "resource.k8s.io/v1/DeviceClass"}
	}
	if len(ro.DriverOS) == 0 && driverOn(doc.Values) && (req.Values.Derive || req.Values.DRA) {
		if ro.DriverOS, err = nodeOS(ctx, c); err != nil {
			return nil, err
		}
	}
	if len(ro.DriverOS) == 0 && driverOn(doc.Values) {
		l.Warnings = append(l.Warnings, "the driver image's tag ends with the nodes' OS (such as -ubuntu22.04): pass --driver-os, or let the cluster answer, to list it whole")
	}
	l.DriverOS = ro.DriverOS
	manifest, err := Render(ch, doc.Values, ro)
	if err != nil {
		return nil, err
	}
	imgs, err := ChartImages(manifest, ro)
	if err != nil {
		return nil, err
	}
	l.Images = append(l.Images, imgs...)
	l.addOwn(req)
	return l, nil
}

// addOwn adds prep's and verify's images and sorts the list.
func (l *List) addOwn(req Request) {
	if req.AgentImage != "" {
		l.Images = append(l.Images, Image{Ref: req.AgentImage, From: agentFrom})
	}
	if req.VerifyImage != "" {
		l.Images = append(l.Images, Image{Ref: req.VerifyImage, From: verifyFrom})
	}
	sort.SliceStable(l.Images, func(i, j int) bool { return l.Images[i].Ref < l.Images[j].Ref })
}

// DevicePluginImages lists every image of a device-plugin install (mirror --device-plugin):
// each chart of the plan rendered with its values, the node agent and the verify image.
func DevicePluginImages(p *dp.Plan, req Request) (*List, error) {
	l := &List{TypeMeta: report.Meta(ListKind), devicePlugin: true}
	var names []string
	seen := map[string]bool{}
	for i, r := range p.Releases {
		ch := p.Chart(i)
		names = append(names, r.Chart)
		l.charts = append(l.charts, ch)
		l.Warnings = append(l.Warnings, r.Warnings...)
		ro := RenderOptions{ReleaseName: r.Release, Namespace: p.Namespace}
		manifest, err := Render(ch, r.Values, ro)
		if err != nil {
			return nil, err
		}
		imgs, err := ChartImages(manifest, ro)
		if err != nil {
			return nil, err
		}
		for _, im := range imgs {
			if !seen[im.Ref] {
				seen[im.Ref] = true
				l.Images = append(l.Images, im)
			}
		}
	}
	l.Chart = strings.Join(names, ", ")
	l.addOwn(req)
	return l, nil
}

// driverOn tells whether the chart deploys the driver (driver.enabled, default true).
func driverOn(values map[string]any) bool {
	d, _ := values["driver"].(map[string]any)
	return d == nil || d["enabled"] != false
}

// nodeOS are the OS tags of the GPU nodes.
func nodeOS(ctx context.Context, c *op.Client) ([]string, error) {
	nodes, err := c.CS.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cluster.APIError("list nodes", err)
	}
	seen := map[string]bool{}
	var out []string
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if !inventory.IsGPUNode(n) {
			continue
		}
		if tag := DriverOSTag(n.Status.NodeInfo.OSImage); tag != "" && !seen[tag] {
			seen[tag] = true
			out = append(out, tag)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Resolve fills in the digests of the images their registries give within a few seconds
// each (the others stay without one).
func Resolve(ctx context.Context, l *List, o CopyOptions) {
	var nopts []name.Option
	if o.SourceInsecure {
		nopts = append(nopts, name.Insecure)
	}
	for i := range l.Images {
		ref, err := name.ParseReference(l.Images[i].Ref, nopts...)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if d, err := remote.Head(ref, o.remote(cctx)...); err == nil {
			l.Images[i].Digest = d.Digest.String()
		}
		cancel()
	}
}

// Refs are the list's image references.
func (l *List) Refs() []string {
	out := make([]string, len(l.Images))
	for i, im := range l.Images {
		out[i] = im.Ref
	}
	return out
}

// Rows prints the list as a table.
func (l *List) Rows(wide bool) ([]string, [][]string) {
	header := []string{"IMAGE", "FROM"}
	if wide {
		header = append(header, "DIGEST")
	}
	var rows [][]string
	for _, im := range l.Images {
		row := []string{im.Ref, im.From}
		if wide {
			row = append(row, im.Digest)
		}
		rows = append(rows, row)
	}
	return header, rows
}
