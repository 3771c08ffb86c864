package e2e

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"helm.sh/helm/v3/pkg/chart/loader"

	"github.com/kubectl-gpu/kubectl-gpu/common/mirror"
	"github.com/kubectl-gpu/kubectl-gpu/common/mirror/mirrortest"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

// TestAirGappedWalk follows the air-gapped section of docs/guide.md on the local cluster: the
// images the install needs and the chart, copied outside into an OCI archive and inside from
// it into the mirror; the values file that points the chart at the mirror; the operator installed with
// it (every image of the release the mirror's); prep and verify with their images from the
// mirror, verify passing. The registries are go-containerregistry's on 127.0.0.1: the
// "public" one holds stand-in images (small, random, not the real ones) under every name
// the real chart asks for, moved there by a values file as a site's own source registry
// would be (nothing outside this machine is reachable); kwok runs no container, so the
// images are named, not pulled.
func TestAirGappedWalk(t *testing.T) {
	chart := chartPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ch, err := loader.Load(chart)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pub := mirrortest.NewPublic(t, ch, dir, verify.DefaultImage)
	mir := httptest.NewServer(registry.New())
	defer mir.Close()
	pubFile, agent, vec := pub.ValuesFile, pub.AgentImage, pub.VerifyImage
	src := []string{"--chart", chart, "-f", pubFile, "--agent-image", agent, "--verify-image", vec, "--source-insecure"}

	// kubectl gpu mirror: every image the install needs (the chart rendered with the values
	// derived from this cluster's nodes), seeded in the public registry as stand-ins.
	r := env.Gpu(ctx, append([]string{"mirror", "-o", "json"}, src...)...)
	var list mirror.List
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &list) != nil || len(list.Images) < 8 {
		t.Fatalf("mirror list: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	mirrortest.Seed(t, list.Refs())
	// Outside: into an archive. Inside: from the archive into the mirror, then the values.
	archive := filepath.Join(dir, "gpu-images")
	if r := env.Gpu(ctx, append([]string{"mirror", "--to-archive", archive}, src...)...); r.Code != 0 {
		t.Fatalf("--to-archive: exit %d\n%s", r.Code, r.Stderr)
	}
	to := strings.TrimPrefix(mir.URL, "http://") + "/gpu"
	if r := env.Gpu(ctx, append([]string{"mirror", "--from-archive", archive, "--to", to, "--insecure"}, src...)...); r.Code != 0 {
		t.Fatalf("--from-archive: exit %d\n%s", r.Code, r.Stderr)
	}
	// Inside, the chart is the one the archive carried, now in the mirror.
	inChart := []string{"--chart", "oci://" + to + "/charts/gpu-operator", "--version", ch.Metadata.Version, "--plain-http"}
	inside := append(append([]string{}, inChart...), src[2:]...)
	values := filepath.Join(dir, "gpu-operator-mirror-values.yaml")
	r = env.Gpu(ctx, append([]string{"mirror", "--to", to, "--insecure", "--values-out", values}, inside...)...)
	if r.Code != 0 || !strings.Contains(r.Stdout+r.Stderr, "0 images copied") || !strings.Contains(r.Stdout, "already in the mirror at oci://"+to+"/charts/gpu-operator") {
		t.Fatalf("--to after the archive: exit %d (want every image and the chart already there)\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}

	// The operator from the mirror (its chart too): every image of the installed release is
	// the mirror's.
	r = env.Gpu(ctx, append(append([]string{"operator", "install"}, inChart...), "-f", values)...)
	if r.Code != 0 {
		t.Fatalf("operator install: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	defer env.Gpu(context.Background(), "operator", "uninstall", "--yes", "--keep-crds=false")
	manifest := helmCLI(t, helmEnv(t), "get", "manifest", "gpu-operator", "-n", "gpu-operator")
	ro := mirror.RenderOptions{ReleaseName: "gpu-operator", Namespace: "gpu-operator"}
	imgs, err := mirror.ChartImages(manifest, ro)
	if err != nil || len(imgs) < 3 {
		t.Fatalf("images of the release: %v %v", err, imgs)
	}
	for _, im := range imgs {
		if !strings.HasPrefix(im.Ref, to+"/") {
			t.Errorf("the release names %s (%s), not from the mirror", im.Ref, im.From)
		}
	}

	// prep and verify with their images from the mirror; verify passes.
	mAgent, mVec := to+"/kubectl-gpu/gpu-node-agent:v0.0.0-test", to+"/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0"
	outcomes(t, []string{"gpu-a100-0"}, nil)
	stop := harness.WatchPodImages(t, ctx, env.Cluster.Client, nodepod.DefaultNamespace)
	r = env.Gpu(ctx, "verify", "gpu-a100-0", "--image", mVec, "-o", "json", "--timeout", "60s")
	var vr verify.Report
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &vr) != nil || vr.Summary.Passed != 1 {
		t.Fatalf("verify with the mirror's image: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	// prep's agent answers nothing here (no node simulation in this test): only the image
	// its Job asks for is checked.
	_ = env.Gpu(ctx, "prep", "gpu-a100-0", "--image", mAgent, "--timeout", "20s")
	seen := stop()
	if !seen[mVec] || !seen[mAgent] {
		t.Errorf("pods ran images %v, want verify's %s and prep's %s", seen, mVec, mAgent)
	}
	noVerifyPods(t)
	noPrepJobs(t)
}
