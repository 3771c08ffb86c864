package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// BenchmarkDevicePluginInstall: `kubectl gpu device-plugin install` of the real device
// plugin chart (GPU feature discovery and its node-feature-discovery on) against `helm
// install` (the real CLI, same version as the SDK) of the same chart file with the values
// ours derives (runtimeClassName nvidia, gfd.enabled, migStrategy none), each into its own
// namespace, one after the other (cluster-scoped objects allow one release at a time); both
// without --wait. Ours reads every node, checks each one's prerequisites and looks for
// other device plugins first: that is in its time. Uninstalls are not timed. Medians of 9
// interleaved pairs per b.N (pairs). Goal: ≤ 1.1×.
func BenchmarkDevicePluginInstall(b *testing.B) {
	chart := os.Getenv("KGPU_DEVICE_PLUGIN_CHART")
	if chart == "" {
		b.Skip("KGPU_DEVICE_PLUGIN_CHART is not set")
	}
	ctx := context.Background()
	prepAll(b, ctx)
	// The RuntimeClass exists for both (ours would create it on its first run only).
	rc := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: "nvidia"}, Handler: "nvidia"}
	if _, err := env.Cluster.Client.NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	henv, runHelm := helmCLI(b)
	ours := func() time.Duration {
		t0 := time.Now()
		r := env.Kubectl(ctx, henv, "gpu", "device-plugin", "install", "--chart", chart, "-n", "bench-ours", "--atomic=false")
		d := time.Since(t0)
		if r.Code != 0 {
			b.Fatalf("kubectl gpu device-plugin install: %s", r.Stderr)
		}
		runHelm("uninstall", "nvidia-device-plugin", "-n", "bench-ours", "--wait")
		return d
	}
	theirs := func() time.Duration {
		t0 := time.Now()
		runHelm("install", "nvidia-device-plugin", chart, "-n", "bench-helm", "--create-namespace",
			"--set", "runtimeClassName=nvidia", "--set", "gfd.enabled=true", "--set", "migStrategy=none")
		d := time.Since(t0)
		runHelm("uninstall", "nvidia-device-plugin", "-n", "bench-helm", "--wait")
		return d
	}
	pairs(b, ours, theirs, "plugin", "helm")
}

var prepOnce sync.Once

// prepAll annotates every node as prep leaves a host with a driver and the toolkit (once).
func prepAll(b *testing.B, ctx context.Context) {
	prepOnce.Do(func() {
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{
			rep.AnnotationDriver: "570.195.03", rep.AnnotationToolkit: "1.17.8-1", rep.AnnotationNvidiaRuntime: "true",
			rep.AnnotationDefaultRuntime: "runc", flavour.AnnotationPrefix + "reported-at": time.Now().UTC().Format(time.RFC3339)}}})
		sem := make(chan struct{}, 32)
		var wg sync.WaitGroup
		errs := make(chan error, Nodes)
		for i := 0; i < Nodes; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func(i int) {
				defer wg.Done()
				defer func() { <-sem }()
				if _, err := env.Cluster.Client.CoreV1().Nodes().Patch(ctx, fmt.Sprintf("bench-%d", i), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
					errs <- err
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatalf("annotate nodes: %v", err)
		}
	})
}
