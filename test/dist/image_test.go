package dist

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

// TestAgentImage assembles the node-agent image without Docker (hack/image), reads it back
// as an image, and runs the agent from the image's own files (chroot into its filesystem).
func TestAgentImage(t *testing.T) {
	d := t.TempDir()
	agent := filepath.Join(d, "gpu-node-agent")
	if err := harness.BuildAgent(agent); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(d, "image.tar")
	run(t, harness.RepoRoot(), nil, "go", "run", "./hack/image", "-agent", agent, "-tag", "ghcr.io/kubectl-gpu/gpu-node-agent:"+version, "-out", out)
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != runtime.GOARCH || cfg.OS != "linux" || cfg.Config.User != "65532:65532" || strings.Join(cfg.Config.Entrypoint, " ") != "/usr/local/bin/gpu-node-agent" {
		t.Fatalf("config: %+v", cfg.Config)
	}
	layers, _ := img.Layers()
	if len(layers) != 1 {
		t.Fatalf("%d layers", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rootfs := filepath.Join(d, "rootfs")
	want, _ := os.ReadFile(agent)
	found := map[string]bool{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(rootfs, h.Name)
		if h.Typeflag == tar.TypeDir {
			_ = os.MkdirAll(p, 0o755)
			continue
		}
		b, _ := io.ReadAll(tr)
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, os.FileMode(h.Mode)); err != nil {
			t.Fatal(err)
		}
		found["/"+h.Name] = true
		if h.Name == "usr/local/bin/gpu-node-agent" && !bytes.Equal(b, want) {
			t.Fatal("the image's agent is not the built one")
		}
	}
	if !found["/usr/local/bin/gpu-node-agent"] || !found["/usr/bin/nsenter"] {
		t.Fatalf("image files: %v", found)
	}
	// Run it from the image's filesystem: its own loader and libc.
	cmd := exec.Command("chroot", rootfs, "/usr/local/bin/gpu-node-agent", "check", "--host-root", "/", "--node", "image-test")
	b, err := cmd.Output()
	if err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("chroot needs root: %v", err)
		}
		t.Fatalf("agent in the image: %v", err)
	}
	r, err := rep.Parse(b)
	if err != nil || r.Node != "image-test" {
		t.Fatalf("report from the image: %v\n%s", err, b)
	}
}
