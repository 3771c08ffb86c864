package e2e

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/simnodes"
)

// What kwok simulates here: the pods are scheduled by the real scheduler and really created,
// watched and deleted; kwok marks them Running, then a Stage finishes them on chosen nodes
// (Succeeded or Failed) and kwok serves each pod's log from a file written by the test —
// the output the CUDA vectoradd sample prints on success or on a CUDA error. No container
// and no GPU is involved.

const cudaFailLog = simnodes.VectorAddNoDeviceLog
const passLog = simnodes.VectorAddPassLog

// outcomes sets which nodes pass and which fail with a CUDA error.
func outcomes(t *testing.T, pass, fail []string) {
	t.Helper()
	ctx := context.Background()
	c := env.Cluster
	// The namespace the tool would create, so the Logs objects can live in it before the run.
	if err := nodepod.EnsureNamespace(ctx, c.Client, nodepod.DefaultNamespace, nodepod.PSARestricted); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPodOutcome(ctx, "verify-pass", verify.Component, pass, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPodOutcome(ctx, "verify-fail", verify.Component, fail, 1); err != nil {
		t.Fatal(err)
	}
	for _, n := range pass {
		if err := c.SetPodLog(ctx, "kubectl-gpu", verify.PodName(n), verify.ContainerName, passLog); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range fail {
		if err := c.SetPodLog(ctx, "kubectl-gpu", verify.PodName(n), verify.ContainerName, cudaFailLog); err != nil {
			t.Fatal(err)
		}
	}
}

// noVerifyPods checks that nothing of ours is left (pods may still be terminating for a
// moment after the command returns; kwok removes them).
func noVerifyPods(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		pods, err := env.Cluster.Client.CoreV1().Pods("kubectl-gpu").List(context.Background(), metav1.ListOptions{LabelSelector: nodepod.Selector(verify.Component)})
		if err != nil {
			t.Fatal(err)
		}
		live := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				live++
			}
		}
		if live == 0 && len(pods.Items) == 0 {
			return
		}
		if live > 0 || time.Now().After(deadline) {
			t.Fatalf("%d verify pods left (%d not being deleted)", len(pods.Items), live)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestVerifyMixedResults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	outcomes(t, []string{"gpu-a100-0", "gpu-rke2-0"}, []string{"gpu-a100-1"})
	// The K3s node's only GPU is taken: the real scheduler leaves the verify pod Pending.
	if _, err := env.Cluster.RunGPUPod(ctx, "default", "busy-k3s", "gpu-k3s-0", 1); err != nil {
		t.Fatal(err)
	}
	defer env.Cluster.Client.CoreV1().Pods("default").Delete(context.Background(), "busy-k3s", metav1.DeleteOptions{})

	junit := filepath.Join(t.TempDir(), "verify.xml")
	r := env.Gpu(ctx, "verify", "-o", "json", "--junit-file", junit, "--timeout", "60s")
	if r.Code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	var rep verify.Report
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, r.Stdout)
	}
	got := map[string]verify.NodeResult{}
	for _, it := range rep.Items {
		got[it.Node] = it
	}
	want := map[string]verify.Reason{"gpu-a100-0": "", "gpu-rke2-0": "", "gpu-a100-1": verify.ReasonCUDAError, "gpu-k3s-0": verify.ReasonUnschedulable}
	if len(got) != len(want) {
		t.Fatalf("nodes %v, want %v (gpu-bare-0 and cpu-0 have no allocatable GPU)", rep.Items, want)
	}
	for n, reason := range want {
		it := got[n]
		if reason == "" && it.Result != verify.Passed || reason != "" && (it.Result != verify.Failed || it.Reason != reason) {
			t.Errorf("%s: %s %s %q, want reason %q", n, it.Result, it.Reason, it.Detail, reason)
		}
	}
	if d := got["gpu-k3s-0"].Detail; !strings.Contains(d, "Insufficient nvidia.com/gpu") {
		t.Errorf("k3s detail %q", d)
	}
	if rep.Summary != (verify.Summary{Nodes: 4, Passed: 2, Failed: 2}) || rep.RuntimeClass != "" {
		t.Errorf("summary %+v runtime class %q", rep.Summary, rep.RuntimeClass)
	}
	b, err := os.ReadFile(junit)
	if err != nil {
		t.Fatal(err)
	}
	var suites struct {
		Suites []struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &suites); err != nil || suites.Suites[0].Tests != 4 || suites.Suites[0].Failures != 2 {
		t.Fatalf("junit: %v %+v", err, suites)
	}
	noVerifyPods(t)
}

