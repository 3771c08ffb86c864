// Package dist tests the release as users get it: archives built twice are byte-identical,
// the Krew manifest passes krew's index rules and installs with the real krew (offline,
// from the local archive), and the installed plugin runs through kubectl's plugin lookup.
package dist

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

const version = "v0.1.0"

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	// A first `make dist` on a new machine compiles the dependencies for six platforms
	// (measured: 35 minutes on 2 busy cores); later ones take seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	// `go run` leaves its child running when killed: end the whole group, and do not wait
	// for pipes a leftover child would hold.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

type manifest struct {
	Metadata struct{ Name string }
	Spec     struct {
		Version   string
		Platforms []struct {
			Selector struct{ MatchLabels map[string]string } `json:"selector"`
			URI      string
			Sha256   string
			Bin      string
			Files    []struct{ From, To string }
		}
	}
}

func TestReleaseAndKrewInstall(t *testing.T) {
	root := harness.RepoRoot()
	a, b := t.TempDir(), t.TempDir()
	// Every platform once; linux/amd64 a second time into another directory.
	run(t, root, nil, "go", "run", "./hack/release/dist", "-version", version, "-out", a)
	run(t, root, nil, "go", "run", "./hack/release/dist", "-version", version, "-out", b, "-platforms", "linux/amd64")
	name := "kubectl-gpu_" + version + "_linux_amd64.tar.gz"
	x, _ := os.ReadFile(filepath.Join(a, name))
	y, _ := os.ReadFile(filepath.Join(b, name))
	if len(x) == 0 || !bytes.Equal(x, y) {
		t.Fatalf("two builds of %s differ (%d and %d bytes)", name, len(x), len(y))
	}
	sums, _ := os.ReadFile(filepath.Join(a, "checksums.txt"))
	if strings.Count(string(sums), "\n") != 6 {
		t.Fatalf("checksums.txt:\n%s", sums)
	}

	// The Krew manifest, rendered as krew-release-bot would.
	out := filepath.Join(t.TempDir(), "gpu.yaml")
	run(t, root, nil, "go", "run", "./hack/release/dist", "-version", version, "-out", a, "-krew", out)
	raw, _ := os.ReadFile(out)
	var m manifest
	if err := yaml.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	// krew-index rules: the name matches the file, the version is semver with a v, every
	// os/arch is covered once, sha256 is 64 hex digits matching the archive, LICENSE is
	// extracted, bin is one of the files.
	if m.Metadata.Name+".yaml" != filepath.Base(out) || !regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`).MatchString(m.Spec.Version) {
		t.Fatalf("name %q version %q", m.Metadata.Name, m.Spec.Version)
	}
	seen := map[string]bool{}
	for _, p := range m.Spec.Platforms {
		key := p.Selector.MatchLabels["os"] + "/" + p.Selector.MatchLabels["arch"]
		if seen[key] {
			t.Errorf("platform %s twice", key)
		}
		seen[key] = true
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(p.Sha256) {
			t.Errorf("%s: sha256 %q", key, p.Sha256)
		}
		arch, _ := os.ReadFile(filepath.Join(a, filepath.Base(p.URI)))
		sum := sha256.Sum256(arch)
		if hex.EncodeToString(sum[:]) != p.Sha256 {
			t.Errorf("%s: sha256 does not match %s", key, filepath.Base(p.URI))
		}
		license, bin := false, false
		for _, f := range p.Files {
			license = license || f.From == "LICENSE"
			bin = bin || f.From == p.Bin
		}
		if !license || !bin {
			t.Errorf("%s: files %v must extract LICENSE and %s", key, p.Files, p.Bin)
		}
	}
	if len(seen) != 6 {
		t.Fatalf("platforms %v", seen)
	}

	// Install with the real krew, offline, and run the plugin through kubectl.
	krew := filepath.Join(localcluster.DefaultBinDir(), "krew-v0.5.0", "krew")
	if _, err := os.Stat(krew); err != nil {
		if os.Getenv("KGPU_REQUIRE_E2E") == "1" {
			t.Fatalf("krew not built (%s): run make tools", krew)
		}
		t.Skipf("krew not built (%s): run make tools", krew)
	}
	kroot := t.TempDir()
	env := []string{"KREW_ROOT=" + kroot, "KREW_NO_UPGRADE_CHECK=1", "HOME=" + t.TempDir()}
	run(t, root, env, krew, "install", "--manifest="+out, "--archive="+filepath.Join(a, name))
	got := run(t, root, append(env, "PATH="+filepath.Join(kroot, "bin")+string(os.PathListSeparator)+os.Getenv("PATH")), "kubectl", "gpu", "version", "--client")
	if !strings.Contains(got, "Plugin:            "+version) && !strings.Contains(got, version) {
		t.Fatalf("kubectl gpu version after krew install:\n%s", got)
	}
}
