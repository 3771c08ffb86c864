package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

// BenchmarkOperatorInstall: `kubectl gpu operator install` of the real GPU Operator chart
// against `helm install` (the real CLI, same version as the SDK) with the same chart file
// and values, each into its own namespace, one after the other (cluster-scoped objects allow one
// release at a time); both without --wait (kwok runs no
// operator). Uninstalls are not timed. Medians of 9 interleaved pairs per b.N (pairs).
// Goal: ≤ 1.1×. kubectl's own start and plugin dispatch (about 0.2 s on this machine) is in
// the kubectl sub-benchmark; direct runs the plugin binary as helm is run.
func BenchmarkOperatorInstall(b *testing.B) {
	chart := os.Getenv("KGPU_GPU_OPERATOR_CHART")
	if chart == "" {
		b.Skip("KGPU_GPU_OPERATOR_CHART is not set")
	}
	ctx := context.Background()
	henv, runHelm := helmCLI(b)
	install := []string{"operator", "install", "--chart", chart, "-n", "bench-ours", "--atomic=false", "--set", "nfd.enabled=false"}
	// through is how the plugin is run: kubectl's dispatch (env.Kubectl) or the binary
	// itself, started as helm is (env.Plugin).
	through := func(kubectl bool) func() time.Duration {
		return func() time.Duration {
			run := func() harness.Result { return env.Plugin(ctx, henv, install...) }
			if kubectl {
				run = func() harness.Result { return env.Kubectl(ctx, henv, append([]string{"gpu"}, install...)...) }
			}
			t0 := time.Now()
			r := run()
			d := time.Since(t0)
			if r.Code != 0 {
				b.Fatalf("operator install (through kubectl: %v): %s", kubectl, r.Stderr)
			}
			// Cluster-scoped objects (ClusterRoles, CRDs) allow one release at a time.
			runHelm("uninstall", "gpu-operator", "-n", "bench-ours", "--wait")
			return d
		}
	}
	theirs := func() time.Duration {
		t0 := time.Now()
		runHelm("install", "gpu-operator", chart, "-n", "bench-helm", "--create-namespace", "--set", "nfd.enabled=false")
		d := time.Since(t0)
		runHelm("uninstall", "gpu-operator", "-n", "bench-helm", "--wait")
		return d
	}
	b.Run("kubectl", func(b *testing.B) { pairs(b, through(true), theirs, "plugin", "helm") })
	b.Run("direct", func(b *testing.B) { pairs(b, through(false), theirs, "plugin", "helm") })
}

// helmCLI is Helm's environment kept in the benchmark's own directories, and a runner of the
// real helm CLI (the SDK's version) on the local cluster that fails the benchmark on an error.
func helmCLI(b *testing.B) ([]string, func(args ...string)) {
	helm := filepath.Join(localcluster.DefaultBinDir(), "helm-v3.22.0", "helm")
	d := b.TempDir()
	henv := []string{"HELM_CACHE_HOME=" + filepath.Join(d, "c"), "HELM_CONFIG_HOME=" + filepath.Join(d, "f"), "HELM_DATA_HOME=" + filepath.Join(d, "d")}
	return henv, func(args ...string) {
		b.Helper()
		cmd := exec.Command(helm, args...)
		cmd.Env = append(append(os.Environ(), "KUBECONFIG="+env.Cluster.Kubeconfig), henv...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("helm %v: %v\n%s", args, err, out)
		}
	}
}
