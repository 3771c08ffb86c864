// Package fault runs kubectl gpu through interrupts and control-plane restarts on the local
// cluster (real etcd, API server, controller-manager, scheduler; 50 GPU nodes simulated by
// kwok, which moves pods through their phases and serves their logs: no container runs).
// What is measured is the tool's own behaviour: exit codes, the one line it prints, and that
// nothing of it is left in the cluster afterwards.
package fault

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/simnodes"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

var env *harness.Env

const nodes = 50

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m, &env, localcluster.NodeSpec{Profile: "a100", Prefix: "fault", Count: nodes}))
}

func names(n int) []string {
	l := make([]string, n)
	for i := range l {
		l[i] = fmt.Sprintf("fault-%d", i)
	}
	return l
}

const passLog = simnodes.VectorAddPassLog

// verifyPasses makes every verify pod on ns pass after the given time.
func verifyPasses(t *testing.T, ctx context.Context, after time.Duration) {
	t.Helper()
	c := env.Cluster
	if err := nodepod.EnsureNamespace(ctx, c.Client, nodepod.DefaultNamespace, nodepod.PSARestricted); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPodOutcomeAfter(ctx, "verify-pass", verify.Component, names(nodes), 0, after); err != nil {
		t.Fatal(err)
	}
	for _, n := range names(nodes) {
		if err := c.SetPodLog(ctx, nodepod.DefaultNamespace, verify.PodName(n), verify.ContainerName, passLog); err != nil {
			t.Fatal(err)
		}
	}
}

// agentReport is a real agent report (the Ubuntu 22.04 fake root's golden file) as one line.
func agentReport(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "common", "hostconfig", "testdata", "check-ubuntu2204-kubeadm.golden"))
	if err != nil {
		t.Fatal(err)
	}
	var line bytes.Buffer
	if err := json.Compact(&line, b); err != nil {
		t.Fatal(err)
	}
	return line.String() + "\n"
}

