// Package up tests `kubectl gpu up` end to end on the local control plane: kwok's nodes
// answer the node agent's Jobs with the real agent run against fake host roots built from
// real distributions' files (hack/testenv/simnodes: the nouveau blacklist that needs a reboot,
// containerd's config; reboots as NotReady, a new boot ID and Ready), the GPU Operator's
// and device plugin's real charts are installed through Helm, and the verify pods finish
// with the CUDA sample's output. The test plays the GPU Operator's controller: it marks
// ClusterPolicy ready once the chart created it (simnodes.PlayOperator).
package up

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"helm.sh/helm/v3/pkg/chart/loader"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	"github.com/kubectl-gpu/kubectl-gpu/common/mirror"
	"github.com/kubectl-gpu/kubectl-gpu/common/mirror/mirrortest"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/up"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/simnodes"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

var (
	env  *harness.Env
	gpus = []string{"gpu-a100-0", "gpu-a100-1"}
	// rke2 are the RKE2 nodes (package hosts when the machine has a Debian root), the
	// device plugin's and host driver's tests'.
	rke2 = []string{"gpu-rke2-0", "gpu-rke2-1"}
	// packages: the RKE2 node's host packages are installed for real (apt-get in a Debian
	// root); nil when the machine has no Debian root (make tools builds it).
	packages *simnodes.PackageHosts
	boots    = &bootLog{ids: map[string]map[string]bool{}}
	charts   = map[string]string{}
)

// dir holds the agent and the simulated hosts' roots; removed when the tests end; roots
// are the A100 nodes' host roots.
var (
	dir   string
	roots map[string]string
)

func TestMain(m *testing.M) {
	code := harness.MainWith(m, &env, func(ctx context.Context, e *harness.Env) (string, error) {
		for _, v := range []string{"KGPU_GPU_OPERATOR_CHART", "KGPU_DEVICE_PLUGIN_CHART"} {
			if charts[v] = os.Getenv(v); charts[v] == "" {
				return v + " is not set: the up tests install the real charts (.ci/run sets it from ../shared/testdata/charts)", nil
			}
		}
		if _, err := e.Cluster.AddNodes(ctx, localcluster.NodeSpec{Profile: "a100", Prefix: "gpu-a100", Count: 2}, localcluster.NodeSpec{Profile: "cpu", Prefix: "cpu", Count: 1},
			localcluster.NodeSpec{Profile: "rke2", Prefix: "gpu-rke2", Count: len(rke2)}); err != nil {
			return "", err
		}
		var err error
		if dir, err = os.MkdirTemp("", "kgpu-up-"); err != nil {
			return "", err
		}
		agent := filepath.Join(dir, "gpu-node-agent")
		if err := simnodes.BuildAgent(ctx, agent); err != nil {
			return "", err
		}
		roots = map[string]string{"gpu-a100-0": simnodes.DefaultAgentRoots["gpu-a100-0"], "gpu-a100-1": simnodes.DefaultAgentRoots["gpu-a100-1"]}
		if hostconfigtest.DebianRootTar() != "" {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return "", err
			}
			addr := l.Addr().String()
			l.Close()
			packages = &simnodes.PackageHosts{Addr: addr, Nodes: map[string]string{rke2[0]: "rke2", rke2[1]: "rke2"}}
		}
		if err := simnodes.SimulateWith(context.Background(), e.Cluster, agent, filepath.Join(dir, "hosts"), roots, everyGPU(), nil, packages); err != nil {
			return "", err
		}
		if err := simnodes.PlayOperator(context.Background(), e.Cluster); err != nil {
			return "", err
		}
		go boots.watch(e.Cluster)
		return "", nil
	})
	if packages != nil {
		packages.Close()
	}
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// bootLog records every boot ID each node has reported: its reboots are their count less
// one.
type bootLog struct {
	mu  sync.Mutex
	ids map[string]map[string]bool
}

func (b *bootLog) watch(c *localcluster.Cluster) {
	for {
		w, err := c.Client.CoreV1().Nodes().Watch(context.Background(), metav1.ListOptions{})
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		for e := range w.ResultChan() {
			n, ok := e.Object.(*corev1.Node)
			if !ok || n.Status.NodeInfo.BootID == "" {
				continue
			}
			b.mu.Lock()
			if b.ids[n.Name] == nil {
				b.ids[n.Name] = map[string]bool{}
			}
			b.ids[n.Name][n.Status.NodeInfo.BootID] = true
			b.mu.Unlock()
		}
	}
}

// await waits until the log has seen the node's boot id.
func (b *bootLog) await(t *testing.T, node, id string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b.mu.Lock()
		seen := b.ids[node][id]
		b.mu.Unlock()
		if seen {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the boot log never saw %s boot %s", node, id)
		}
	}
}

func (b *bootLog) reboots(node string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(len(b.ids[node])-1, 0)
}

// need skips a test when the setup did not run (it said why on its SKIP line).
// everyGPU is every GPU node of the tests.
func everyGPU() []string { return append(slices.Clone(gpus), rke2...) }

func need(t *testing.T) {
	t.Helper()
	if env == nil {
		t.Skip("no local cluster for the up tests (see the SKIP line above)")
	}
}

func gpu(t *testing.T, ctx context.Context, args ...string) harness.Result {
	t.Helper()
	return env.Gpu(ctx, args...)
}

// kwokLogRace is what kwok answers for a pod it completed before the simulation set its
// log. ServePodLogsHeld holds a package host's agent pod until then, but on a loaded machine
// kwok can still end one first (the hold is a patch after the pod appeared); a real pod ends
// after its agent printed. A run that meets it is run again, as an admin would (up resumes),
// and said; if it keeps meeting it the test is skipped with that reason.
const kwokLogRace = "the server rejected our request for an unknown reason"

func gpuSim(t *testing.T, ctx context.Context, args ...string) (harness.Result, int) {
	t.Helper()
	for i := 1; ; i++ {
		r := env.Gpu(ctx, args...)
		if !strings.Contains(r.Stderr+r.Stdout, kwokLogRace) {
			return r, i
		}
		if i == 4 {
			t.Skipf("kwok served no log for a package host's agent pod %d times in a row (simulation race, not the product's): %s", i, strings.TrimSpace(r.Stderr))
		}
		t.Logf("kwok served no log for a package host's agent pod (simulation race), run again: %s", strings.TrimSpace(r.Stderr))
	}
}

func parse[T any](t *testing.T, r harness.Result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.Stdout), &v); err != nil {
		t.Fatalf("not a document: %v\nstdout: %s\nstderr: %s", err, r.Stdout, r.Stderr)
	}
	return v
}

// releaseHistory is the release's revisions, as Helm's storage (Secrets) holds them.
func releaseHistory(t *testing.T, ns, name string) []string {
	t.Helper()
	s, err := env.Cluster.Client.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "owner=helm,name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, x := range s.Items {
		out = append(out, x.Labels["version"]+":"+x.Labels["status"])
	}
	return out
}

