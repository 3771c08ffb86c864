// Package bench measures kubectl-gpu against its baselines in the same run, on the local
// control plane with kwok-simulated nodes (see test/e2e for what is real). Run with
// `make bench`; each benchmark reports its own time, the baseline's and their ratio.
package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

var env *harness.Env

// Nodes is the size of the benchmark cluster (KGPU_BENCH_NODES, default 1000); Pods the
// number of GPU pods spread over it (KGPU_BENCH_PODS, default 10000).
var (
	Nodes = envInt("KGPU_BENCH_NODES", 1000)
	Pods  = envInt("KGPU_BENCH_PODS", 10000)
)

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		// `go test ./...` without -bench: nothing here to run, no cluster to start.
		os.Exit(m.Run())
	}
	os.Exit(harness.Main(m, &env, localcluster.NodeSpec{Profile: "a100", Prefix: "bench", Count: Nodes}))
}

var podsOnce sync.Once

// fillPods creates Pods one-GPU pods spread over the nodes (once per run).
func fillPods(b *testing.B) {
	podsOnce.Do(func() {
		ctx := context.Background()
		start := time.Now()
		c := env.Cluster
		sem := make(chan struct{}, 64)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		for i := 0; i < Pods; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func(i int) {
				defer wg.Done()
				defer func() { <-sem }()
				p := localcluster.GPUPod("default", fmt.Sprintf("load-%d", i), fmt.Sprintf("bench-%d", i%Nodes), 1)
				if _, err := c.Client.CoreV1().Pods("default").Create(ctx, p, metav1CreateOptions); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
		if firstErr != nil {
			b.Fatalf("create pods: %v", firstErr)
		}
		fmt.Fprintf(os.Stderr, "bench: %d nodes, %d pods created in %s\n", Nodes, Pods, time.Since(start).Round(time.Second))
	})
}
