package mirror

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"sigs.k8s.io/yaml"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/kubectl-gpu/kubectl-gpu/test/procmem"
)

// BenchmarkMirrorTo: `kubectl-gpu mirror --to` (the built binary, 4 copies at a time) of the
// real chart's image set into an empty registry, against crane.Copy of the same images one
// after another into another empty registry, in the same run. Every image is a two-platform
// index of 3 layers per platform, served by registries on 127.0.0.1 that keep their blobs on
// disk; once with 4 MiB layers (240 MiB copied) and once with 16 MiB layers (960 MiB).
// Reports the ratio (goal ≤ 1.3), the speed-up of the parallel copies, the plugin process's
// peak RSS while copying and while only listing (same flags without --to): layers stream, so
// the copy adds little to the listing's peak and the same with layers four times larger.
func BenchmarkMirrorTo(b *testing.B) {
	ch := realChart(b)
	bin := filepath.Join(b.TempDir(), "kubectl-gpu")
	build := exec.Command("go", "build", "-o", bin, "./plugins/kubectl-gpu")
	build.Dir = filepath.Join("..", "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	for _, mib := range []int64{4, 16} {
		b.Run(fmt.Sprintf("layer=%dMiB", mib), func(b *testing.B) { mirrorTo(b, ch, bin, mib) })
	}
}

func mirrorTo(b *testing.B, ch *chart.Chart, bin string, layerMiB int64) {
	dir := b.TempDir()
	public := serve(b, diskRegistry(b))
	vals, _, err := Values(ch, map[string]any{}, public)
	if err != nil {
		b.Fatal(err)
	}
	pubFile := filepath.Join(dir, "public.yaml")
	vb, _ := yaml.Marshal(vals)
	if err := os.WriteFile(pubFile, vb, 0o644); err != nil {
		b.Fatal(err)
	}
	agent, _ := public.Map("ghcr.io/kubectl-gpu/gpu-node-agent:v0.0.0-bench")
	vec, _ := public.Map("nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0")
	ro := RenderOptions{ReleaseName: "gpu-operator", Namespace: "gpu-operator", DriverOS: []string{"ubuntu22.04"}}
	manifest, err := Render(ch, vals, ro)
	if err != nil {
		b.Fatal(err)
	}
	imgs, err := ChartImages(manifest, ro)
	if err != nil {
		b.Fatal(err)
	}
	refs := []string{agent, vec}
	for _, im := range imgs {
		refs = append(refs, im.Ref)
	}
	for _, r := range refs {
		if err := remote.WriteIndex(mustRefB(b, r), bigIndex(b, layerMiB)); err != nil {
			b.Fatal(err)
		}
	}
	run := func(extra ...string) int64 {
		cmd := exec.Command(bin, append([]string{"mirror", "--chart", os.Getenv("KGPU_GPU_OPERATOR_CHART"), "--derive=false", "-f", pubFile,
			"--driver-os", "ubuntu22.04", "--agent-image", agent, "--verify-image", vec, "--source-insecure"}, extra...)...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(dir, "none"))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		kib, err := procmem.Run(cmd)
		if err != nil {
			b.Fatalf("mirror: %v\n%s", err, out.Bytes())
		}
		return kib
	}
	listKiB := run()
	var ours, seq time.Duration
	var peakKiB int64
	for i := 0; i < b.N; i++ {
		a, c := serve(b, diskRegistry(b)), serve(b, diskRegistry(b))
		t0 := time.Now()
		peakKiB = max(peakKiB, run("--to", a.String(), "--insecure", "--values-out", filepath.Join(dir, "values.yaml")))
		ours += time.Since(t0)
		t1 := time.Now()
		for _, r := range refs {
			dst, _ := c.Map(r)
			if err := crane.Copy(r, dst, crane.Insecure); err != nil {
				b.Fatal(err)
			}
		}
		seq += time.Since(t1)
	}
	b.ReportMetric(ours.Seconds()/float64(b.N), "mirror-s/op")
	b.ReportMetric(seq.Seconds()/float64(b.N), "crane-sequential-s/op")
	b.ReportMetric(float64(ours)/float64(seq), "ratio")
	b.ReportMetric(float64(seq)/float64(ours), "speedup")
	b.ReportMetric(float64(peakKiB)/1024, "client-peak-MiB")
	b.ReportMetric(float64(listKiB)/1024, "list-peak-MiB")
	b.ReportMetric(float64(len(refs)*6*int(layerMiB)), "MiB-copied")
	b.ReportMetric(float64(len(refs)), "images")
}

// diskRegistry keeps its blobs on disk (in the test's directory), so the heap measured is
// the copy's, not the registries' storage.
func diskRegistry(b *testing.B) http.Handler {
	return registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(registry.NewDiskBlobHandler(b.TempDir())))
}

func bigIndex(b *testing.B, layerMiB int64) v1.ImageIndex {
	var idx v1.ImageIndex = empty.Index
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(layerMiB<<20, 3)
		if err != nil {
			b.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return idx
}

func mustRefB(b *testing.B, s string) name.Reference {
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		b.Fatal(err)
	}
	return r
}
