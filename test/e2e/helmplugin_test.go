package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

// TestHelmPlugin installs plugins/helm with the real helm CLI into a temporary HELM_PLUGINS
// and runs `helm gpu …` against the local cluster.
func TestHelmPlugin(t *testing.T) {
	helm := filepath.Join(localcluster.DefaultBinDir(), "helm-v3.22.0", "helm")
	if _, err := os.Stat(helm); err != nil {
		t.Skipf("helm CLI not built (%s): run make tools", helm)
	}
	d := t.TempDir()
	src := filepath.Join(d, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	manifest, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "plugins", "helm", "plugin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "plugin.yaml"), manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := harness.BuildPlugin(filepath.Join(src, "kubectl-gpu")); err != nil {
		t.Fatal(err)
	}
	henv := append(os.Environ(), "HELM_PLUGINS="+filepath.Join(d, "plugins"), "HELM_CACHE_HOME="+filepath.Join(d, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(d, "config"), "HELM_DATA_HOME="+filepath.Join(d, "data"), "KUBECONFIG="+env.Cluster.Kubeconfig)
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(context.Background(), helm, args...)
		cmd.Env = henv
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("plugin", "install", src); err != nil {
		t.Fatalf("helm plugin install: %v\n%s", err, out)
	}
	out, err := run("gpu", "version", "--require-server")
	if err != nil || !strings.Contains(out, "Server:") || !strings.Contains(out, "v1.36.3") {
		t.Fatalf("helm gpu version: %v\n%s", err, out)
	}
	// `helm gpu status` is the operator's status, in Helm's namespace.
	out, err = run("gpu", "status", "-n", "nowhere")
	if err == nil || !strings.Contains(out, "Release:        none in namespace nowhere") {
		t.Fatalf("helm gpu status: %v\n%s", err, out)
	}
}
