package fault

import (
	"context"
	"math/rand"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
)

// TestSoak (make soak; KGPU_SOAK=30m, skipped otherwise): verify and prep over 20 nodes, run
// whole and interrupted at random, again and again for the given time. Every run exits as
// it should, nothing is left after any of them, and the client's peak memory does not grow
// from the first runs to the last.
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("KGPU_SOAK"))
	if err != nil || d <= 0 {
		t.Skip("set KGPU_SOAK to a duration (make soak) to run the soak test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Minute)
	defer cancel()
	verifyPasses(t, ctx, 2*time.Second)
	report := agentReport(t)
	if err := env.Cluster.ServePodLogs(ctx, nodepod.DefaultNamespace, nodepod.Selector(prep.Component), "agent", func(p *corev1.Pod) string {
		return strings.Replace(report, `"mode":"check"`, `"mode":"check","node":"`+p.Spec.NodeName+`"`, 1)
	}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	verifyArgs := append([]string{"verify", "--timeout", "2m"}, names(20)...)
	prepArgs := append([]string{"prep", "--timeout", "2m"}, names(20)...)
	var firstPeak, lastPeak float64
	runs, interrupts := 0, 0
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		for _, c := range []struct {
			args []string
			want int
		}{{verifyArgs, 0}, {prepArgs, 1}} {
			r := env.Gpu(ctx, c.args...)
			if r.Code != c.want {
				t.Fatalf("run %d: %v: exit %d\n%s%s", runs, c.args[0], r.Code, r.Stdout, r.Stderr)
			}
			if runs < 2 {
				firstPeak = max(firstPeak, r.PeakRSSMiB)
			}
			lastPeak = r.PeakRSSMiB
			runs++
			leftovers(t, ctx)
			ir := run(t, ctx, time.Duration(100+rng.Intn(2500))*time.Millisecond, c.args...)
			if ir.signalled && ir.code == 130 {
				interrupts++
			} else if ir.code != c.want && ir.code != 130 {
				t.Fatalf("interrupted %s: exit %d\n%s", c.args[0], ir.code, ir.stderr)
			}
			leftovers(t, ctx)
		}
	}
	t.Logf("%s: %d whole runs, %d interrupted, nothing left after any; client peak %.1f MiB in the first runs, %.1f in the last", d, runs, interrupts, firstPeak, lastPeak)
	if lastPeak > firstPeak*1.25 {
		t.Fatalf("client peak memory grew from %.1f to %.1f MiB", firstPeak, lastPeak)
	}
}