func TestVerifyRuntimeClassAndKeep(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	outcomes(t, []string{"gpu-rke2-0"}, nil)
	rc := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: "nvidia"}, Handler: "nvidia"}
	if _, err := env.Cluster.Client.NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer env.Cluster.Client.NodeV1().RuntimeClasses().Delete(context.Background(), "nvidia", metav1.DeleteOptions{})

	r := env.Gpu(ctx, "verify", "gpu-rke2-0", "--gpus", "all", "--keep")
	if r.Code != 0 || !strings.Contains(r.Stdout, "gpu-rke2-0   4      Passed") || !strings.Contains(r.Stdout, "1 node: 1 passed, 0 failed") {
		t.Fatalf("exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	p, err := env.Cluster.Client.CoreV1().Pods("kubectl-gpu").Get(ctx, verify.PodName("gpu-rke2-0"), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("--keep: %v", err)
	}
	if p.Spec.RuntimeClassName == nil || *p.Spec.RuntimeClassName != "nvidia" {
		t.Fatalf("auto with RuntimeClass nvidia present: %v", p.Spec.RuntimeClassName)
	}
	if p.Spec.SecurityContext == nil || *p.Spec.SecurityContext.RunAsNonRoot != true {
		t.Fatal("the pod must run as non-root")
	}
	// A second run over a finished pod left by --keep replaces it.
	if r := env.Gpu(ctx, "verify", "gpu-rke2-0"); r.Code != 0 {
		t.Fatalf("rerun over a kept pod: exit %d %s", r.Code, r.Stderr)
	}
	r = env.Gpu(ctx, "verify", "--cleanup")
	if r.Code != 0 {
		t.Fatalf("--cleanup: exit %d %s", r.Code, r.Stderr)
	}
	noVerifyPods(t)
}

func TestVerifyTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	outcomes(t, nil, nil) // nobody finishes: the pod stays Running
	start := time.Now()
	r := env.Gpu(ctx, "verify", "gpu-a100-0", "--timeout", "3s", "-o", "json")
	if r.Code != 1 {
		t.Fatalf("exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	var rep verify.Report
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if it := rep.Items[0]; it.Reason != verify.ReasonTimeout || !strings.Contains(it.Detail, "timed out after 3s while the pod was running") {
		t.Fatalf("result %+v", it)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatalf("the timeout was not kept: %s", time.Since(start))
	}
	noVerifyPods(t)
}

func TestVerifyInterrupt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	outcomes(t, nil, nil)
	cmd := env.Command(ctx, "gpu", "verify", "--timeout", "60s")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the pods exist, then interrupt as Ctrl-C does (kubectl passes the signal on
	// to the plugin it execs: the plugin replaces the kubectl process).
	deadline := time.Now().Add(30 * time.Second)
	for {
		pods, _ := env.Cluster.Client.CoreV1().Pods("kubectl-gpu").List(ctx, metav1.ListOptions{LabelSelector: nodepod.Selector(verify.Component)})
		if pods != nil && len(pods.Items) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("verify pods never appeared")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("exit: %v, want 130", err)
	}
	noVerifyPods(t)
}

func TestVerifyBadInput(t *testing.T) {
	ctx := context.Background()
	// A namespace whose quota allows no pod, and a user with no permission at all.
	quotaNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "no-pods"}}
	if _, err := env.Cluster.Client.CoreV1().Namespaces().Create(ctx, quotaNS, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "none"}, Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("0")}}}
	if _, err := env.Cluster.Client.CoreV1().ResourceQuotas("no-pods").Create(ctx, quota, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The quota controller must have counted before admission enforces it.
	for i := 0; i < 100; i++ {
		q, err := env.Cluster.Client.CoreV1().ResourceQuotas("no-pods").Get(ctx, "none", metav1.GetOptions{})
		if err == nil && q.Status.Hard != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"gpus larger than the node", []string{"verify", "gpu-k3s-0", "--gpus", "2"}, 2, "--gpus 2 is more than the node has (gpu-k3s-0 has 1"},
		{"gpus zero", []string{"verify", "--gpus", "0"}, 2, `--gpus "0"`},
		{"node without GPUs", []string{"verify", "cpu-0"}, 2, `node "cpu-0" has no allocatable nvidia.com/gpu`},
		{"unknown node", []string{"verify", "nope"}, 2, `node "nope" not found`},
		{"unknown RuntimeClass", []string{"verify", "--runtime-class", "kata"}, 2, `RuntimeClass "kata" does not exist`},
		{"invalid image", []string{"verify", "--image", "UPPER/Case::bad"}, 2, "is not a valid image reference"},
		{"no GPU node", []string{"verify", "-l", "kubernetes.io/hostname=cpu-0"}, 1, "no GPU node found"},
		{"selector matches no node", []string{"verify", "-l", "type=none"}, 2, `no node matches "type=none"`},
		{"bad output", []string{"verify", "-o", "csv"}, 2, `unknown output format "csv"`},
		{"quota forbids the pod", []string{"verify", "gpu-a100-0", "--namespace", "no-pods"}, 2, "a ResourceQuota in namespace no-pods forbids the pod"},
		{"RBAC refusal", []string{"verify", "--as", "nobody"}, 2, "cannot list nodes: forbidden by RBAC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := env.Gpu(ctx, tc.args...)
			lines := strings.Split(strings.TrimRight(r.Stderr, "\n"), "\n")
			if r.Code != tc.code || r.Stdout != "" || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("exit %d stdout %q stderr %q; want exit %d, one line with %q", r.Code, r.Stdout, r.Stderr, tc.code, tc.want)
			}
		})
	}
	noVerifyPods(t)
}

