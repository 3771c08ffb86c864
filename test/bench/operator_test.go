package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
)

// BenchmarkOperatorInstall: `kubectl gpu operator install` of the real GPU Operator chart
// against `helm install` (the real CLI, same version as the SDK) with the same chart file
// and values, each into its own namespace, one after the other (cluster-scoped objects allow one
// release at a time); both without --wait (kwok runs no
// operator). Uninstalls are not timed. Goal: ≤ 1.1×. kubectl's own start and plugin
// dispatch (about 0.2 s on this machine) is in the first figure; ratio-direct runs the plugin
// binary as helm is run.
func BenchmarkOperatorInstall(b *testing.B) {
	chart := os.Getenv("KGPU_GPU_OPERATOR_CHART")
	if chart == "" {
		b.Skip("KGPU_GPU_OPERATOR_CHART is not set")
	}
	ctx := context.Background()
	henv, runHelm := helmCLI(b)
	var ours, direct, theirs time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		r := env.Kubectl(ctx, henv, "gpu", "operator", "install", "--chart", chart, "-n", "bench-ours", "--atomic=false", "--set", "nfd.enabled=false")
		ours += time.Since(t0)
		if r.Code != 0 {
			b.Fatalf("kubectl gpu operator install: %s", r.Stderr)
		}
		// Cluster-scoped objects (ClusterRoles, CRDs) allow one release at a time.
		runHelm("uninstall", "gpu-operator", "-n", "bench-ours", "--wait")
		// The plugin binary itself, started as helm is (kubectl's dispatch left out).
		t0 = time.Now()
		r = env.Plugin(ctx, henv, "operator", "install", "--chart", chart, "-n", "bench-ours", "--atomic=false", "--set", "nfd.enabled=false")
		direct += time.Since(t0)
		if r.Code != 0 {
			b.Fatalf("kubectl-gpu operator install: %s", r.Stderr)
		}
		runHelm("uninstall", "gpu-operator", "-n", "bench-ours", "--wait")
		t1 := time.Now()
		runHelm("install", "gpu-operator", chart, "-n", "bench-helm", "--create-namespace", "--set", "nfd.enabled=false")
		theirs += time.Since(t1)
		runHelm("uninstall", "gpu-operator", "-n", "bench-helm", "--wait")
	}
	b.ReportMetric(ours.Seconds()/float64(b.N), "plugin-s/op")
	b.ReportMetric(theirs.Seconds()/float64(b.N), "helm-s/op")
	b.ReportMetric(float64(ours)/float64(theirs), "ratio")
	b.ReportMetric(direct.Seconds()/float64(b.N), "plugin-direct-s/op")
	b.ReportMetric(float64(direct)/float64(theirs), "ratio-direct")
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
