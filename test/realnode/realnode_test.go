// Package realnode runs kubectl gpu against a real node of the local cluster: a real
// kubelet, containerd and runc (Debian's) in network, PID and mount namespaces of their own
// (hack/testenv/localcluster/realnode.go), on the same real control plane as the other end-to-end
// tests.
//
// What is real: the scheduler's accounting of nvidia.com/gpu, the kubelet's device
// manager allocating it, RuntimeClass nvidia resolved by containerd to its nvidia runtime,
// runc starting the containers, pod logs, the Job controller, the node agent image (the
// real agent binary, assembled in Go) running in a privileged hostPID pod that reads this
// machine's real kernel, modules, swap and the containerd config the harness wrote.
// What is not: the GPUs are advertised by a fake device plugin (hack/testenv/fakedeviceplugin),
// the nvidia runtime is a wrapper that logs and runs runc, and verify runs a stand-in for
// the CUDA vectoradd image (hack/testenv/nodeimages/cuda-vectoradd-standin) that prints what the
// sample prints: these tests go up to the GPU, never past it. prep --apply writes to a fake
// host root under the cluster's directory (the agent image's AGENT_HOST_ROOT points into
// /host) and records host commands instead of running them (hack/testenv/simagent): the
// machine's own files are never written, which the test checks.
package realnode

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig"
	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/hack/release/ociimage"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

const (
	nodeName = "gpu-real-0"
	gpus     = 2
	// The real agent image, and the same image pointed at a fake host root with host
	// commands recorded (for --apply).
	agentImage       = "localhost/kubectl-gpu-test/gpu-node-agent:e2e"
	agentRecordImage = "localhost/kubectl-gpu-test/gpu-node-agent:e2e-fake-host-root"
)

var (
	env      *harness.Env
	node     *localcluster.RealNode
	fakeRoot string
)

func TestMain(m *testing.M) {
	localcluster.RealNodeProcess() // this binary is also the real node's init
	before := localcluster.ReadMachineState()
	code := harness.MainWith(m, &env, setup)
	// Teardown leaves the machine as it was: interfaces, namespaces, addresses, routes,
	// mounts, cgroups, sysctls, iptables, directories.
	if d := localcluster.ReadMachineState().Diff(before); len(d) > 0 {
		fmt.Fprintf(os.Stderr, "the real node changed the machine:\n  %s\n", strings.Join(d, "\n  "))
		code = 1
	}
	os.Exit(code)
}

func setup(ctx context.Context, e *harness.Env) (string, error) {
	if err := localcluster.RealNodeSupported(localcluster.Options{}); err != nil {
		return "real-node tests: " + err.Error(), nil
	}
	agent := filepath.Join(e.Cluster.Dir, "gpu-node-agent")
	if err := harness.BuildAgent(agent); err != nil {
		return "", err
	}
	spec, err := ociimage.AgentSpec(agent, "/", "")
	if err != nil {
		return "", err
	}
	fakeRoot = filepath.Join(e.Cluster.Dir, "fake-host-root")
	if err := hostconfigtest.Build("ubuntu2204-kubeadm", fakeRoot, 1); err != nil {
		return "", err
	}
	simAgent := filepath.Join(e.Cluster.Dir, "simagent")
	if err := harness.BuildSimAgent(simAgent); err != nil {
		return "", err
	}
	rec, err := ociimage.AgentSpec(simAgent, "/", "")
	if err != nil {
		return "", err
	}
	rec.Env = append(append([]string(nil), rec.Env...), "AGENT_HOST_ROOT=/host"+fakeRoot)
	node, err = e.Cluster.AddRealNode(ctx, localcluster.RealNodeOptions{
		Name: nodeName, GPUs: gpus,
		Labels: map[string]string{"nvidia.com/gpu.present": "true"},
		Images: map[string]ociimage.Spec{agentImage: spec, agentRecordImage: rec},
	})
	return "", err
}