func noPods(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		pods, err := env.Cluster.Client.CoreV1().Pods(nodepod.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: nodepod.LabelManagedBy + "=" + nodepod.ManagedBy})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the tool's pods left in %s", len(pods.Items), nodepod.DefaultNamespace)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestUp: the plan changes nothing; a run interrupted at a random point of each step and
// run again ends where an uninterrupted run does — every GPU node verified, rebooted once,
// the release installed once; a second run changes nothing and only verifies; a node
// whose verify fails leaves the others verified, and the report names its broken link.
func TestUp(t *testing.T) {
	need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	// The A100 nodes by name: the RKE2 node is TestUpDevicePlugin's.
	chart := append([]string{gpus[0], gpus[1], "--chart"}, charts["KGPU_GPU_OPERATOR_CHART"])

	// The plan: every step, changing nothing.
	r := gpu(t, ctx, append([]string{"up", "--dry-run", "-o", "json"}, chart...)...)
	if r.Code != 0 {
		t.Fatalf("dry run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	plan := parse[up.Plan](t, r)
	if plan.Kind != up.PlanKind || len(plan.Nodes) != 2 || len(plan.VerifyNodes) != 2 || len(plan.Releases) != 1 || plan.Releases[0].Action != up.ActionInstall {
		t.Fatalf("plan: %+v", plan)
	}
	rebooted := 0
	for _, n := range plan.Nodes {
		if n.Reboot != "" {
			rebooted++
		}
	}
	if rebooted == 0 {
		t.Errorf("no node is rebooted in the plan, though nouveau is loaded: %+v", plan.Nodes)
	}
	decided := fmt.Sprint(plan.Decisions)
	if !strings.Contains(decided, "rebooted") {
		t.Errorf("the plan's decisions do not say the roll: %s", decided)
	}
	if h := releaseHistory(t, operator.DefaultNamespace, operator.DefaultReleaseName); len(h) != 0 {
		t.Fatalf("the dry run installed the release: %v", h)
	}
	if _, err := env.Cluster.Client.CoreV1().ConfigMaps(nodepod.DefaultNamespace).Get(ctx, up.RecordName, metav1.GetOptions{}); err == nil {
		t.Fatal("the dry run recorded a run")
	}
	text := gpu(t, ctx, append([]string{"up", "--dry-run"}, chart...)...)
	for _, want := range []string{"== step 1/3 prep", "blacklist-nouveau", "== decisions", "== step 2/3 the GPU Operator", "driver.enabled", "== step 3/3 verify"} {
		if !strings.Contains(text.Stdout, want) {
			t.Errorf("the plan's text lacks %q:\n%s", want, text.Stdout)
		}
	}
	// Not at a terminal without --yes: refused, nothing changed.
	if r := gpu(t, ctx, append([]string{"up"}, chart...)...); r.Code != 2 || !strings.Contains(r.Stderr, "--yes") {
		t.Fatalf("without --yes: exit %d\n%s", r.Code, r.Stderr)
	}

	// Interrupted in each step (when the step's own objects appear, after a random delay),
	// then run again.
	args := append([]string{"gpu", "up", "--yes", "-o", "json", "--timeout", "3m"}, chart...)
	defer func() {
		// The verify outcomes as they were for the test after this one.
		_ = env.Cluster.SetPodOutcome(context.Background(), "verify-pass", verify.Component, everyGPU(), 0)
		_ = env.Cluster.SetPodOutcome(context.Background(), "verify-fail", verify.Component, nil, 1)
		_ = env.Cluster.SetPodLog(context.Background(), nodepod.DefaultNamespace, verify.PodName(gpus[1]), verify.ContainerName, simnodes.VectorAddPassLog)
	}()
	triggers := []struct {
		step string
		seen func() bool
	}{
		{"prep", func() bool {
			for _, n := range gpus {
				if node, err := env.Cluster.Client.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{}); err == nil && prep.ReadRollState(node).Phase != "" {
					return true
				}
			}
			return false
		}},
		{"install", func() bool { return len(releaseHistory(t, operator.DefaultNamespace, operator.DefaultReleaseName)) > 0 }},
		{"verify", func() bool {
			pods, err := env.Cluster.Client.CoreV1().Pods(nodepod.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: nodepod.Selector(verify.Component)})
			return err == nil && len(pods.Items) > 0
		}},
	}
	for _, tr := range triggers {
		cmd := env.Command(ctx, args...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		interrupted := false
	wait:
		for {
			select {
			case err = <-done:
				break wait
			case <-time.After(100 * time.Millisecond):
				if !interrupted && tr.seen() {
					delay := time.Duration(rand.IntN(1500)) * time.Millisecond
					time.Sleep(delay)
					t.Logf("interrupt in step %s after %s more", tr.step, delay)
					_ = cmd.Process.Signal(os.Interrupt)
					interrupted = true
				}
			}
		}
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 130
			}
		}
		t.Logf("interrupted in %s: exit %d", tr.step, code)
		if code == 130 && stdout.Len() > 0 {
			t.Errorf("exit 130 with a report on stdout: %s", stdout.String())
		}
		if code != 130 && code != 0 {
			t.Fatalf("interrupted run in %s: exit %d\n%s\n%s", tr.step, code, stdout.String(), stderr.String())
		}
		noPods(t)
	}

	// Run to the end.
	r = gpu(t, ctx, args[1:]...)
	if r.Code != 0 {
		t.Fatalf("final run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	rep := parse[up.Report](t, r)
	if rep.Kind != up.ReportKind || rep.Summary.Verified != 2 || rep.Summary.Nodes != 2 {
		t.Fatalf("report: %+v", rep)
	}
	for _, n := range gpus {
		if b := boots.reboots(n); b > 1 {
			t.Errorf("%s rebooted %d times, want at most once", n, b)
		}
		node, err := env.Cluster.Client.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if node.Spec.Unschedulable || prep.ReadRollState(node).Unfinished() {
			t.Errorf("%s: cordoned %v, roll %+v", n, node.Spec.Unschedulable, prep.ReadRollState(node))
		}
	}
	if h := releaseHistory(t, operator.DefaultNamespace, operator.DefaultReleaseName); len(h) != 1 || h[0] != "1:deployed" {
		t.Errorf("release history %v, want one revision 1, deployed", h)
	}
	noPods(t)

	// A second run on the finished cluster changes nothing and only verifies.
	r = gpu(t, ctx, args[1:]...)
	if r.Code != 0 {
		t.Fatalf("second run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	rep = parse[up.Report](t, r)
	results := map[string]string{}
	for _, s := range rep.Steps {
		results[s.Step] = s.Result
	}
	if results[up.StepPrep] != up.Skipped || results[up.StepInstall] != up.Skipped || results[up.StepVerify] != up.Done || rep.Summary.Verified != 2 {
		t.Errorf("second run: steps %v, summary %+v\n%s", results, rep.Summary, r.Stderr)
	}
	if !strings.Contains(r.Stderr, "nothing to change") {
		t.Errorf("second run did not say it changes nothing:\n%s", r.Stderr)
	}
	if h := releaseHistory(t, operator.DefaultNamespace, operator.DefaultReleaseName); len(h) != 1 {
		t.Errorf("second run changed the release: %v", h)
	}

	// A node whose verify fails: the other stays verified, the report names its broken link.
	if err := env.Cluster.SetPodOutcome(ctx, "verify-pass", verify.Component, gpus[:1], 0); err != nil {
		t.Fatal(err)
	}
	if err := env.Cluster.SetPodOutcome(ctx, "verify-fail", verify.Component, gpus[1:], 1); err != nil {
		t.Fatal(err)
	}
	if err := env.Cluster.SetPodLog(ctx, nodepod.DefaultNamespace, verify.PodName(gpus[1]), verify.ContainerName, simnodes.VectorAddNoDeviceLog); err != nil {
		t.Fatal(err)
	}
	junit := filepath.Join(t.TempDir(), "up.xml")
	r = gpu(t, ctx, append([]string{"up", "--yes", "--junit", junit}, chart...)...)
	if r.Code != 1 {
		t.Fatalf("a failing node: exit %d, want 1\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, want := range []string{gpus[1], "doctor:", "first broken link", "up: 1 of 2 GPU nodes verified"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, r.Stdout)
		}
	}
	x, err := os.ReadFile(junit)
	if err != nil || !strings.Contains(string(x), `failures="2"`) || !strings.Contains(string(x), `name="`+gpus[1]+`"`) {
		t.Errorf("JUnit: %v\n%s", err, x)
	}
	t.Logf("report:\n%s", r.Stdout)
	noPods(t)
}

// TestUpCanary (day two, after TestUp: the operator deployed, both A100 nodes verified):
// both hosts need a reboot again, two nodes may be out at once, and the canary's CUDA
// sample fails. The plan names the
// canary and that each node is proven before its uncordon; the run proves the canary on the
// still cordoned node, stops there with exit 1 — the canary cordoned with its reason and
// doctor's diagnosis, the other node not drained, not cordoned, not rebooted — and once the
// canary's GPUs work, the same command goes on: the canary is not rebooted again, the other
// node is rolled and proven, both end uncordoned. Interrupted while the canary is proven,
// the same command ends it with each node rebooted once. Simulated: the hosts (real agent on
// fake roots, reboots as a new boot ID), the CUDA sample's outcome and log (kwok); real: the
// control plane, the scheduler placing the sample on the cordoned node, the roll.
func TestUpCanary(t *testing.T) {
	need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	canary, other := gpus[0], gpus[1]
	// Two nodes out at once are allowed: only the canary keeps the other in.
	chart := []string{canary, other, "--chart", charts["KGPU_GPU_OPERATOR_CHART"], "--max-unavailable", "2"}
	if h := releaseHistory(t, operator.DefaultNamespace, operator.DefaultReleaseName); len(h) == 0 {
		t.Skip("TestUp did not leave the operator deployed")
	}
	for _, n := range gpus {
		if err := simnodes.ResetHost(ctx, env.Cluster, filepath.Join(dir, "hosts"), roots, n, true); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		_ = env.Cluster.SetPodOutcome(context.Background(), "verify-pass", verify.Component, everyGPU(), 0)
		_ = env.Cluster.SetPodOutcome(context.Background(), "verify-fail", verify.Component, nil, 1)
		_ = env.Cluster.SetPodLog(context.Background(), nodepod.DefaultNamespace, verify.PodName(canary), verify.ContainerName, simnodes.VectorAddPassLog)
	}()
	if err := env.Cluster.SetPodOutcome(ctx, "verify-pass", verify.Component, append([]string{other}, rke2...), 0); err != nil {
		t.Fatal(err)
	}
	if err := env.Cluster.SetPodOutcome(ctx, "verify-fail", verify.Component, []string{canary}, 1); err != nil {
		t.Fatal(err)
	}
	if err := env.Cluster.SetPodLog(ctx, nodepod.DefaultNamespace, verify.PodName(canary), verify.ContainerName, simnodes.VectorAddNoDeviceLog); err != nil {
		t.Fatal(err)
	}

	r := gpu(t, ctx, append([]string{"up", "--dry-run", "-o", "json"}, chart...)...)
	if r.Code != 0 {
		t.Fatalf("dry run: exit %d\n%s", r.Code, r.Stderr)
	}
	plan := parse[up.Plan](t, r)
	// The release is upgraded (--max-unavailable 2 moves the driver's upgrade policy), not
	// installed: the nodes can be proven one by one.
	if strings.Join(plan.Canary, ",") != canary || !plan.ProveRolled || plan.Releases[0].Action != up.ActionUpgrade {
		t.Fatalf("plan: canary %v, prove %v, release %s", plan.Canary, plan.ProveRolled, plan.Releases[0].Action)
	}
	text := gpu(t, ctx, append([]string{"up", "--dry-run"}, chart...)...)
	for _, want := range []string{"canary: " + canary + " first; the other 1 node only after it is done, 2 at a time", "before it is uncordoned"} {
		if !strings.Contains(text.Stdout, want) {
			t.Errorf("the plan's text lacks %q:\n%s", want, text.Stdout)
		}
	}
	before := map[string]int{canary: boots.reboots(canary), other: boots.reboots(other)}

	r = gpu(t, ctx, append([]string{"up", "--yes", "-o", "json", "--timeout", "1m"}, chart...)...)
	if r.Code != 1 {
		t.Fatalf("a failing canary: exit %d, want 1\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	results := byNode(parse[up.Report](t, r))
	if c := results[canary]; c.Prep != up.Failed || !strings.Contains(c.Detail, "not proven") || c.Diagnosis == nil || !strings.Contains(c.Hint, "run the same command again") {
		t.Errorf("the canary's result: %+v (diagnosis %+v)", c, c.Diagnosis)
	}
	if o := results[other]; o.Prep != up.NotStarted {
		t.Errorf("the other node's result: %+v", o)
	}
	node := func(name string) *corev1.Node {
		n, err := env.Cluster.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := node(canary); !n.Spec.Unschedulable || prep.ReadRollState(n).Phase != prep.PhaseRebooted || !strings.Contains(prep.ReadRollState(n).Error, "not proven") {
		t.Errorf("the canary: cordoned %v, roll %+v", n.Spec.Unschedulable, prep.ReadRollState(n))
	}
	if n := node(other); n.Spec.Unschedulable || prep.ReadRollState(n).Phase != prep.PhaseDone && prep.ReadRollState(n).Phase != "" {
		t.Errorf("the node after the canary was touched: cordoned %v, roll %+v", n.Spec.Unschedulable, prep.ReadRollState(n))
	}
	if b := boots.reboots(other); b != before[other] {
		t.Errorf("the node after the canary rebooted (%d → %d)", before[other], b)
	}
	if b := boots.reboots(canary); b != before[canary]+1 {
		t.Errorf("the canary rebooted %d times, want once", b-before[canary])
	}
	noPods(t)

	// The canary's GPUs work again: the same command goes on.
	if err := env.Cluster.SetPodOutcome(ctx, "verify-pass", verify.Component, everyGPU(), 0); err != nil {
		t.Fatal(err)
	}
	if err := env.Cluster.SetPodOutcome(ctx, "verify-fail", verify.Component, nil, 1); err != nil {
		t.Fatal(err)
	}
	if err := env.Cluster.SetPodLog(ctx, nodepod.DefaultNamespace, verify.PodName(canary), verify.ContainerName, simnodes.VectorAddPassLog); err != nil {
		t.Fatal(err)
	}
	r = gpu(t, ctx, append([]string{"up", "--yes", "-o", "json", "--timeout", "1m"}, chart...)...)
	if r.Code != 0 {
		t.Fatalf("after the fix: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	rolledOnce(t, "after the fix", before)
	for _, n := range parse[up.Report](t, r).Nodes {
		if n.Prep != "rebooted" || !strings.Contains(n.Detail, "before its uncordon") {
			t.Errorf("%s: prep %s, %q; want rebooted and verified before its uncordon", n.Node, n.Prep, n.Detail)
		}
	}
	noPods(t)

	// Day two interrupted while the canary is proven (its CUDA sample's pod on the cordoned
	// node), then the same command: every node rebooted once, none left cordoned, no pod
	// of the tool left.
	for _, n := range gpus {
		if err := simnodes.ResetHost(ctx, env.Cluster, filepath.Join(dir, "hosts"), roots, n, true); err != nil {
			t.Fatal(err)
		}
		// The reset's own boot counted first (the boot log's watch is behind by a moment).
		boots.await(t, n, node(n).Status.NodeInfo.BootID)
		before[n] = boots.reboots(n)
	}
	cmd, stderr, done := started(t, ctx, append([]string{"up", "--yes", "-o", "json", "--timeout", "1m"}, chart...)...)
	interrupted := false
wait:
	for {
		select {
		case <-done:
			break wait
		case <-time.After(50 * time.Millisecond):
			if interrupted {
				continue
			}
			if p, err := env.Cluster.Client.CoreV1().Pods(nodepod.DefaultNamespace).Get(ctx, verify.PodName(canary), metav1.GetOptions{}); err == nil && p.DeletionTimestamp == nil {
				_ = cmd.Process.Signal(os.Interrupt)
				interrupted = true
			}
		}
	}
	if !interrupted {
		t.Fatalf("the run ended before the canary's proof was seen:\n%s", stderr.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 && code != 0 {
		t.Fatalf("interrupted during the proof: exit %d\n%s", code, stderr.String())
	}
	t.Logf("interrupted during the canary's proof: exit %d", cmd.ProcessState.ExitCode())
	noPods(t)
	r = gpu(t, ctx, append([]string{"up", "--yes", "-o", "json", "--timeout", "1m"}, chart...)...)
	if r.Code != 0 {
		t.Fatalf("after the interrupt: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	rolledOnce(t, "after the interrupt", before)
	noPods(t)
}

// started starts `kubectl gpu args...`, its stderr kept; done gets its end.
func started(t *testing.T, ctx context.Context, args ...string) (cmd *exec.Cmd, stderr *harness.SyncBuffer, done chan error) {
	t.Helper()
	cmd = env.Command(ctx, append([]string{"gpu"}, args...)...)
	stderr = &harness.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return cmd, stderr, done
}

// byNode is a report's nodes by name.
func byNode(rep up.Report) map[string]up.NodeResult {
	out := map[string]up.NodeResult{}
	for _, n := range rep.Nodes {
		out[n.Node] = n
	}
	return out
}

// rolledOnce: each A100 node's roll is done, the node uncordoned, and rebooted exactly once
// since before was counted.
func rolledOnce(t *testing.T, when string, before map[string]int) {
	t.Helper()
	for _, n := range gpus {
		nd, err := env.Cluster.Client.CoreV1().Nodes().Get(context.Background(), n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if nd.Spec.Unschedulable || prep.ReadRollState(nd).Phase != prep.PhaseDone {
			t.Errorf("%s, %s: cordoned %v, roll %+v", when, n, nd.Spec.Unschedulable, prep.ReadRollState(nd))
		}
		if b := boots.reboots(n) - before[n]; b != 1 {
			t.Errorf("%s, %s rebooted %d times, want once", when, n, b)
		}
	}
}

// TestUpOperatorDriverUpgrade (after TestUpCanary: the operator deployed with its driver
// container): up with a new driver.version upgrades the release with the driver's upgrade
// policy derived from the roll's flags, then follows the operator's upgrade controller — the
// test plays its states on the kwok nodes — until every node is upgrade-done. While a GPU pod
// holds gpu-a100-0 in pod-deletion-required, the operator's status and up's wait name the pod
// and its budget; a node in upgrade-failed is named with the way to retry.
func TestUpOperatorDriverUpgrade(t *testing.T) {
	need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if h := releaseHistory(t, operator.DefaultNamespace, operator.DefaultReleaseName); len(h) == 0 {
		t.Skip("the operator is not deployed (TestUp)")
	}
	cs := env.Cluster.Client
	label := func(node, state string) {
		t.Helper()
		v := any(state)
		if state == "" {
			v = nil
		}
		b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{operator.LabelDriverUpgradeState: v}}})
		if _, err := cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
			t.Error(err)
		}
	}
	defer func() {
		for _, n := range gpus {
			label(n, "")
		}
	}()
	chart := []string{gpus[0], gpus[1], "--chart", charts["KGPU_GPU_OPERATOR_CHART"], "--set", "driver.version=580.95.05"}
	r := gpu(t, ctx, append([]string{"up", "--dry-run", "-o", "json"}, chart...)...)
	if r.Code != 0 {
		t.Fatalf("dry run: exit %d\n%s", r.Code, r.Stderr)
	}
	plan := parse[up.Plan](t, r)
	rp := plan.Releases[0]
	if rp.Action != up.ActionUpgrade || rp.Driver == nil || rp.Driver.To != "580.95.05" {
		t.Fatalf("release plan: %s, driver %+v", rp.Action, rp.Driver)
	}
	if pl := plan; strings.Join(pl.DriverCanary, ",") != gpus[0] || !strings.Contains(fmt.Sprint(pl.Decisions), "goes to "+gpus[0]+" first") {
		t.Errorf("the driver upgrade's canary: %v, decisions %v", pl.DriverCanary, pl.Decisions)
	}
	policy, _ := rp.Values["driver"].(map[string]any)["upgradePolicy"].(map[string]any)
	if policy["maxParallelUpgrades"] != float64(1) || policy["autoUpgrade"] != true {
		t.Errorf("the driver's upgrade policy in the values: %v", policy)
	}
	before := len(releaseHistory(t, operator.DefaultNamespace, operator.DefaultReleaseName))
	// The controller marks the nodes when the ClusterPolicy's driver changes; here before
	// the run, so that the wait cannot end before the play starts.
	for _, n := range gpus {
		label(n, operator.UpgradeRequired)
	}

	cmd := env.Command(ctx, append([]string{"gpu", "up", "--yes", "-o", "json", "--timeout", "3m"}, chart...)...)
	var stdout strings.Builder
	stderr := &harness.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	status := func(want string) operator.Status {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			r := gpu(t, ctx, "operator", "status", "-o", "json")
			st := parse[operator.Status](t, r)
			if strings.Contains(r.Stdout, want) || time.Now().After(deadline) {
				if !strings.Contains(r.Stdout, want) {
					t.Errorf("the operator's status never said %q:\n%s", want, r.Stdout)
				}
				return st
			}
			time.Sleep(time.Second)
		}
	}
	// up's wait says it (its line in a pipe, once per change).
	said := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); !strings.Contains(stderr.String(), want); time.Sleep(300 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("up's wait did not say %q:\n%s", want, stderr.String())
			}
		}
	}
	// The release upgraded: the controller's play.
	deployed := fmt.Sprintf("%d:deployed", before+1)
	for deadline := time.Now().Add(3 * time.Minute); !slices.Contains(releaseHistory(t, operator.DefaultNamespace, operator.DefaultReleaseName), deployed); {
		if time.Now().After(deadline) {
			t.Fatalf("the release was not upgraded:\n%s", stderr.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
	said("driver upgrade 0/1 done: " + gpus[0])
	if n, err := cs.CoreV1().Nodes().Get(ctx, gpus[1], metav1.GetOptions{}); err != nil || n.Labels[operator.LabelDriverUpgradeSkip] != "true" || n.Labels[up.LabelDriverUpgradeHeld] != "true" {
		t.Fatalf("the node after the canary is not held back from the upgrade: %v %v", err, n.Labels)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ml"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), "ml", metav1.DeleteOptions{}) }()
	train := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "train-0", Namespace: "ml", Labels: map[string]string{"app": "train"}},
		Spec: corev1.PodSpec{NodeName: gpus[0], Containers: []corev1.Container{{Name: "c", Image: "train",
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")}}}}}}
	if _, err := cs.CoreV1().Pods("ml").Create(ctx, train, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "train", Namespace: "ml"},
		Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(0)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "train"}}}}
	if _, err := cs.PolicyV1().PodDisruptionBudgets("ml").Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	label(gpus[0], operator.UpgradeCordon)
	label(gpus[0], operator.UpgradePodDeletion)
	st := status("pod ml/train-0 holds 1 GPU(s) (PodDisruptionBudget ml/train allows 0)")
	status(operator.LabelDriverUpgradeSkip + "=true: the controller skips it")
	if st.Ready || st.Failing != "driver upgrade" {
		t.Errorf("status during the upgrade: ready %v, failing %q", st.Ready, st.Failing)
	}
	said(gpus[0] + " pod-deletion-required: waiting for the GPU pods to go: pod ml/train-0 holds 1 GPU(s)")
	// The pod goes; the node moves on to done; the other fails, then is retried.
	if err := cs.CoreV1().Pods("ml").Delete(ctx, "train-0", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{operator.UpgradeDrain, operator.UpgradePodRestart, operator.UpgradeValidation, operator.UpgradeUncordon, operator.UpgradeDone} {
		label(gpus[0], s)
	}
	// The canary verified, up lets the controller go on to the other node.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(300 * time.Millisecond) {
		n, err := cs.CoreV1().Nodes().Get(ctx, gpus[1], metav1.GetOptions{})
		if err == nil && n.Labels[operator.LabelDriverUpgradeSkip] == "" && n.Labels[up.LabelDriverUpgradeHeld] == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node after the canary is still held back:\n%s", stderr.String())
		}
	}
	label(gpus[1], operator.UpgradeFailed)
	status(gpus[1] + " upgrade-failed")
	status("=upgrade-required to retry")
	said("driver upgrade 1/2 done: " + gpus[1] + " upgrade-failed")
	select {
	case err := <-done:
		t.Fatalf("up ended while a node's driver upgrade failed: %v\n%s", err, stderr.String())
	default:
	}
	for _, s := range []string{operator.UpgradeRequired, operator.UpgradeCordon, operator.UpgradeDrain, operator.UpgradeValidation, operator.UpgradeDone} {
		label(gpus[1], s)
	}
	if err := <-done; err != nil {
		t.Fatalf("up: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	rep := parse[up.Report](t, harness.Result{Stdout: stdout.String()})
	if rep.Summary.Verified != 2 {
		t.Errorf("report: %+v", rep.Summary)
	}
	for _, s := range rep.Steps {
		if s.Step == up.StepInstall && !strings.Contains(s.Detail, "canary "+gpus[0]+" verified") {
			t.Errorf("the install step does not say the canary: %q", s.Detail)
		}
	}
	noPods(t)

	// Back: TestUpCanary's targets again (its flags, no new driver) are the revision before
	// this one: the plan says a rollback to it, and Helm rolls back, the history kept.
	back := []string{gpus[0], gpus[1], "--chart", charts["KGPU_GPU_OPERATOR_CHART"], "--max-unavailable", "2"}
	r = gpu(t, ctx, append([]string{"up", "--dry-run", "-o", "json"}, back...)...)
	if r.Code != 0 {
		t.Fatalf("dry run back: exit %d\n%s", r.Code, r.Stderr)
	}
	rp = parse[up.Plan](t, r).Releases[0]
	if rp.Action != up.ActionRollback || rp.RollbackTo != before || rp.Driver == nil || rp.Driver.From != "580.95.05" {
		t.Fatalf("the plan back: %s to revision %d (want rollback to %d), driver %+v", rp.Action, rp.RollbackTo, before, rp.Driver)
	}
	if text := gpu(t, ctx, append([]string{"up", "--dry-run"}, back...)...); !strings.Contains(text.Stdout, fmt.Sprintf("back to revision %d", before)) {
		t.Errorf("the plan's text does not say the rollback:\n%s", text.Stdout)
	}
	r = gpu(t, ctx, append([]string{"up", "--yes", "-o", "json", "--timeout", "3m"}, back...)...)
	if r.Code != 0 {
		t.Fatalf("back: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	h := releaseHistory(t, operator.DefaultNamespace, operator.DefaultReleaseName)
	if len(h) != before+2 || !slices.Contains(h, fmt.Sprintf("%d:deployed", before+2)) {
		t.Errorf("history after going back: %v; want revision %d deployed and the others kept", h, before+2)
	}
	rel, err := env.Cluster.Client.CoreV1().Secrets(operator.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: fmt.Sprintf("owner=helm,name=%s,version=%d", operator.DefaultReleaseName, before+2)})
	if err != nil || len(rel.Items) != 1 {
		t.Fatalf("revision %d: %v", before+2, err)
	}
	if n, err := cs.CoreV1().Nodes().Get(ctx, gpus[1], metav1.GetOptions{}); err != nil || n.Labels[operator.LabelDriverUpgradeSkip] != "" {
		t.Errorf("after going back the other node is still held: %v %v", err, n.Labels)
	}
	r = gpu(t, ctx, "operator", "status", "-o", "json")
	if st := parse[operator.Status](t, r); st.Release == nil || !strings.Contains(st.Release.Description, fmt.Sprintf("Rollback to %d", before)) {
		t.Errorf("the release's last revision is not Helm's rollback: %+v", st.Release)
	}

	// The new driver again, and the canary's CUDA sample fails: the run stops at the canary
	// with its diagnosis, the other node held on the old driver; after the fix the same
	// command finds the held node and lets the upgrade go on.
	defer func() {
		_ = env.Cluster.SetPodOutcome(context.Background(), "verify-pass", verify.Component, everyGPU(), 0)
		_ = env.Cluster.SetPodOutcome(context.Background(), "verify-fail", verify.Component, nil, 1)
		_ = env.Cluster.SetPodLog(context.Background(), nodepod.DefaultNamespace, verify.PodName(gpus[0]), verify.ContainerName, simnodes.VectorAddPassLog)
	}()
	if err := env.Cluster.SetPodOutcome(ctx, "verify-pass", verify.Component, append([]string{gpus[1]}, rke2...), 0); err != nil {
		t.Fatal(err)
	}
	if err := env.Cluster.SetPodOutcome(ctx, "verify-fail", verify.Component, gpus[:1], 1); err != nil {
		t.Fatal(err)
	}
	if err := env.Cluster.SetPodLog(ctx, nodepod.DefaultNamespace, verify.PodName(gpus[0]), verify.ContainerName, simnodes.VectorAddNoDeviceLog); err != nil {
		t.Fatal(err)
	}
	r = gpu(t, ctx, append([]string{"up", "--yes", "-o", "json", "--timeout", "1m"}, chart...)...)
	if r.Code != 1 || !strings.Contains(r.Stdout, "stopped at its canary") {
		t.Fatalf("a failing canary of the driver upgrade: exit %d, want 1 naming the canary\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, n := range parse[up.Report](t, r).Nodes {
		if n.Node == gpus[0] && (n.Verify != string(verify.Failed) || n.Diagnosis == nil) {
			t.Errorf("the canary's result: %+v", n)
		}
	}
	if n, err := cs.CoreV1().Nodes().Get(ctx, gpus[1], metav1.GetOptions{}); err != nil || n.Labels[up.LabelDriverUpgradeHeld] != "true" {
		t.Fatalf("after a failed canary the other node is not held: %v %v", err, n.Labels)
	}
	if err := env.Cluster.SetPodOutcome(ctx, "verify-pass", verify.Component, everyGPU(), 0); err != nil {
		t.Fatal(err)
	}
	if err := env.Cluster.SetPodOutcome(ctx, "verify-fail", verify.Component, nil, 1); err != nil {
		t.Fatal(err)
	}
	if err := env.Cluster.SetPodLog(ctx, nodepod.DefaultNamespace, verify.PodName(gpus[0]), verify.ContainerName, simnodes.VectorAddPassLog); err != nil {
		t.Fatal(err)
	}
	r = gpu(t, ctx, append([]string{"up", "--dry-run", "-o", "json"}, chart...)...)
	if pl := parse[up.Plan](t, r); strings.Join(pl.DriverHeld, ",") != gpus[1] || pl.Releases[0].Action != up.ActionUnchanged {
		t.Errorf("the plan after a failed canary: held %v, release %s", pl.DriverHeld, pl.Releases[0].Action)
	}
	r = gpu(t, ctx, append([]string{"up", "--yes", "-o", "json", "--timeout", "1m"}, chart...)...)
	if r.Code != 0 {
		t.Fatalf("after the canary's fix: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if n, err := cs.CoreV1().Nodes().Get(ctx, gpus[1], metav1.GetOptions{}); err != nil || n.Labels[up.LabelDriverUpgradeHeld] != "" || n.Labels[operator.LabelDriverUpgradeSkip] != "" {
		t.Errorf("after the canary's fix the other node is still held: %v %v", err, n.Labels)
	}
	noPods(t)

	// Back once more, interrupted at a random point (the plan, Helm's rollback, the driver
	// canary's hold and follow, verify), then the same command: the release back, no revision
	// failed or pending, no node held or rebooted, no pod left.
	was := map[string]int{}
	for _, n := range gpus {
		was[n] = boots.reboots(n)
	}
	// From 250 ms on: a SIGINT while the Go runtime and the packages initialise (before main
	// sets its handler) ends the process at once, before any work — not the case under test.
	delay := time.Duration(250+rand.IntN(3750)) * time.Millisecond
	cmd, stderr, done = started(t, ctx, append([]string{"up", "--yes", "-o", "json", "--timeout", "3m"}, back...)...)
	select {
	case <-done:
		t.Logf("back, to be interrupted after %s: ended first", delay)
	case <-time.After(delay):
		_ = cmd.Process.Signal(os.Interrupt)
		<-done
		t.Logf("back, interrupted after %s: exit %d; %s", delay, cmd.ProcessState.ExitCode(), lastLine(stderr.String()))
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 && code != 0 {
		t.Fatalf("back, interrupted: exit %d\n%s", code, stderr.String())
	}
	noPods(t)
	r = gpu(t, ctx, append([]string{"up", "--yes", "-o", "json", "--timeout", "3m"}, back...)...)
	if r.Code != 0 {
		t.Fatalf("back after the interrupt: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	h = releaseHistory(t, operator.DefaultNamespace, operator.DefaultReleaseName)
	for _, rev := range h {
		if !strings.HasSuffix(rev, ":deployed") && !strings.HasSuffix(rev, ":superseded") {
			t.Errorf("release history after the interrupted run: %v; revision %s", h, rev)
		}
	}
	r = gpu(t, ctx, "operator", "status", "-o", "json")
	if st := parse[operator.Status](t, r); st.Release == nil || st.Release.Status != "deployed" || !strings.Contains(st.Release.Description, "Rollback to") {
		t.Errorf("the release after the interrupted run: %+v", st.Release)
	}
	for _, n := range gpus {
		nd, err := cs.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil || nd.Labels[up.LabelDriverUpgradeHeld] != "" || nd.Labels[operator.LabelDriverUpgradeSkip] != "" || nd.Spec.Unschedulable {
			t.Errorf("%s after the interrupted run: %v, labels %v, cordoned %v", n, err, nd.Labels, nd.Spec.Unschedulable)
		}
		if b := boots.reboots(n) - was[n]; b != 0 {
			t.Errorf("%s rebooted %d times by a release's move", n, b)
		}
	}
	noPods(t)
}

// TestUpMirror: after 'kubectl gpu mirror --to' (stand-in images seeded in a public
// registry on 127.0.0.1), 'up --mirror' takes the chart from the mirror, moves every image
// of its values there and runs prep's agent and the CUDA sample from it.
func TestUpMirror(t *testing.T) {
	need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	chartFile := charts["KGPU_GPU_OPERATOR_CHART"]
	ch, err := loader.Load(chartFile)
	if err != nil {
		t.Fatal(err)
	}
	pub := mirrortest.NewPublic(t, ch, t.TempDir(), verify.DefaultImage)
	mir := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer mir.Close()
	src := []string{"--chart", chartFile, "-f", pub.ValuesFile, "--agent-image", pub.AgentImage, "--verify-image", pub.VerifyImage, "--source-insecure"}
	r := gpu(t, ctx, append([]string{"mirror", "-o", "json"}, src...)...)
	var list mirror.List
	if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &list) != nil {
		t.Fatalf("mirror list: exit %d\n%s", r.Code, r.Stderr)
	}
	mirrortest.Seed(t, list.Refs())
	to := strings.TrimPrefix(mir.URL, "http://") + "/gpu"
	if r := gpu(t, ctx, append([]string{"mirror", "--to", to, "--insecure", "--values-out", filepath.Join(t.TempDir(), "mirror-values.yaml")}, src...)...); r.Code != 0 {
		t.Fatalf("mirror --to: exit %d\n%s", r.Code, r.Stderr)
	}
	stop := harness.WatchPodImages(t, ctx, env.Cluster.Client, nodepod.DefaultNamespace)
	r = gpu(t, ctx, "up", gpus[0], gpus[1], "--mirror", to, "--plain-http", "--version", ch.Metadata.Version, "--yes", "-o", "json", "--timeout", "3m")
	images := stop()
	if r.Code != 0 {
		t.Fatalf("up --mirror: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	rep := parse[up.Report](t, r)
	if len(rep.Releases) != 1 || rep.Releases[0].Chart != ch.Metadata.Name+"-"+ch.Metadata.Version || rep.Summary.Verified != 2 {
		t.Fatalf("report: %+v", rep)
	}
	var repos []string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, y := range x {
				if s, ok := y.(string); ok && k == "repository" {
					repos = append(repos, s)
				}
				walk(y)
			}
		case []any:
			for _, y := range x {
				walk(y)
			}
		}
	}
	walk(rep.Releases[0].Values)
	if len(repos) < 3 {
		t.Fatalf("only %d repositories in the values: %v", len(repos), rep.Releases[0].Values)
	}
	for _, x := range repos {
		if !strings.HasPrefix(x, to+"/") {
			t.Errorf("the values name repository %s, not the mirror's", x)
		}
	}
	if len(images) == 0 {
		t.Fatal("no pod of the tool was seen")
	}
	for im := range images {
		if !strings.HasPrefix(im, to+"/") {
			t.Errorf("a pod of the tool ran %s, not from the mirror", im)
		}
	}
	if !strings.Contains(r.Stderr, "--mirror") {
		t.Errorf("the plan does not show the mirror's decision:\n%s", r.Stderr)
	}
	noPods(t)
}

// TestUpDevicePlugin: the runbook's path without the operator on an RKE2 node whose driver
// and toolkit are installed for real through apt-get (a Debian root): refused without the
// host installs; with them, the plan differs from the recorded operator run and says so;
// the run installs, reboots, installs the device plugin chart and verifies; again, it
// changes nothing.
func TestUpDevicePlugin(t *testing.T) {
	need(t)
	if packages == nil {
		t.Skip("no Debian root for the package hosts: make tools builds it (hack/testenv/debian-root.sh)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The operator an earlier test left (none when this test runs alone).
	hadOperator := len(releaseHistory(t, operator.DefaultNamespace, operator.DefaultReleaseName)) > 0
	if hadOperator {
		if r := gpu(t, ctx, "operator", "uninstall", "--yes"); r.Code != 0 {
			t.Fatalf("operator uninstall: exit %d\n%s", r.Code, r.Stderr)
		}
	}
	for _, n := range gpus {
		if err := env.Cluster.Client.CoreV1().Nodes().Delete(ctx, n, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	chart := []string{"--stack", "device-plugin", "--chart", charts["KGPU_DEVICE_PLUGIN_CHART"]}
	// Without the host's driver and toolkit the device plugin cannot serve: refused.
	r, _ := gpuSim(t, ctx, append([]string{"up", "--dry-run"}, chart...)...)
	if r.Code != 2 || !strings.Contains(r.Stderr, "--host-driver and --host-toolkit") {
		t.Fatalf("device plugin on a bare host: exit %d, want 2 naming --host-driver\n%s", r.Code, r.Stderr)
	}
	// Branch 570, which TestUpHostDriverUpgrade moves to 580 (the default branch).
	host := append(chart, "--host-driver=570", "--host-toolkit=1.17.8", "--package-repo", packages.Mirror())
	r, _ = gpuSim(t, ctx, append([]string{"up", "--dry-run", "-o", "json"}, host...)...)
	if r.Code != 0 {
		t.Fatalf("dry run: exit %d\n%s", r.Code, r.Stderr)
	}
	plan := parse[up.Plan](t, r)
	diff := strings.Join(plan.Differences, "; ")
	if hadOperator && !strings.Contains(diff, "stack: operator → device-plugin") || len(plan.Releases) != 1 || plan.Releases[0].Action != up.ActionInstall || len(plan.Nodes) != len(rke2) {
		t.Fatalf("plan: differences %q, releases %+v, nodes %+v", diff, plan.Releases, plan.Nodes)
	}
	for _, n := range plan.Nodes {
		if n.Reboot == "" {
			t.Errorf("%s is not rebooted in the plan: %+v", n.Node, n)
		}
		// From → to: no driver yet, the branch's version as apt resolved it in the Debian root.
		if v := n.Versions; len(v) == 0 || v[0].What != "driver" || v[0].From != "" || !strings.HasPrefix(v[0].To, "570.") {
			t.Errorf("%s: the plan's versions %+v; want the driver from none to 570.x", n.Node, v)
		}
	}
	r, runs := gpuSim(t, ctx, append([]string{"up", "--yes", "-o", "json", "--timeout", "3m"}, host...)...)
	if r.Code != 0 {
		t.Fatalf("run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	rep := parse[up.Report](t, r)
	// A run resumed after the race finds the nodes it finished already done.
	if rep.Summary.Verified != len(rke2) {
		t.Fatalf("report: %+v\n%s", rep, r.Stderr)
	}
	for _, n := range rep.Nodes {
		if runs == 1 && n.Prep != "rebooted" {
			t.Errorf("%s: prep %q, want rebooted", n.Node, n.Prep)
		}
	}
	for _, n := range rke2 {
		if b := boots.reboots(n); b != 1 {
			t.Errorf("%s rebooted %d times, want once", n, b)
		}
	}
	r, _ = gpuSim(t, ctx, append([]string{"up", "--yes", "-o", "json"}, host...)...)
	if r.Code != 0 || !strings.Contains(r.Stderr, "nothing to change") {
		t.Fatalf("second run: exit %d\n%s", r.Code, r.Stderr)
	}
	if h := releaseHistory(t, "nvidia-device-plugin", "nvidia-device-plugin"); len(h) != 1 || h[0] != "1:deployed" {
		t.Errorf("release history %v, want one revision 1, deployed", h)
	}
	noPods(t)
}

// TestUpHostDriverUpgrade (after TestUpDevicePlugin: the RKE2 nodes run the device plugin
// on the host's driver 570, installed through the real apt in their Debian roots), day two
// of a host driver, 570 → 580, in three runs:
//
//   - The canary's kernel refuses 580 (simnodes.PackageHosts.RefuseDriver, as Secure Boot
//     refuses a module it cannot verify): apt replaces the 570 packages, the node reboots
//     without a driver, the roll's check says the installed driver did not load, and the run
//     stops with exit 1 — the canary cordoned with doctor's diagnosis in the report, the
//     other node never cordoned nor rebooted, still on 570.
//   - The way back the failure names, the exact version the canary ran, although the archive
//     has a newer 570 by then (pinned): only the canary is planned; its roll, left past its
//     install, installs again and reboots once.
//   - Its kernel fixed, 580 again, interrupted at a random point of the roll, then the same
//     command: both nodes on 580, each rebooted once, none left cordoned, no pod left, and
//     the device plugin's release untouched (one revision, deployed).
func TestUpHostDriverUpgrade(t *testing.T) {
	need(t)
	if packages == nil {
		t.Skip("no Debian root for the package hosts: make tools builds it (hack/testenv/debian-root.sh)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	canary, other := rke2[0], rke2[1]
	node := func(name string) *corev1.Node {
		t.Helper()
		n, err := env.Cluster.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	driver := func(name string) string { return node(name).Annotations[nodereport.AnnotationDriver] }
	before := driver(canary)
	for _, n := range rke2 {
		if d := driver(n); !strings.HasPrefix(d, "570.") || d != before {
			t.Skipf("TestUpDevicePlugin did not leave driver %s on every RKE2 node (%s: %q)", before, n, d)
		}
	}
	args := func(flag string) []string {
		return []string{"--stack", "device-plugin", "--chart", charts["KGPU_DEVICE_PLUGIN_CHART"], flag, "--host-toolkit=1.17.8", "--package-repo", packages.Mirror()}
	}
	dryRun := func(flag string) up.Plan {
		t.Helper()
		r, _ := gpuSim(t, ctx, append([]string{"up", "--dry-run", "-o", "json"}, args(flag)...)...)
		if r.Code != 0 {
			t.Fatalf("%s: dry run: exit %d\n%s", flag, r.Code, r.Stderr)
		}
		return parse[up.Plan](t, r)
	}
	reboots := func() map[string]int {
		m := map[string]int{}
		for _, n := range rke2 {
			boots.await(t, n, node(n).Status.NodeInfo.BootID)
			m[n] = boots.reboots(n)
		}
		return m
	}

	// 1. 580, which the canary's kernel refuses.
	packages.RefuseDriver(canary, "580")
	defer packages.RefuseDriver(canary, "")
	plan := dryRun("--host-driver=580")
	if len(plan.Nodes) != 2 || !plan.ProveRolled || strings.Join(plan.Canary, ",") != canary {
		t.Fatalf("580: plan: nodes %+v, prove %v, canary %v", plan.Nodes, plan.ProveRolled, plan.Canary)
	}
	back := ""
	for _, n := range plan.Nodes {
		v := n.Versions
		if n.Reboot == "" || len(v) == 0 || v[0].What != "driver" || v[0].From != before || !strings.HasPrefix(v[0].To, "580.") {
			t.Fatalf("580: %s: reboot %q, versions %+v; want the driver %s → 580.x", n.Node, n.Reboot, v, before)
		}
		back = v[0].Back
	}
	if back != "--host-driver="+before {
		t.Errorf("the way back named by the plan: %q, want --host-driver=%s", back, before)
	}
	was := reboots()
	r, _ := gpuSim(t, ctx, append([]string{"up", "--yes", "-o", "json", "--timeout", "2m"}, args("--host-driver=580")...)...)
	if r.Code != 1 {
		t.Fatalf("580 refused by the canary's kernel: exit %d, want 1\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	results := byNode(parse[up.Report](t, r))
	if c := results[canary]; c.Prep != up.Failed || !strings.Contains(c.Detail, "not the installed 580.") || !strings.Contains(c.Hint, "--host-driver="+before) ||
		c.Diagnosis == nil || c.Diagnosis.FirstBroken != "driver" || !strings.Contains(c.Diagnosis.Detail, "580.95.05 is installed on the host but not loaded") {
		t.Errorf("the canary's result: %+v (diagnosis %+v)", c, c.Diagnosis)
	} else {
		t.Logf("the canary: %s; doctor: %s: %s (%s)", c.Detail, c.Diagnosis.FirstBroken, c.Diagnosis.Detail, c.Diagnosis.Fix)
	}
	if o := results[other]; o.Prep != up.NotStarted {
		t.Errorf("the node after the canary: %+v", o)
	}
	if n := node(canary); !n.Spec.Unschedulable || prep.ReadRollState(n).Phase != prep.PhaseRebooted {
		t.Errorf("the canary: cordoned %v, roll %+v", n.Spec.Unschedulable, prep.ReadRollState(n))
	}
	if n := node(other); n.Spec.Unschedulable || prep.ReadRollState(n).Phase != prep.PhaseDone {
		t.Errorf("the node after the canary was touched: cordoned %v, roll %+v", n.Spec.Unschedulable, prep.ReadRollState(n))
	}
	now := reboots()
	if now[canary] != was[canary]+1 || now[other] != was[other] {
		t.Errorf("reboots: canary %d, other %d; want 1 and 0", now[canary]-was[canary], now[other]-was[other])
	}
	if d := driver(other); d != before {
		t.Errorf("the node after the canary: driver %q, want %s", d, before)
	}
	noPods(t)

	// 2. Back, by the flag the failure names, to the very version the canary ran although
	// the archive has a newer 570 by then.
	if err := packages.PublishDriver("570", "570.211.01"); err != nil {
		t.Fatal(err)
	}
	plan = dryRun(back)
	for _, n := range plan.Nodes {
		moved := n.Reboot != "" && len(n.Versions) > 0 && n.Versions[0].To == before && n.Resumes == string(prep.PhaseCordoned)
		if n.Node == canary && !moved || n.Node != canary && (n.Reboot != "" || len(n.Versions) > 0) {
			t.Fatalf("back: plan: %s: reboot %q, versions %v, resumes %q; want only %s moved, its driver to %s", n.Node, n.Reboot, n.Versions, n.Resumes, canary, before)
		}
	}
	was = reboots()
	r, _ = gpuSim(t, ctx, append([]string{"up", "--yes", "-o", "json", "--timeout", "2m"}, args(back)...)...)
	if r.Code != 0 {
		t.Fatalf("back: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	now = reboots()
	if now[canary] != was[canary]+1 || now[other] != was[other] {
		t.Errorf("back: reboots: canary %d, other %d; want 1 and 0", now[canary]-was[canary], now[other]-was[other])
	}
	for _, n := range rke2 {
		if d, nd := driver(n), node(n); d != before || nd.Spec.Unschedulable || prep.ReadRollState(nd).Phase != prep.PhaseDone {
			t.Errorf("back: %s: driver %q (want %s), cordoned %v, roll %+v", n, d, before, nd.Spec.Unschedulable, prep.ReadRollState(nd))
		}
	}
	noPods(t)

	// 3. The kernel fixed, 580 again, interrupted at a random point of the roll.
	packages.RefuseDriver(canary, "")
	was = reboots()
	upgrade := append([]string{"up", "--yes", "-o", "json", "--timeout", "2m"}, args("--host-driver=580")...)
	cmd, stderr, done := started(t, ctx, upgrade...)
	// After the roll's first record, 0–20 s on: anywhere from the canary's drain to the
	// other node's reboot.
	delay := time.Duration(rand.IntN(20000)) * time.Millisecond
	var at time.Time
wait:
	for {
		select {
		case <-done:
			break wait
		case <-time.After(100 * time.Millisecond):
			if at.IsZero() {
				for _, n := range rke2 {
					if p := prep.ReadRollState(node(n)).Phase; p != "" && p != prep.PhaseDone {
						at = time.Now().Add(delay)
					}
				}
			} else if time.Now().After(at) {
				t.Logf("interrupted %s after the roll began", delay)
				_ = cmd.Process.Signal(os.Interrupt)
				at = time.Now().Add(time.Hour)
			}
		}
	}
	t.Logf("580, interrupted: exit %d; %s", cmd.ProcessState.ExitCode(), lastLine(stderr.String()))
	if code := cmd.ProcessState.ExitCode(); code != 130 && code != 0 {
		t.Fatalf("580, interrupted: exit %d\n%s", code, stderr.String())
	}
	noPods(t)
	r, _ = gpuSim(t, ctx, upgrade...)
	if r.Code != 0 {
		t.Fatalf("580 after the interrupt: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	now = reboots()
	for _, n := range rke2 {
		nd := node(n)
		if d := driver(n); !strings.HasPrefix(d, "580.") || nd.Spec.Unschedulable || prep.ReadRollState(nd).Phase != prep.PhaseDone {
			t.Errorf("580: %s: driver %q, cordoned %v, roll %+v", n, d, nd.Spec.Unschedulable, prep.ReadRollState(nd))
		}
		if b := now[n] - was[n]; b != 1 {
			t.Errorf("580: %s rebooted %d times, want once", n, b)
		}
	}
	if h := releaseHistory(t, "nvidia-device-plugin", "nvidia-device-plugin"); len(h) != 1 || h[0] != "1:deployed" {
		t.Errorf("the device plugin's release history %v, want one revision 1, deployed", h)
	}
	noPods(t)
}

// lastLine is a text's last non-empty line.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
