package mirror

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"helm.sh/helm/v3/pkg/chart/loader"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/mirror"
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
	pub, mir := httptest.NewServer(registry.New()), httptest.NewServer(registry.New())
	defer pub.Close()
	defer mir.Close()
	public, _ := mirror.ParseTarget(strings.TrimPrefix(pub.URL, "http://"), true)
	// The install's values put the chart's images in the public registry (what a site whose
	// source is itself a registry does), and stand-ins live there.
	pubVals, _, err := mirror.Values(ch, map[string]any{}, public)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b, _ := yaml.Marshal(pubVals)
	pubFile := filepath.Join(dir, "public.yaml")
	if err := os.WriteFile(pubFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	agent, _ := public.Map("ghcr.io/kubectl-gpu/gpu-node-agent:v0.0.0-test")
	vec, _ := public.Map("nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0")
	args := []string{"--chart", chartPath, "--derive=false", "-f", pubFile, "--driver-os", "ubuntu22.04", "--agent-image", agent, "--verify-image", vec, "--source-insecure"}
	out, _, err := run(t, append(args, "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var list mirror.List
	if err := yaml.Unmarshal([]byte(out), &list); err != nil || len(list.Images) < 8 {
		t.Fatalf("%v %s", err, out)
	}
	for _, im := range list.Images {
		img, _ := random.Image(256, 1)
		ref, err := name.ParseReference(im.Ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
	}
	valuesOut := filepath.Join(dir, "mirror-values.yaml")
	to := strings.TrimPrefix(mir.URL, "http://") + "/gpu"
	out, _, err = run(t, append(args, "--to", to, "--insecure", "--values-out", valuesOut)...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "images copied, 0 already in the mirror") || !strings.Contains(out, "kubectl gpu prep --image "+to+"/kubectl-gpu/gpu-node-agent:v0.0.0-test") {
		t.Fatalf("output:\n%s", out)
	}
	// A second run copies nothing.
	if out, _, err = run(t, append(args, "--to", to, "--insecure", "--values-out", valuesOut)...); err != nil || !strings.Contains(out, "0 images copied") {
		t.Fatalf("second run: %v\n%s", err, out)
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
