package mirror

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/registry"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
)

// ChartPath is where the chart goes in a mirror: MIRROR/charts/gpu-operator, an OCI chart
// as helm push writes it (apart from the operator's image, MIRROR/nvidia/gpu-operator).
const ChartPath = "charts/" + op.ChartName

// ArchiveCharts is the directory of an OCI layout written by ToArchive that holds the chart
// archives carried with the images.
const ArchiveCharts = "charts"

// ChartRef is the chart's oci:// reference in the mirror, without its version.
func (t Target) ChartRef() string { return "oci://" + t.String() + "/" + ChartPath }

// ChartRefOf is the oci:// reference of the chart named name in the mirror (where
// 'kubectl gpu mirror --to' pushes it: MIRROR/charts/NAME), without its version.
func (t Target) ChartRefOf(name string) string { return "oci://" + t.String() + "/charts/" + name }

// PackageChart writes the chart as a .tgz into dir (Helm's own packaging, as helm package)
// and returns its path.
func PackageChart(ch *chart.Chart, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", cliexit.Usagef("cannot write the chart into %s: %v", dir, err)
	}
	p, err := chartutil.Save(ch, dir)
	if err != nil {
		return "", cliexit.Usagef("cannot write the chart into %s: %v", dir, err)
	}
	return p, nil
}

// MirroredCharts are the charts mirror carries: the GPU Operator's, and the device plugin's
// and DCGM exporter's (mirror --device-plugin).
var MirroredCharts = map[string]bool{op.ChartName: true, dp.ChartName: true, dp.DCGMChartName: true}

func mirroredChartNames() []string {
	var out []string
	for n := range MirroredCharts {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// PushChart pushes a chart archive into the mirror at charts/NAME with Helm's registry client
// (what helm push writes, so operator install --chart oci://… and helm install read it),
// unless the mirror holds that version already. Credentials as for the images (the Docker
// config and its helpers, then Helm's registry config); plain HTTP when the target is
// insecure.
func PushChart(ctx context.Context, tgz string, t Target, o CopyOptions) (CopyResult, error) {
	data, err := os.ReadFile(tgz)
	if err != nil {
		return CopyResult{}, cliexit.Usagef("cannot read the chart %s: %v", tgz, err)
	}
	ch, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil || ch.Metadata == nil {
		return CopyResult{}, cliexit.Usagef("%s is not a chart archive: %v", tgz, err)
	}
	tag := strings.ReplaceAll(ch.Metadata.Version, "+", "_") // OCI tags have no '+' (Helm's rule)
	ref := t.String() + "/charts/" + ch.Metadata.Name + ":" + tag
	r := CopyResult{Image: "chart " + ch.Metadata.Name + " " + ch.Metadata.Version, Mirror: "oci://" + ref}
	if !MirroredCharts[ch.Metadata.Name] {
		return r, cliexit.Usagef("%s is chart %q, not one this tool installs (%s)", tgz, ch.Metadata.Name, strings.Join(mirroredChartNames(), ", "))
	}
	dref, err := name.ParseReference(ref, t.nameOpts()...)
	if err != nil {
		return r, cliexit.Usagef("%v", err)
	}
	if have, err := remote.Head(dref, o.remote(ctx)...); err == nil {
		r.Digest, r.Skipped = have.Digest.String(), true
		if o.Progress != nil {
			fmt.Fprint(o.Progress, chartLine(r))
		}
		return r, nil
	}
	opts := []registry.ClientOption{registry.ClientOptWriter(io.Discard)}
	if t.Insecure {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	rc, err := registry.NewClient(opts...)
	if err != nil {
		return r, cliexit.Usagef("cannot set up the OCI registry client: %v", err)
	}
	res, err := rc.Push(data, ref)
	if err != nil {
		r.Error = registryError("push the chart to", ref, err)
		return r, cliexit.Failuresf("%s", r.Error)
	}
	r.Digest = res.Manifest.Digest
	if o.Progress != nil {
		fmt.Fprint(o.Progress, chartLine(r))
	}
	return r, nil
}

// ChartsInArchive are the chart archives an OCI layout written by ToArchive carries.
func ChartsInArchive(dir string) []string {
	l, _ := filepath.Glob(filepath.Join(dir, ArchiveCharts, "*.tgz"))
	return l
}

// chartLine is the progress line of a chart push.
func chartLine(r CopyResult) string {
	state := "pushed"
	if r.Skipped {
		state = "present"
	}
	return fmt.Sprintf("%s -> %s: %s\n", r.Image, r.Mirror, state)
}
