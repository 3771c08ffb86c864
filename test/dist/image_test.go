package dist

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

// sysrootDir is where hack/release/agent-sysroot.sh (run by `make tools`) unpacks Debian's run-time
// files of the agent image per architecture.
func sysrootDir() string {
	if d := os.Getenv("KGPU_CACHE_DIR"); d != "" {
		return filepath.Join(d, "sysroot")
	}
	c, _ := os.UserCacheDir()
	return filepath.Join(c, "kubectl-gpu", "sysroot")
}

var elfMachine = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// TestAgentImage assembles the multi-arch node-agent image without Docker (hack/release/image) for
// linux/amd64 and linux/arm64 from agents built here (the arm64 one with Debian's cross
// compiler) and Debian's packages of each architecture, reads it back from the OCI layout's
// index and the per-architecture tarballs, and runs each architecture's agent and nsenter
// from the image's own files: this machine's through chroot, the other one under qemu-user
// with the image's filesystem as its library root. An architecture whose compiler or
// Debian files are missing is skipped with the reason.
func TestAgentImage(t *testing.T) {
	d := t.TempDir()
	var archs []string
	for _, arch := range []string{"amd64", "arm64"} {
		switch {
		case harness.AgentCC(arch) == "":
			t.Logf("SKIP linux/%s: no C compiler for it (Debian: gcc-aarch64-linux-gnu libc6-dev-arm64-cross; hack/testenv/deps.sh installs them)", arch)
			continue
		case !exists(filepath.Join(sysrootDir(), arch, ".complete")):
			t.Logf("SKIP linux/%s: no Debian run-time files in %s (make tools runs hack/release/agent-sysroot.sh)", arch, filepath.Join(sysrootDir(), arch))
			continue
		}
		if err := harness.BuildAgentFor(filepath.Join(d, "linux_"+arch, "gpu-node-agent"), arch); err != nil {
			t.Fatal(err)
		}
		archs = append(archs, arch)
	}
	if len(archs) == 0 {
		t.Skip("no architecture can be built here (see the lines above)")
	}
	tag := "ghcr.io/kubectl-gpu/gpu-node-agent:" + version
	run(t, harness.RepoRoot(), nil, "go", "run", "./hack/release/image", "-arch", strings.Join(archs, ","),
		"-agent", filepath.Join(d, "linux_{arch}", "gpu-node-agent"), "-sysroot", filepath.Join(sysrootDir(), "{arch}"),
		"-tag", tag, "-out", d, "-oci", filepath.Join(d, "oci"))

	// The OCI layout: one index under the tag, one image per architecture.
	p, err := layout.FromPath(filepath.Join(d, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 || tm.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != version {
		t.Fatalf("layout index: %+v", tm.Manifests)
	}
	idx, err := top.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(archs) {
		t.Fatalf("index holds %d images, want %d", len(im.Manifests), len(archs))
	}
	for i, arch := range archs {
		desc := im.Manifests[i]
		if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != arch {
			t.Fatalf("index entry %d: platform %+v, want linux/%s", i, desc.Platform, arch)
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		tb, err := tarball.ImageFromPath(filepath.Join(d, "gpu-node-agent_"+version+"_linux_"+arch+".tar"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if a, b := digest(t, img), digest(t, tb); a != b {
			t.Fatalf("linux/%s: the tarball's image %s is not the index's %s", arch, b, a)
		}
		t.Run(arch, func(t *testing.T) { checkAgentImage(t, img, arch, filepath.Join(d, "linux_"+arch, "gpu-node-agent")) })
	}

	// The release workflow's push step (make push-image) against a registry on 127.0.0.1:
	// the index arrives with its digest and every platform.
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	dst := strings.TrimPrefix(srv.URL, "http://") + "/kubectl-gpu/gpu-node-agent:" + version
	run(t, harness.RepoRoot(), nil, "go", "run", "./hack/release/push-image", "-oci", filepath.Join(d, "oci"), "-to", dst, "-insecure")
	ref, err := name.ParseReference(dst, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := remote.Index(ref)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := idx.Digest()
	got, _ := pushed.Digest()
	if pm, _ := pushed.IndexManifest(); got != want || len(pm.Manifests) != len(archs) {
		t.Fatalf("pushed %s with %d platforms, want %s with %d", got, len(pm.Manifests), want, len(archs))
	}
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func digest(t *testing.T, img v1.Image) string {
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// checkAgentImage unpacks img and runs its agent and nsenter from its own files.
func checkAgentImage(t *testing.T, img v1.Image, arch, agent string) {
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != arch || cfg.OS != "linux" || cfg.Config.User != "65532:65532" || strings.Join(cfg.Config.Entrypoint, " ") != "/usr/local/bin/gpu-node-agent" {
		t.Fatalf("config: %s/%s %+v", cfg.OS, cfg.Architecture, cfg.Config)
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
	rootfs := t.TempDir()
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
	for _, f := range []string{"/usr/local/bin/gpu-node-agent", "/usr/bin/nsenter"} {
		if !found[f] {
			t.Fatalf("image files: %v", found)
		}
		e, err := elf.Open(filepath.Join(rootfs, f))
		if err != nil {
			t.Fatal(err)
		}
		if e.Machine != elfMachine[arch] {
			t.Fatalf("%s is %v, want %v", f, e.Machine, elfMachine[arch])
		}
		e.Close()
	}
	// Run them from the image's filesystem: its own loader and libc.
	var agentCmd, nsenterCmd *exec.Cmd
	args := []string{"check", "--host-root", "/", "--node", "image-test"}
	if arch == runtime.GOARCH {
		if os.Geteuid() != 0 {
			t.Skip("running the image's files needs chroot, so root")
		}
		agentCmd = exec.Command("chroot", append([]string{rootfs, "/usr/local/bin/gpu-node-agent"}, args...)...)
		nsenterCmd = exec.Command("chroot", rootfs, "/usr/bin/nsenter", "--version")
	} else {
		qemu, err := exec.LookPath("qemu-" + map[string]string{"arm64": "aarch64", "amd64": "x86_64"}[arch])
		if err != nil {
			t.Skipf("linux/%s built and checked, not run: no qemu-user here (Debian: qemu-user)", arch)
		}
		agentCmd = exec.Command(qemu, append([]string{"-L", rootfs, filepath.Join(rootfs, "usr/local/bin/gpu-node-agent")}, args...)...)
		nsenterCmd = exec.Command(qemu, "-L", rootfs, filepath.Join(rootfs, "usr/bin/nsenter"), "--version")
	}
	b, err := agentCmd.Output()
	if err != nil {
		t.Fatalf("linux/%s agent in the image: %v", arch, err)
	}
	r, err := rep.Parse(b)
	if err != nil || r.Node != "image-test" {
		t.Fatalf("report from the linux/%s image: %v\n%s", arch, err, b)
	}
	t.Logf("linux/%s agent from the image: node %s, os %q, kernel %s, arch %s", arch, r.Node, r.OS, r.Kernel, r.Arch)
	if out, err := nsenterCmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "util-linux") {
		t.Fatalf("linux/%s nsenter in the image: %v\n%s", arch, err, out)
	}
}
