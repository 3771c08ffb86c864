package mirror

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"helm.sh/helm/v3/pkg/chart/loader"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/mirror"
	"github.com/kubectl-gpu/kubectl-gpu/common/mirror/mirrortest"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
)

func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	cmd := NewCmdMirror(clustertest.New(), streams)
	cmd.SetArgs(append([]string{}, args...))
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// TestMirrorToWritesValuesThatUseTheMirror: mirror --to over the real chart whose images
// live in a "public" registry on 127.0.0.1 (stand-ins); the values file it writes makes the
// chart name the mirror only, and prep's and verify's --image flags are printed.
func TestMirrorToWritesValuesThatUseTheMirror(t *testing.T) {
	chartPath := os.Getenv("KGPU_GPU_OPERATOR_CHART")
	if chartPath == "" {
		t.Skip("KGPU_GPU_OPERATOR_CHART is not set: the GPU Operator chart (../shared/testdata/charts, set by .ci/run) is needed")
	}
	ch, err := loader.Load(chartPath)
	if err != nil {
		t.Fatal(err)
	}
	// The install's values put the chart's images in the public registry (what a site whose
	// source is itself a registry does), and stand-ins live there.
	dir := t.TempDir()
	pub := mirrortest.NewPublic(t, ch, dir, "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0")
	mir := httptest.NewServer(registry.New())
	defer mir.Close()
	pubFile, agent, vec := pub.ValuesFile, pub.AgentImage, pub.VerifyImage
	args := []string{"--chart", chartPath, "--derive=false", "-f", pubFile, "--driver-os", "ubuntu22.04", "--agent-image", agent, "--verify-image", vec, "--source-insecure"}
	out, _, err := run(t, append(args, "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var list mirror.List
	if err := yaml.Unmarshal([]byte(out), &list); err != nil || len(list.Images) < 8 {
		t.Fatalf("%v %s", err, out)
	}
	mirrortest.Seed(t, list.Refs())
	valuesOut := filepath.Join(dir, "mirror-values.yaml")
	to := strings.TrimPrefix(mir.URL, "http://") + "/gpu"
	out, _, err = run(t, append(args, "--to", to, "--insecure", "--values-out", valuesOut)...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "images copied, 0 already in the mirror") || !strings.Contains(out, "kubectl gpu prep --image "+to+"/kubectl-gpu/gpu-node-agent:v0.0.0-test") {
		t.Fatalf("output:\n%s", out)
	}
	// The chart went with them, as an OCI chart Helm reads (here through the operator's own
	// loader, over plain HTTP as the printed command says).
	chartRef := "oci://" + to + "/charts/gpu-operator"
	if !strings.Contains(out, "chart gpu-operator "+ch.Metadata.Version+" pushed to "+chartRef+":"+ch.Metadata.Version) ||
		!strings.Contains(out, "kubectl gpu operator install --chart "+chartRef+" --version "+ch.Metadata.Version+" --plain-http -f "+valuesOut) {
		t.Fatalf("output does not show the chart pushed and the install command:\n%s", out)
	}
	c, err := op.NewOfflineClient(clustertest.New(), "gpu-operator", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Helm.LoadChart(op.Source(helmrelease.ChartSource{Chart: chartRef, Version: ch.Metadata.Version, PlainHTTP: true}))
	if err != nil {
		t.Fatalf("load the chart from the mirror: %v", err)
	}
	if got.Metadata.Version != ch.Metadata.Version || len(got.Templates) != len(ch.Templates) || len(got.CRDObjects()) != len(ch.CRDObjects()) {
		t.Errorf("chart from the mirror: version %s, %d templates, %d CRDs; want %s, %d, %d", got.Metadata.Version, len(got.Templates), len(got.CRDObjects()),
			ch.Metadata.Version, len(ch.Templates), len(ch.CRDObjects()))
	}
	// A second run copies nothing.
	if out, _, err = run(t, append(args, "--to", to, "--insecure", "--values-out", valuesOut)...); err != nil || !strings.Contains(out, "0 images copied") ||
		!strings.Contains(out, "chart gpu-operator "+ch.Metadata.Version+" already in the mirror at "+chartRef) {
		t.Fatalf("second run: %v\n%s", err, out)
	}
	// Once more, everything present: the text (golden, addresses and paths normalised) and
	// the same as a MirrorResult document.
	out, _, err = run(t, append(args, "--to", to, "--insecure", "--values-out", valuesOut)...)
	if err != nil {
		t.Fatal(err)
	}
	norm := strings.NewReplacer(strings.TrimPrefix(mir.URL, "http://"), "MIRROR", strings.TrimPrefix(pub.Server.URL, "http://"), "PUBLIC", dir, "DIR", ch.Metadata.Version, "VERSION")
	golden.Assert(t, "mirror.to.present.golden", []byte(norm.Replace(out)))
	out, _, err = run(t, append(args, "--to", to, "--insecure", "--values-out", valuesOut, "-o", "json")...)
	var res mirror.Result
	if err != nil || json.Unmarshal([]byte(out), &res) != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if res.Kind != mirror.ResultKind || res.APIVersion == "" || res.Mirror != to || len(res.Images) != len(list.Images) || res.Chart == nil || !res.Chart.Skipped ||
		res.ValuesFile != valuesOut || len(res.Use) != 3 {
		t.Errorf("-o json: %+v", res)
	}
	for _, im := range res.Images {
		if !im.Skipped || !strings.HasPrefix(im.Digest, "sha256:") || !strings.HasPrefix(im.Mirror, to+"/") {
			t.Errorf("-o json image: %+v", im)
		}
	}
	// A mirror that does not answer, or wants credentials: exit 2, one line, nothing on
	// stdout, no values file.
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer auth.Close()
	for _, bad := range []struct{ to, want string }{
		{"127.0.0.1:1/gpu", "the mirror 127.0.0.1:1/gpu cannot be written"},
		{strings.TrimPrefix(auth.URL, "http://") + "/gpu", "log in with 'docker login'"},
	} {
		vf := filepath.Join(dir, "none.yaml")
		out, _, err := run(t, append(args, "--to", bad.to, "--insecure", "--values-out", vf)...)
		if cliexit.Code(err, false) != cliexit.Usage || out != "" || !strings.Contains(err.Error(), bad.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("--to %s: exit %d %v, stdout %q", bad.to, cliexit.Code(err, false), err, out)
		}
		if _, err := os.Stat(vf); err == nil {
			t.Errorf("--to %s wrote the values file", bad.to)
		}
	}
	// Across the gap: the layout carries the chart, and --from-archive pushes it inside.
	inside := httptest.NewServer(registry.New())
	defer inside.Close()
	layoutDir := filepath.Join(dir, "layout")
	if out, _, err := run(t, append(args, "--to-archive", layoutDir)...); err != nil || len(mirror.ChartsInArchive(layoutDir)) != 1 {
		t.Fatalf("--to-archive: %v, charts %v\n%s", err, mirror.ChartsInArchive(layoutDir), out)
	}
	insideTo := strings.TrimPrefix(inside.URL, "http://") + "/gpu"
	out, _, err = run(t, "--from-archive", layoutDir, "--to", insideTo, "--insecure")
	if err != nil || !strings.Contains(out, "chart gpu-operator "+ch.Metadata.Version+" pushed to oci://"+insideTo+"/charts/gpu-operator:"+ch.Metadata.Version) {
		t.Fatalf("--from-archive: %v\n%s", err, out)
	}
	if _, err := c.Helm.LoadChart(op.Source(helmrelease.ChartSource{Chart: "oci://" + insideTo + "/charts/gpu-operator", Version: ch.Metadata.Version, PlainHTTP: true})); err != nil {
		t.Fatalf("load the chart pushed from the archive: %v", err)
	}
	// The chart with the written values names the mirror only.
	vb, err := os.ReadFile(valuesOut)
	if err != nil {
		t.Fatal(err)
	}
	var mv map[string]any
	if err := yaml.Unmarshal(vb, &mv); err != nil {
		t.Fatal(err)
	}
	ro := mirror.RenderOptions{ReleaseName: "gpu-operator", Namespace: "gpu-operator", DriverOS: []string{"ubuntu22.04"}}
	manifest, err := mirror.Render(ch, mv, ro)
	if err != nil {
		t.Fatal(err)
	}
	imgs, _ := mirror.ChartImages(manifest, ro)
	for _, im := range imgs {
		if !strings.HasPrefix(im.Ref, to+"/") {
			t.Errorf("%s (%s) is not from the mirror", im.Ref, im.From)
		}
	}
}

func TestMirrorBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--to", "not a registry"}, "is not REGISTRY[/PREFIX]"},
		{[]string{"--from-archive", "x"}, "add --to REGISTRY"},
		{[]string{"--from-archive", "x", "--to-archive", "y", "--to", "r.example.com"}, "exclude each other"},
		{[]string{"--from-archive", t.TempDir(), "--to", "127.0.0.1:1/gpu", "--insecure"}, "is not an OCI layout"},
		{[]string{"--parallel", "0"}, "--parallel"},
		{[]string{"-o", "xml"}, "xml"},
	} {
		out, _, err := run(t, tc.args...)
		if cliexit.Code(err, false) != cliexit.Usage || out != "" || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: exit %d %v, stdout %q", tc.args, cliexit.Code(err, false), err, out)
		}
	}
}