func need(t *testing.T) {
	t.Helper()
	if env == nil {
		t.Skip("no real node on this machine (see the SKIP line above)")
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// noneLeft waits until no pod or Job of ours is left in the namespace.
func noneLeft(t *testing.T, ctx context.Context) {
	t.Helper()
	cs := env.Cluster.Client
	deadline := time.Now().Add(60 * time.Second)
	for {
		pods, err := cs.CoreV1().Pods(nodepod.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: nodepod.LabelManagedBy + "=" + nodepod.ManagedBy})
		if err != nil {
			t.Fatal(err)
		}
		jobs, err := cs.BatchV1().Jobs(nodepod.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: nodepod.LabelManagedBy + "=" + nodepod.ManagedBy})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) == 0 && len(jobs.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind after 60 s: %d pods, %d Jobs", len(pods.Items), len(jobs.Items))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func checkOf(t *testing.T, checks []hostconfigCheck, id string) hostconfigCheck {
	t.Helper()
	for _, c := range checks {
		if c.ID == id {
			return c
		}
	}
	t.Fatalf("no %s check in %+v", id, checks)
	return hostconfigCheck{}
}

type hostconfigCheck struct {
	ID, Status, Message string
}

func prepDoc(t *testing.T, out string) prep.Report {
	t.Helper()
	var doc prep.Report
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(doc.Items) != 1 || doc.Items[0].Report == nil {
		t.Fatalf("want one node report: %s", out)
	}
	return doc
}

func checks(doc prep.Report) []hostconfigCheck {
	var l []hostconfigCheck
	for _, c := range doc.Items[0].Report.Checks {
		l = append(l, hostconfigCheck{ID: c.ID, Status: string(c.Status), Message: c.Message})
	}
	return l
}

// TestPrepCheckRealHost: the real agent image in a real pod reads this machine.
func TestPrepCheckRealHost(t *testing.T) {
	need(t)
	ctx := ctxT(t, 4*time.Minute)
	r := env.Gpu(ctx, "prep", nodeName, "--image", agentImage, "-o", "json", "--timeout", "2m")
	// No NVIDIA GPU on this machine: the only node has none, which is a failure (exit 1).
	if r.Code != 1 {
		t.Fatalf("exit %d, want 1 (no GPU)\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	doc := prepDoc(t, r.Stdout)
	rep := doc.Items[0].Report
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	if rep.Kernel != strings.TrimSpace(string(kernel)) {
		t.Errorf("kernel %q, this machine's is %q", rep.Kernel, strings.TrimSpace(string(kernel)))
	}
	if len(rep.GPUs) != 0 || doc.Summary.NoGPU != 1 {
		t.Errorf("GPUs %+v, summary %+v: this machine has none", rep.GPUs, doc.Summary)
	}
	// Swap as /proc/swaps says.
	swaps, _ := os.ReadFile("/proc/swaps")
	swapOn := len(strings.Split(strings.TrimSpace(string(swaps)), "\n")) > 1
	if sw := checkOf(t, checks(doc), nodereport.CheckSwap); swapOn != (sw.Status == "fail") {
		t.Errorf("swap check %+v, but /proc/swaps:\n%s", sw, swaps)
	}
	// Modules as /proc/modules says: every module the check calls missing is not loaded here.
	loaded, _ := os.ReadFile("/proc/modules")
	if mc := checkOf(t, checks(doc), nodereport.CheckModules); mc.Status == "fail" {
		for _, m := range strings.Split(strings.TrimPrefix(mc.Message, "kernel modules: "), ", ") {
			if strings.Contains(string(loaded), "\n"+m+" ") || strings.HasPrefix(string(loaded), m+" ") {
				t.Errorf("module %s reported missing but loaded: %+v", m, mc)
			}
		}
	} else {
		for _, m := range hostconfig.RequiredModules {
			if !strings.Contains(string(loaded), m+" ") {
				t.Errorf("modules check %+v but %s is not in /proc/modules", mc, m)
			}
		}
	}
	// The containerd config the harness wrote (the node's /etc/containerd/config.toml):
	// version 2 with the nvidia runtime, runc on cgroupfs like the kubelet.
	if rep.ContainerdConfigVersion != 2 || !rep.NvidiaRuntime {
		t.Errorf("containerd config version %d, nvidia runtime %v: want 2, true", rep.ContainerdConfigVersion, rep.NvidiaRuntime)
	}
	// The node's own containerd judged its files (`containerd config dump` in the node's
	// namespaces), not the tool's model.
	if c := rep.Containerd; c == nil || c.Judge != nodereport.JudgeContainerd || !c.Loads || c.ReleaseGuessed {
		t.Errorf("containerd load %+v: want judged by the node's containerd, loading", c)
	}
	if sc := checkOf(t, checks(doc), nodereport.CheckSystemdCgroup); sc.Status != "ok" || !strings.Contains(sc.Message, "cgroupfs") {
		t.Errorf("SystemdCgroup check %+v: the node's kubelet and runc both use cgroupfs", sc)
	}
	if dr := checkOf(t, checks(doc), nodereport.CheckDriver); dr.Status == "ok" {
		t.Errorf("driver check %+v on a machine without the NVIDIA driver", dr)
	}
	noneLeft(t, ctx)
}

func digestFiles(t *testing.T, globs ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, g := range globs {
		paths, _ := filepath.Glob(g)
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err == nil {
				m[p] = fmt.Sprintf("%x", sha256.Sum256(b))
			}
		}
	}
	return m
}

// TestPrepApplyFakeRoot: --apply through a real privileged pod, writing to the fake host
// root only, host commands recorded.
func TestPrepApplyFakeRoot(t *testing.T) {
	need(t)
	ctx := ctxT(t, 5*time.Minute)
	machine := []string{"/etc/fstab", "/etc/modules-load.d/*", "/etc/sysctl.d/*", "/etc/modprobe.d/*", "/etc/containerd/*", "/etc/sysctl.conf"}
	before := digestFiles(t, machine...)
	fstabBefore, _ := os.ReadFile(filepath.Join(fakeRoot, "etc/fstab"))

	r := env.Gpu(ctx, "prep", nodeName, "--image", agentRecordImage, "--apply", "--yes", "-o", "json", "--timeout", "2m")
	doc := prepDoc(t, r.Stdout)
	if doc.Mode != "apply" {
		t.Fatalf("mode %q\n%s", doc.Mode, r.Stderr)
	}
	fixed := 0
	for _, c := range checks(doc) {
		if c.Status == "fixed" {
			fixed++
		}
	}
	if fixed == 0 {
		t.Fatalf("nothing fixed (exit %d): %+v\n%s", r.Code, checks(doc), r.Stderr)
	}
	// The plan was shown before applying: diffs of the fake root's files.
	if !strings.Contains(r.Stderr, "/etc/containerd/config.toml") {
		t.Errorf("no containerd diff in the plan:\n%s", r.Stderr)
	}
	b, _ := os.ReadFile(filepath.Join(fakeRoot, "etc/containerd/config.toml"))
	if !strings.Contains(string(b), "SystemdCgroup = true") {
		t.Errorf("the fake root's containerd config was not edited:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(fakeRoot, strings.TrimPrefix(hostconfig.ModulesFile, "/"))); err != nil {
		t.Errorf("modules file not written in the fake root: %v", err)
	}
	if fstab, _ := os.ReadFile(filepath.Join(fakeRoot, "etc/fstab")); string(fstab) == string(fstabBefore) {
		t.Errorf("the fake root's fstab swap line was not commented out:\n%s", fstab)
	}
	recorded := 0
	for _, ch := range doc.Items[0].Report.Changes {
		if strings.Contains(ch.Note, "recorded") {
			recorded++
		}
	}
	if recorded == 0 {
		t.Errorf("no host command recorded: %+v", doc.Items[0].Report.Changes)
	}
	after := digestFiles(t, machine...)
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("the machine's own files changed:\nbefore %v\nafter  %v", before, after)
	}
	noneLeft(t, ctx)
}

func verifyDoc(t *testing.T, r harness.Result) verify.Report {
	t.Helper()
	var doc verify.Report
	if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil {
		t.Fatalf("exit %d: %v\n%s\n%s", r.Code, err, r.Stdout, r.Stderr)
	}
	if len(doc.Items) != 1 {
		t.Fatalf("want one node: %s", r.Stdout)
	}
	return doc
}

// TestVerifyRealPods: the verify pod through the real scheduler, device plugin, RuntimeClass,
// containerd and runc.
func TestVerifyRealPods(t *testing.T) {
	need(t)
	ctx := ctxT(t, 8*time.Minute)
	logBefore, _ := os.ReadFile(node.RuntimeLog)

	t.Run("pass", func(t *testing.T) {
		r := env.Gpu(ctx, "verify", nodeName, "--image", localcluster.VectorAddStandInOK, "--runtime-class", "nvidia", "-o", "json", "--timeout", "2m")
		doc := verifyDoc(t, r)
		if r.Code != 0 || doc.Items[0].Result != verify.Passed {
			t.Fatalf("exit %d: %+v\n%s", r.Code, doc.Items[0], r.Stderr)
		}
		// Through containerd's nvidia runtime (the wrapper logs each call and runs runc).
		logAfter, _ := os.ReadFile(node.RuntimeLog)
		if !strings.Contains(string(logAfter[len(logBefore):]), "create") {
			t.Errorf("the nvidia runtime was not used:\n%s", logAfter[len(logBefore):])
		}
		noneLeft(t, ctx)
	})
	t.Run("workload fails", func(t *testing.T) {
		r := env.Gpu(ctx, "verify", nodeName, "--image", localcluster.VectorAddStandInBad, "--runtime-class", "nvidia", "-o", "json", "--timeout", "2m")
		doc := verifyDoc(t, r)
		it := doc.Items[0]
		if r.Code != 1 || it.Result != verify.Failed || it.Reason != verify.ReasonCUDAError || !strings.Contains(it.Detail, "CUDA driver version is insufficient") {
			t.Fatalf("exit %d: %+v", r.Code, it)
		}
		noneLeft(t, ctx)
	})
	t.Run("insufficient GPUs", func(t *testing.T) {
		// More than the node has: refused before anything is created.
		r := env.Gpu(ctx, "verify", nodeName, "--gpus", fmt.Sprint(gpus+1), "--image", localcluster.VectorAddStandInOK, "--runtime-class", "nvidia")
		if r.Code != 2 || r.Stdout != "" || !strings.Contains(r.Stderr, fmt.Sprintf("has %d nvidia.com/gpu", gpus)) {
			t.Fatalf("--gpus %d: exit %d\n%s%s", gpus+1, r.Code, r.Stdout, r.Stderr)
		}
		// All of them while a workload holds one: the real scheduler's refusal, classified.
		stop := holdGPU(t, ctx, "holds-one-gpu-verify")
		defer stop()
		r = env.Gpu(ctx, "verify", nodeName, "--gpus", fmt.Sprint(gpus), "--image", localcluster.VectorAddStandInOK, "--runtime-class", "nvidia", "-o", "json", "--timeout", "1m")
		doc := verifyDoc(t, r)
		it := doc.Items[0]
		if r.Code != 1 || it.Result != verify.Failed || it.Reason != verify.ReasonUnschedulable || !strings.Contains(it.Detail, "nvidia.com/gpu") {
			t.Fatalf("exit %d: %+v", r.Code, it)
		}
		noneLeft(t, ctx)
	})
	t.Run("runtime handler missing", func(t *testing.T) {
		rc := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-missing"}, Handler: "nvidia-missing"}
		if _, err := env.Cluster.Client.NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer env.Cluster.Client.NodeV1().RuntimeClasses().Delete(context.WithoutCancel(ctx), rc.Name, metav1.DeleteOptions{})
		r := env.Gpu(ctx, "verify", nodeName, "--image", localcluster.VectorAddStandInOK, "--runtime-class", "nvidia-missing", "-o", "json", "--timeout", "1m")
		doc := verifyDoc(t, r)
		it := doc.Items[0]
		// containerd's own words: no runtime for "nvidia-missing" is configured.
		if r.Code != 1 || it.Reason != verify.ReasonRuntimeHandler || !strings.Contains(it.Detail, `no runtime for "nvidia-missing" is configured`) {
			t.Fatalf("exit %d: %+v", r.Code, it)
		}
		noneLeft(t, ctx)
	})
	t.Run("interrupted", func(t *testing.T) {
		cmd := env.Command(ctx, "gpu", "verify", nodeName, "--image", localcluster.VectorAddStandInZzz, "--runtime-class", "nvidia", "--timeout", "3m")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Ctrl-C once the pod's container really runs.
		if err := waitRunning(ctx, nodepod.DefaultNamespace, verify.PodName(nodeName)); err != nil {
			t.Fatal(err)
		}
		// kubectl execs the plugin in its own place: the process is the plugin.
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 130 {
			t.Fatalf("exit %d (%v), want 130", code, err)
		}
		noneLeft(t, ctx)
	})
}

// TestNodesRealAllocation: nodes shows what the kubelet really allocated.
func TestNodesRealAllocation(t *testing.T) {
	need(t)
	ctx := ctxT(t, 3*time.Minute)
	stop := holdGPU(t, ctx, "holds-one-gpu")
	defer stop()
	r := env.Gpu(ctx, "nodes", nodeName, "-o", "json")
	var doc inventory.Inventory
	if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil || r.Code != 0 {
		t.Fatalf("exit %d: %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
	}
	if len(doc.Items) != 1 || doc.Items[0].GPUs != gpus || doc.Items[0].Used != 1 || !doc.Items[0].Ready {
		t.Fatalf("want %s Ready with %d GPUs, 1 used: %+v", nodeName, gpus, doc.Items)
	}
	if !strings.HasPrefix(doc.Items[0].ContainerRuntime, "containerd://") {
		t.Errorf("container runtime %q: the real node runs containerd", doc.Items[0].ContainerRuntime)
	}
}

// holdGPU runs a pod that holds one GPU of the real node until stop is called.
func holdGPU(t *testing.T, ctx context.Context, name string) (stop func()) {
	t.Helper()
	cs := env.Cluster.Client
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName:                      nodeName,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "pause", Image: localcluster.PauseImage, ImagePullPolicy: corev1.PullNever,
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("1")}},
			}},
		},
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stop = func() {
		ctx := context.WithoutCancel(ctx)
		_ = cs.CoreV1().Pods("default").Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		for i := 0; i < 100; i++ {
			if _, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{}); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if err := waitRunning(ctx, "default", name); err != nil {
		stop()
		t.Fatal(err)
	}
	return stop
}

