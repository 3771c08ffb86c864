package mirror

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// The registries are go-containerregistry's pkg/registry on 127.0.0.1. The "public" one
// holds stand-in images (two platforms each, a few KiB, labelled as stand-ins) under every
// name the real GPU Operator chart asks for, at the chart's own paths: the chart is rendered
// with its repositories moved to that registry, which is what a mirror does too.

func realChart(t testing.TB) *chart.Chart {
	p := os.Getenv("KGPU_GPU_OPERATOR_CHART")
	if p == "" {
		t.Skip("KGPU_GPU_OPERATOR_CHART is not set: the GPU Operator chart (../shared/testdata/charts, set by .ci/run) is needed")
	}
	ch, err := loader.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func serve(t testing.TB, h http.Handler) Target {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	tg, err := ParseTarget(strings.TrimPrefix(srv.URL, "http://"), true)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// standIn is a two-platform index whose images are labelled as stand-ins for ref.
func standIn(t *testing.T, ref string) v1.ImageIndex {
	var idx v1.ImageIndex = empty.Index
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(512, 1)
		if err != nil {
			t.Fatal(err)
		}
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.Architecture, cf.OS = arch, "linux"
		cf.Config.Labels = map[string]string{"org.opencontainers.image.description": "stand-in for " + ref + " (kubectl-gpu tests): not the real image"}
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return idx
}

// publicImages renders the real chart with its repositories in the public registry and
// seeds a stand-in under every image the render names (plus agent and verify).
func publicImages(t *testing.T, ch *chart.Chart, public Target) []string {
	vals, _, err := Values(ch, map[string]any{}, public)
	if err != nil {
		t.Fatal(err)
	}
	ro := RenderOptions{ReleaseName: "gpu-operator", Namespace: "gpu-operator", DriverOS: []string{"ubuntu22.04", "ubuntu24.04"}}
	manifest, err := Render(ch, vals, ro)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := ChartImages(manifest, ro)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, im := range imgs {
		refs = append(refs, im.Ref)
	}
	agent, _ := public.Map("ghcr.io/kubectl-gpu/gpu-node-agent:v0.0.0-test")
	vec, _ := public.Map("nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0")
	refs = append(refs, agent, vec)
	for _, r := range refs {
		ref, err := name.ParseReference(r, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.WriteIndex(ref, standIn(t, r)); err != nil {
			t.Fatal(err)
		}
	}
	if len(refs) < 8 {
		t.Fatalf("only %d images from the chart: %v", len(refs), refs)
	}
	return refs
}

func digest(t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(r)
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	return d.Digest.String()
}

func TestCopyKeepsDigestsSkipsWhatIsThereAndResumes(t *testing.T) {
	ch := realChart(t)
	public, mirror := serve(t, registry.New()), serve(t, registry.New())
	mirror.Prefix = "gpu"
	refs := publicImages(t, ch, public)
	o := CopyOptions{Parallel: 4, SourceInsecure: true}

	// Interrupted after the first images: what was copied stays, the rest follows on rerun.
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	o.Progress = writerFunc(func() {
		if n++; n == 3 {
			cancel()
		}
	})
	if _, err := Copy(ctx, refs, mirror, o); !errors.Is(err, cliexit.ErrInterrupted) {
		t.Fatalf("interrupted copy: %v", err)
	}
	o.Progress = nil
	res, err := Copy(context.Background(), refs, mirror, o)
	if err != nil {
		t.Fatal(err)
	}
	skipped := 0
	for _, r := range res {
		if r.Skipped {
			skipped++
		}
		if !strings.HasPrefix(r.Mirror, mirror.String()+"/") || digest(t, r.Mirror) != digest(t, r.Image) || r.Digest != digest(t, r.Image) {
			t.Errorf("%s -> %s: digest differs or wrong place", r.Image, r.Mirror)
		}
	}
	if skipped < 3 || skipped == len(refs) {
		t.Fatalf("resumed run skipped %d of %d (the interrupted one copied at least 3)", skipped, len(refs))
	}
	// Every platform came along.
	idx, err := remote.Index(mustRef(t, res[0].Mirror))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := idx.IndexManifest(); len(m.Manifests) != 2 {
		t.Fatalf("%d platforms in the mirror, want 2", len(m.Manifests))
	}
	// A second run copies nothing.
	res, err = Copy(context.Background(), refs, mirror, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if !r.Skipped {
			t.Fatalf("second run copied %s again", r.Image)
		}
	}
}

func TestArchiveRoundTrip(t *testing.T) {
	ch := realChart(t)
	public, inside := serve(t, registry.New()), serve(t, registry.New())
	refs := publicImages(t, ch, public)
	dir := t.TempDir()
	o := CopyOptions{SourceInsecure: true}
	if err := ToArchive(context.Background(), refs, dir, o); err != nil {
		t.Fatal(err)
	}
	res, err := FromArchive(context.Background(), dir, inside, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(refs) {
		t.Fatalf("%d images from the archive, want %d", len(res), len(refs))
	}
	for _, r := range res {
		if digest(t, r.Mirror) != digest(t, r.Image) {
			t.Errorf("%s: digest differs after the archive", r.Image)
		}
	}
	// Not an OCI layout: one clear error, exit 2.
	if _, err := FromArchive(context.Background(), t.TempDir(), inside, o); cliexit.Code(err, false) != cliexit.Usage || !strings.Contains(err.Error(), "is not an OCI layout") {
		t.Fatalf("empty dir: %v", err)
	}
}

// TestValuesPointEveryImageAtTheMirror: the chart rendered with the mirror's values names
// only mirror images, in every image field and image env var of every rendered object.
func TestValuesPointEveryImageAtTheMirror(t *testing.T) {
	ch := realChart(t)
	tg, err := ParseTarget("registry.example.com:5000/gpu", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, install := range []map[string]any{
		{},
		{"driver": map[string]any{"enabled": false}, "toolkit": map[string]any{"enabled": false}},
		{"clusterPolicy": map[string]any{"deployCR": false}, "gpuCluster": map[string]any{"deployCR": true}, "driver": map[string]any{"nvidiaDriverCRD": map[string]any{"enabled": true}}},
	} {
		vals, keys, err := Values(ch, install, tg)
		if err != nil {
			t.Fatal(err)
		}
		ro := RenderOptions{ReleaseName: "gpu-operator", Namespace: "gpu-operator", DriverOS: []string{"ubuntu22.04"},
			APIVersions: []string{"resource.k8s.io/v1", "resource.k8s.io/v1/DeviceClass"}}
		merged := mergeMaps(install, vals)
		manifest, err := Render(ch, merged, ro)
		if err != nil {
			t.Fatal(err)
		}
		imgs, err := ChartImages(manifest, ro)
		if err != nil {
			t.Fatal(err)
		}
		if len(imgs) < 5 {
			t.Fatalf("%d images", len(imgs))
		}
		for _, im := range imgs {
			if !strings.HasPrefix(im.Ref, "registry.example.com:5000/gpu/") {
				t.Errorf("%v: %s (%s) is not from the mirror (keys moved: %v)", install, im.Ref, im.From, keys)
			}
		}
		// Nor does any rendered line name a public registry.
		for _, l := range strings.Split(manifest, "\n") {
			if strings.Contains(l, "nvcr.io") || strings.Contains(l, "registry.k8s.io") {
				t.Errorf("%v: rendered line %q names a public registry", install, strings.TrimSpace(l))
			}
		}
	}
}

func TestRegistryRefusals(t *testing.T) {
	// A registry that wants credentials: named, with how to log in.
	auth := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	public := serve(t, registry.New())
	ref, _ := public.Map("nvcr.io/nvidia/gpu-operator:v26.7.0")
	if err := remote.WriteIndex(mustRef(t, ref), standIn(t, ref)); err != nil {
		t.Fatal(err)
	}
	// Both are found before anything is copied: exit 2, one line, nothing written.
	res, err := Copy(context.Background(), []string{ref}, auth, CopyOptions{SourceInsecure: true})
	if cliexit.Code(err, false) != cliexit.Usage || res != nil || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "wants credentials (HTTP 401): log in with 'docker login'") || !strings.Contains(err.Error(), "nothing was copied") {
		t.Fatalf("401: %v", err)
	}
	// A registry that does not answer.
	down, _ := ParseTarget("127.0.0.1:1/gpu", true)
	res, err = Copy(context.Background(), []string{ref}, down, CopyOptions{SourceInsecure: true})
	if cliexit.Code(err, false) != cliexit.Usage || res != nil || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), "the mirror 127.0.0.1:1/gpu cannot be written") {
		t.Fatalf("down: %v", err)
	}
	// The same for a push from an archive.
	dir := t.TempDir()
	if err := ToArchive(context.Background(), []string{ref}, dir, CopyOptions{SourceInsecure: true}); err != nil {
		t.Fatal(err)
	}
	for _, to := range []Target{auth, down} {
		if res, err := FromArchive(context.Background(), dir, to, CopyOptions{}); cliexit.Code(err, false) != cliexit.Usage || res != nil {
			t.Errorf("--from-archive to %s: %v", to, err)
		}
	}
	for _, bad := range []string{"", "not a registry", "https://", "registry.example.com/UPPER/x", "host:notaport/x"} {
		if _, err := ParseTarget(bad, false); cliexit.Code(err, false) != cliexit.Usage {
			t.Errorf("ParseTarget(%q): %v", bad, err)
		}
	}
}

func TestDriverOSTag(t *testing.T) {
	for in, want := range map[string]string{
		"Ubuntu 22.04.5 LTS":                  "ubuntu22.04",
		"Ubuntu 24.04.1 LTS":                  "ubuntu24.04",
		"Red Hat Enterprise Linux 9.4 (Plow)": "rhel9.4",
		"Debian GNU/Linux 12 (bookworm)":      "debian12",
		"Container-Optimized OS from Google":  "",
		"":                                    "",
	} {
		if got := DriverOSTag(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// writerFunc calls f on every write (a progress line per image).
type writerFunc func()

func (f writerFunc) Write(p []byte) (int, error) { f(); return len(p), nil }

func mergeMaps(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if am, ok := out[k].(map[string]any); ok {
			if bm, ok := v.(map[string]any); ok {
				out[k] = mergeMaps(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}
