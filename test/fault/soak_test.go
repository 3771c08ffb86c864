package fault

import (
	"context"
	"math/rand"
	"os"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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

// TestSoakPrepKilled (make soak): prep's client killed with SIGKILL while its Jobs run
// cannot clean up; the cluster must: each Job finishes (its pod completes, or its
// activeDeadlineSeconds ends it) and the TTL controller deletes it
// ttlSecondsAfterFinished (300 s) later, with its pod. Measures how long after the kill
// nothing of that run is left.
func TestSoakPrepKilled(t *testing.T) {
	if d, err := time.ParseDuration(os.Getenv("KGPU_SOAK")); err != nil || d <= 0 {
		t.Skip("set KGPU_SOAK to a duration (make soak) to run the soak tests")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	const ns = "kgpu-killed"
	cs := env.Cluster.Client
	sel := nodepod.LabelManagedBy + "=" + nodepod.ManagedBy
	cmd := env.Command(ctx, append([]string{"gpu", "prep", "--namespace", ns, "--parallel", "20", "--timeout", "5m"}, names(20)...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	for {
		jobs, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err == nil && len(jobs.Items) > 0 {
			break
		}
		select {
		case <-exited:
			t.Fatalf("prep ended before any Job appeared: %s", stderr.String())
		case <-ctx.Done():
			t.Fatal("prep's Jobs never appeared")
		case <-time.After(20 * time.Millisecond):
		}
	}
	time.Sleep(300 * time.Millisecond) // let it create the rest
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-exited
	jobs, _ := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
	t.Logf("killed prep with SIGKILL while %d of its Jobs existed", len(jobs.Items))
	var finished time.Duration
	for {
		jobs, err1 := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		pods, err2 := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err1 == nil && err2 == nil {
			done := 0
			for _, j := range jobs.Items {
				for _, c := range j.Status.Conditions {
					if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
						done++
					}
				}
			}
			if finished == 0 && done == len(jobs.Items) {
				finished = time.Since(killed)
			}
			if len(jobs.Items) == 0 && len(pods.Items) == 0 {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("%s after the kill: %d Jobs and %d pods of the killed prep are still there", time.Since(killed).Round(time.Second), len(jobs.Items), len(pods.Items))
		}
		time.Sleep(time.Second)
	}
	gone := time.Since(killed)
	t.Logf("the cluster removed the killed prep's Jobs and pods %.0f s after the kill (every Job finished within %.1f s; ttlSecondsAfterFinished 300)", gone.Seconds(), finished.Seconds())
	_ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
}