// leftovers waits until nothing of ours is in the namespace and returns how long it took.
func leftovers(t *testing.T, ctx context.Context) time.Duration {
	t.Helper()
	cs := env.Cluster.Client
	start := time.Now()
	sel := nodepod.LabelManagedBy + "=" + nodepod.ManagedBy
	for {
		pods, err1 := cs.CoreV1().Pods(nodepod.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
		jobs, err2 := cs.BatchV1().Jobs(nodepod.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err1 == nil && err2 == nil && len(pods.Items) == 0 && len(jobs.Items) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("left after 60 s: %d pods, %d Jobs (%v %v)", len(pods.Items), len(jobs.Items), err1, err2)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// result is one run of the plugin.
type result struct {
	code           int
	stdout, stderr string
	// signalled tells whether the SIGINT was sent before the process ended, and how long
	// before.
	signalled   bool
	sinceSignal time.Duration
}

// run runs `kubectl gpu ARGS…`; with interruptAfter > 0 it sends SIGINT then.
func run(t *testing.T, ctx context.Context, interruptAfter time.Duration, args ...string) result {
	t.Helper()
	cmd := env.Command(ctx, append([]string{"gpu"}, args...)...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sent := make(chan time.Time, 1)
	if interruptAfter > 0 {
		timer := time.AfterFunc(interruptAfter, func() {
			if cmd.Process.Signal(syscall.SIGINT) == nil {
				sent <- time.Now()
			}
		})
		defer timer.Stop()
	}
	_ = cmd.Wait()
	r := result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
	select {
	case at := <-sent:
		r.signalled, r.sinceSignal = true, time.Since(at)
	default:
	}
	// SIGINT before kubectl has handed over to the plugin ends kubectl itself by the signal
	// (nothing was created yet); a shell reports that as 130 too.
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGINT {
		r.code = 130
	}
	return r
}

// interruptAtRandom runs the command (with -o json) once to time it (it must exit want),
// then until 20 runs were interrupted by SIGINT at a random point inside that time. The
// Ctrl-C contract: a signal before the report is complete gives exit 130 and nothing on
// stdout; a signal after it gives the whole report and its own exit code (want). Either
// way nothing is left. A run that ended before its signal was sent, or whose report was
// complete, is not counted among the 20.
func interruptAtRandom(t *testing.T, ctx context.Context, want int, args ...string) {
	t.Helper()
	args = append(args, "-o", "json")
	start := time.Now()
	if r := run(t, ctx, 0, args...); r.code != want {
		t.Fatalf("uninterrupted run: exit %d, want %d\n%s%s", r.code, want, r.stdout, r.stderr)
	}
	full := time.Since(start)
	leftovers(t, ctx)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("an uninterrupted run takes %s; random points from seed %d", full.Round(time.Millisecond), seed)
	var worst time.Duration
	interrupted, finishedFirst := 0, 0
	for try := 0; interrupted < 20; try++ {
		if try == 60 {
			t.Fatalf("only %d of 60 runs were still going when interrupted", interrupted)
		}
		at := time.Duration(float64(full) * (0.02 + 0.78*rng.Float64()))
		r := run(t, ctx, at, args...)
		switch {
		case !r.signalled:
			finishedFirst++
		case r.code == want && completeReport(r.stdout, 20):
			finishedFirst++ // the signal landed after the report was complete
		case r.code != 130 || r.stdout != "":
			t.Fatalf("SIGINT at %s: exit %d (want 130) %s after it, stdout %q\n%s", at.Round(time.Millisecond), r.code, r.sinceSignal.Round(time.Millisecond), r.stdout, r.stderr)
		default:
			interrupted++
		}
		if left := leftovers(t, ctx); left > worst {
			worst = left
		}
	}
	t.Logf("20 interrupted runs (%d more finished before the signal): all exit 130, nothing left, at most %s after the exit", finishedFirst, worst.Round(time.Millisecond))
}

// completeReport tells whether out is one whole JSON document with n items.
func completeReport(out string, n int) bool {
	var doc struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	return json.Unmarshal([]byte(out), &doc) == nil && doc.Kind != "" && len(doc.Items) == n
}

// TestInterruptVerify: SIGINT at 20 random points of verify over 20 nodes.
func TestInterruptVerify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	verifyPasses(t, ctx, 3*time.Second)
	interruptAtRandom(t, ctx, 0, append([]string{"verify", "--timeout", "2m"}, names(20)...)...)
}

// TestInterruptPrep: SIGINT at 20 random points of prep (check) over 20 nodes.
func TestInterruptPrep(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := env.Cluster
	if err := nodepod.EnsureNamespace(ctx, c.Client, nodepod.DefaultNamespace, nodepod.PSAPrivileged); err != nil {
		t.Fatal(err)
	}
	report := agentReport(t)
	if err := c.ServePodLogs(ctx, nodepod.DefaultNamespace, nodepod.Selector(prep.Component), "agent", func(p *corev1.Pod) string {
		return strings.Replace(report, `"mode":"check"`, `"mode":"check","node":"`+p.Spec.NodeName+`"`, 1)
	}); err != nil {
		t.Fatal(err)
	}
	// The fake root's report says the node is not ready yet: exit 1 when not interrupted.
	interruptAtRandom(t, ctx, 1, append([]string{"prep", "--timeout", "2m"}, names(20)...)...)
}

// restartDuring runs verify over all 50 nodes, restarts a control-plane process while the
// pods run, and checks that the run finishes (or fails with one line), a rerun passes, and
// nothing is left.
func restartDuring(t *testing.T, process string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	verifyPasses(t, ctx, 6*time.Second)
	args := append([]string{"verify", "--timeout", "2m", "-o", "json"}, names(nodes)...)
	cmd := env.Command(ctx, append([]string{"gpu"}, args...)...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		pods, _ := env.Cluster.Client.CoreV1().Pods(nodepod.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: nodepod.Selector(verify.Component)})
		if pods != nil && len(pods.Items) == nodes {
			break
		}
		if i > 600 {
			t.Fatal("verify pods never appeared")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t0 := time.Now()
	if err := env.Cluster.Restart(ctx, process, time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s down and back in %s (scheduler restarted by the harness so far: %d)", process, time.Since(t0).Round(time.Millisecond), env.Cluster.SchedulerRestarts())
	_ = cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	switch code {
	case 0, 1:
		var rep verify.Report
		if err := json.Unmarshal([]byte(stdout.String()), &rep); err != nil || rep.Summary.Nodes != nodes {
			t.Fatalf("report after the restart: %v\n%s\n%s", err, stdout.String(), stderr.String())
		}
		for _, it := range rep.Items {
			if it.Result != verify.Passed && (it.Detail == "" || it.Reason == verify.ReasonTimeout) {
				t.Errorf("%s: %s %q: the run must see each pod finish, not time out", it.Node, it.Reason, it.Detail)
			}
		}
		t.Logf("across the %s restart: exit %d, %d of %d passed", process, code, rep.Summary.Passed, nodes)
	default:
		if lines := strings.Split(strings.TrimSpace(stderr.String()), "\n"); len(lines) != 1 || stdout.String() != "" {
			t.Fatalf("exit %d: want one line on stderr and nothing on stdout\n%s\n%s", code, stdout.String(), stderr.String())
		}
	}
	leftovers(t, ctx)
	verifyPasses(t, ctx, 0)
	if r := run(t, ctx, 0, args...); r.code != 0 {
		t.Fatalf("rerun after the %s restart: exit %d\n%s%s", process, r.code, r.stdout, r.stderr)
	}
	leftovers(t, ctx)
}

// TestEtcdRestart: etcd stopped and started again under verify over 50 nodes.
func TestEtcdRestart(t *testing.T) { restartDuring(t, "etcd") }

// TestAPIServerRestart: kube-apiserver stopped and started again under verify over 50 nodes
// (last: it runs after the etcd restart).
func TestAPIServerRestart(t *testing.T) { restartDuring(t, "kube-apiserver") }