// TestVerifyAPIServerRestart: kube-apiserver stopped and started again in the middle of a
// verify over every GPU node: the run finishes within its timeout with a result for every
// node (its watches reopen, creations, log reads and deletions retry), and nothing is left.
// What kwok simulates stops here: after an API server restart kwok no longer serves the
// logs it was given ("no logs found"), so the nodes cannot pass; the test checks that the
// run ends cleanly and says why per node. It must stay the last test of the package.
func TestVerifyAPIServerRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := env.Cluster
	outcomes(t, nil, nil)
	nodes := []string{"gpu-a100-0", "gpu-a100-1", "gpu-rke2-0", "gpu-k3s-0"}
	// The pods run 6 s before they pass: long enough to restart the API server under them.
	if err := c.SetPodOutcomeAfter(ctx, "verify-pass", verify.Component, nodes, 0, 6*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := c.SetPodLog(ctx, "kubectl-gpu", verify.PodName(n), verify.ContainerName, passLog); err != nil {
			t.Fatal(err)
		}
	}
	cmd := env.Command(ctx, "gpu", "verify", "--timeout", "90s", "-o", "json")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		pods, _ := c.Client.CoreV1().Pods("kubectl-gpu").List(ctx, metav1.ListOptions{LabelSelector: nodepod.Selector(verify.Component)})
		if pods != nil && len(pods.Items) == len(nodes) {
			break
		}
		if i > 300 {
			t.Fatal("verify pods never appeared")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.RestartAPIServer(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		t.Fatalf("verify across an API server restart: %v (want exit 0 or 1)\n%s\n%s", err, stdout.String(), stderr.String())
	}
	var rep verify.Report
	if err := json.Unmarshal([]byte(stdout.String()), &rep); err != nil || rep.Summary.Nodes != len(nodes) {
		t.Fatalf("report: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	for _, it := range rep.Items {
		if it.Result != verify.Passed && (it.Detail == "" || it.Reason == verify.ReasonTimeout) {
			t.Errorf("%s: %s %q: the run must see each pod finish, not time out", it.Node, it.Reason, it.Detail)
		}
	}
	// Put the usual quick outcome back for the other tests.
	if err := c.SetPodOutcome(ctx, "verify-pass", verify.Component, nil, 0); err != nil {
		t.Fatal(err)
	}
	noVerifyPods(t)
}