// TestMirrorDevicePlugin: mirror --device-plugin --dcgm-exporter over the real charts lists
// the device plugin's, node-feature-discovery's (its subchart) and the DCGM exporter's
// images; --to copies them from a "public" registry on 127.0.0.1 and pushes both charts; the
// device-plugin install the output names (--mirror) then takes the charts from the mirror
// and every image of both rendered charts is the mirror's.
func TestMirrorDevicePlugin(t *testing.T) {
	dpPath, dcgmPath := os.Getenv("KGPU_DEVICE_PLUGIN_CHART"), os.Getenv("KGPU_DCGM_EXPORTER_CHART")
	if dpPath == "" || dcgmPath == "" {
		t.Skip("KGPU_DEVICE_PLUGIN_CHART and KGPU_DCGM_EXPORTER_CHART are not set: the charts (../shared/testdata/charts, set by .ci/run) are needed")
	}
	t.Setenv("HELM_CACHE_HOME", t.TempDir())
	t.Setenv("HELM_CONFIG_HOME", t.TempDir())
	dpChart, err := loader.Load(dpPath)
	if err != nil {
		t.Fatal(err)
	}
	dcgmChart, err := loader.Load(dcgmPath)
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"--device-plugin", "--chart", dpPath, "--dcgm-exporter", "--dcgm-chart", dcgmPath, "--derive=false"}
	out, _, err := run(t, base...)
	if err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "mirror.device-plugin.golden", []byte(out))
	for _, want := range []string{"nvcr.io/nvidia/k8s-device-plugin:v0.20.0", "registry.k8s.io/nfd/node-feature-discovery:v0.19.0", "nvcr.io/nvidia/k8s/dcgm-exporter:4.5.3-4.8.2-distroless"} {
		if !strings.Contains(out, want) {
			t.Errorf("the list lacks %s:\n%s", want, out)
		}
	}

	dir := t.TempDir()
	pub := mirrortest.NewPublic(t, dpChart, dir, "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0")
	dcgmVals, _, err := mirror.Values(dcgmChart, map[string]any{}, pub.Target)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := yaml.Marshal(dcgmVals)
	dcgmFile := filepath.Join(dir, "dcgm-public.yaml")
	if err := os.WriteFile(dcgmFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	args := append(base, "-f", pub.ValuesFile, "--dcgm-values", dcgmFile, "--agent-image", pub.AgentImage, "--verify-image", pub.VerifyImage, "--source-insecure")
	out, _, err = run(t, append(args, "-o", "json")...)
	var list mirror.List
	if err != nil || json.Unmarshal([]byte(out), &list) != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	publicHost := strings.TrimPrefix(pub.Server.URL, "http://")
	for _, im := range list.Images {
		if !strings.HasPrefix(im.Ref, publicHost+"/") {
			// Fatal: nothing outside 127.0.0.1 may be written to.
			t.Fatalf("%s (%s) is not moved by the values to the public registry", im.Ref, im.From)
		}
	}
	mirrortest.Seed(t, list.Refs())
	mir := httptest.NewServer(registry.New())
	defer mir.Close()
	to := strings.TrimPrefix(mir.URL, "http://") + "/gpu"
	out, _, err = run(t, append(args, "--to", to, "--insecure")...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		fmt.Sprintf("%d images copied, 0 already in the mirror", len(list.Images)),
		"chart nvidia-device-plugin 0.20.0 pushed to oci://" + to + "/charts/nvidia-device-plugin:0.20.0",
		"chart dcgm-exporter 4.8.2 pushed to oci://" + to + "/charts/dcgm-exporter:4.8.2",
		"kubectl gpu device-plugin install --mirror " + to + " --plain-http --dcgm-exporter",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// What that install would do: both charts from the mirror, every image the mirror's.
	c, err := op.NewOfflineClient(clustertest.New(), dp.DefaultNamespace, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	target, _ := mirror.ParseTarget(to, true)
	req := dp.NewRequest()
	req.Derive, req.DCGM, req.Mirror = false, true, target
	req.Source = helmrelease.ChartSource{Chart: target.ChartRefOf(dp.ChartName), Version: dp.DefaultVersion, PlainHTTP: true}
	req.DCGMSource = helmrelease.ChartSource{Chart: target.ChartRefOf(dp.DCGMChartName), Version: dp.DCGMVersion, PlainHTTP: true}
	plan, err := dp.Values(context.Background(), c.Client, req)
	if err != nil {
		t.Fatalf("the install's charts from the mirror: %v", err)
	}
	for i, r := range plan.Releases {
		ro := mirror.RenderOptions{ReleaseName: r.Release, Namespace: dp.DefaultNamespace}
		manifest, err := mirror.Render(plan.Chart(i), r.Values, ro)
		if err != nil {
			t.Fatal(err)
		}
		imgs, _ := mirror.ChartImages(manifest, ro)
		if len(imgs) == 0 {
			t.Errorf("%s renders no image", r.Chart)
		}
		for _, im := range imgs {
			if !strings.HasPrefix(im.Ref, to+"/") {
				t.Errorf("%s: %s (%s) is not from the mirror", r.Chart, im.Ref, im.From)
			}
		}
	}
}