// waitRunning waits until the pod's containers run (NotFound is waited out: the pod may not
// have been created yet).
func waitRunning(ctx context.Context, ns, name string) error {
	var last string
	for {
		p, err := env.Cluster.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil && p.Status.Phase == corev1.PodRunning:
			return nil
		case err == nil:
			last = fmt.Sprintf("%+v", p.Status)
		default:
			last = err.Error()
		}
		if ctx.Err() != nil {
			return fmt.Errorf("pod %s/%s never ran: %s", ns, name, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestClientKilled: verify killed with SIGKILL (no clean-up possible) while its pod runs: the
// kubelet stops the pod at its deadline (activeDeadlineSeconds = --timeout, at least 30 s),
// which frees the GPU; the stopped pod stays until the next verify or --cleanup removes it.
func TestClientKilled(t *testing.T) {
	need(t)
	ctx := ctxT(t, 4*time.Minute)
	cs := env.Cluster.Client
	cmd := env.Command(ctx, "gpu", "verify", nodeName, "--image", localcluster.VectorAddStandInZzz, "--runtime-class", "nvidia", "--timeout", "30s")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pod := verify.PodName(nodeName)
	if err := waitRunning(ctx, nodepod.DefaultNamespace, pod); err != nil {
		t.Fatal(err)
	}
	p, err := cs.CoreV1().Pods(nodepod.DefaultNamespace).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	started := p.Status.StartTime.Time
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	for {
		p, err = cs.CoreV1().Pods(nodepod.DefaultNamespace).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase == corev1.PodFailed {
			break
		}
		if time.Since(started) > 60*time.Second {
			t.Fatalf("the pod still %s %s after it started (deadline 30 s)", p.Status.Phase, time.Since(started).Round(time.Second))
		}
		time.Sleep(250 * time.Millisecond)
	}
	stopped := time.Since(started)
	if p.Status.Reason != "DeadlineExceeded" || stopped < 30*time.Second {
		t.Fatalf("pod %s (%s) after %s: want DeadlineExceeded after 30 s", p.Status.Phase, p.Status.Reason, stopped)
	}
	t.Logf("client killed: the kubelet stopped the verify pod %s after it started (deadline 30 s)", stopped.Round(100*time.Millisecond))
	// The GPU is free again: a new verify clears the stopped pod and passes.
	r := env.Gpu(ctx, "verify", nodeName, "--gpus", fmt.Sprint(gpus), "--image", localcluster.VectorAddStandInOK, "--runtime-class", "nvidia", "--timeout", "1m")
	if r.Code != 0 {
		t.Fatalf("verify after the killed run: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	noneLeft(t, ctx)
}
