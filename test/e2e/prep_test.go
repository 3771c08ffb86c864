package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/simnodes"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

// What is real and what is simulated in the prep tests: the Jobs, their pods, labels,
// namespace, parallelism, watch, log reading, node annotations, clean-up and the
// apply/confirm flow are real (real API server, Job controller, garbage collector). kwok
// runs no container: each simulated node's pod log is the output of the node agent's code
// (hack/testenv/simagent), built for this machine and run here against that node's fake host root (files
// from real distributions, see common/hostconfig/testdata/roots); kwok serves it as the
// pod's log. In apply mode the agent writes to a copy of the fake root; host commands are
// recorded and given their effect on that root's kernel state (hostconfigtest.SimHost).

var nodeRoots = simnodes.DefaultAgentRoots

type agentOutputs struct {
	mu  sync.Mutex
	out map[string]string // node/mode → log
}

func (a *agentOutputs) set(node, mode, log string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.out[node+"/"+mode] = log
}

func (a *agentOutputs) get(node, mode string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.out[node+"/"+mode]
	return s, ok
}

// runAgent runs the real agent against a fake root and returns its output.
func runAgent(t *testing.T, bin, root, node, mode string) string {
	t.Helper()
	cmd := exec.Command(bin, mode, "--host-root", root, "--node", node)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("agent %s on %s: %v", mode, node, err)
	}
	return string(out)
}

// simHost builds the simulated hosts' agent (hack/testenv/simagent) and, for node, a fake host root
// made from the named distribution's files with gpus GPUs, in a temporary directory.
func simHost(t *testing.T, node, rootName string, gpus int) (agent, root string) {
	t.Helper()
	dir := t.TempDir()
	agent = filepath.Join(dir, "gpu-node-agent")
	if err := harness.BuildSimAgent(agent); err != nil {
		t.Fatal(err)
	}
	root = filepath.Join(dir, node)
	if err := hostconfigtest.Build(rootName, root, gpus); err != nil {
		t.Fatal(err)
	}
	return agent, root
}

// serveAgentLogs makes kwok serve, for every prep pod that appears, the agent output for
// its node and mode.
func serveAgentLogs(t *testing.T, ctx context.Context, outs *agentOutputs) {
	c := env.Cluster
	if err := nodepod.EnsureNamespace(ctx, c.Client, nodepod.DefaultNamespace, nodepod.PSAPrivileged); err != nil {
		t.Fatal(err)
	}
	err := c.ServePodLogs(ctx, nodepod.DefaultNamespace, nodepod.Selector(prep.Component), "agent", func(p *corev1.Pod) string {
		log, ok := outs.get(p.Spec.NodeName, p.Spec.Containers[0].Args[0])
		if !ok {
			return "agent crashed: no report\n"
		}
		return log
	})
	if err != nil {
		t.Fatal(err)
	}
}

func noPrepJobs(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		jobs, err := env.Cluster.Client.BatchV1().Jobs(nodepod.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: nodepod.Selector(prep.Component)})
		if err != nil {
			t.Fatal(err)
		}
		pods, _ := env.Cluster.Client.CoreV1().Pods(nodepod.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: nodepod.Selector(prep.Component)})
		live := 0
		for _, j := range jobs.Items {
			if j.DeletionTimestamp == nil {
				live++
			}
		}
		if live > 0 {
			t.Fatalf("%d prep Jobs left", live)
		}
		if len(jobs.Items) == 0 && len(pods.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Jobs and %d pods still there", len(jobs.Items), len(pods.Items))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestPrep(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	agent := filepath.Join(dir, "gpu-node-agent")
	if err := harness.BuildSimAgent(agent); err != nil {
		t.Fatal(err)
	}
	outs := &agentOutputs{out: map[string]string{}}
	roots := map[string]string{}
	for node, name := range nodeRoots {
		root := filepath.Join(dir, node)
		if err := hostconfigtest.Build(name, root, 2); err != nil {
			t.Fatal(err)
		}
		roots[node] = root
		outs.set(node, "check", runAgent(t, agent, root, node, "check"))
		outs.set(node, "plan", runAgent(t, agent, root, node, "plan"))
	}
	serveAgentLogs(t, ctx, outs)

	// Check mode over the default nodes (those that look like GPU nodes).
	r := env.Gpu(ctx, "prep", "-o", "json")
	if r.Code != 1 {
		t.Fatalf("exit %d, want 1 (some nodes not ready)\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	var doc prep.Report
	if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Kind != "PrepReport" || doc.Summary.Nodes != 5 || doc.Summary.Ready != 2 {
		t.Fatalf("summary %+v (the K3s and RHEL 9 nodes are ready: nothing fails there, the operator installs the driver)", doc.Summary)
	}
	byNode := map[string]prep.NodeResult{}
	for _, it := range doc.Items {
		byNode[it.Node] = it
	}
	if it := byNode["gpu-k3s-0"]; !it.Ready() || it.Report.Flavour != "k3s" || it.Report.Node != "gpu-k3s-0" {
		t.Errorf("k3s: %+v", it)
	}
	if it := byNode["gpu-a100-0"]; it.Report == nil || it.Report.Flavour != "kubeadm" || len(it.Report.GPUs) != 2 {
		t.Errorf("a100-0: %+v", it)
	}
	// The annotations operator reads.
	n, err := env.Cluster.Client.CoreV1().Nodes().Get(ctx, "gpu-rke2-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Annotations["gpu.kubectl-gpu.io/flavour"] != "rke2" || n.Annotations["gpu.kubectl-gpu.io/driver-version"] != "550.127.08" || n.Annotations["gpu.kubectl-gpu.io/toolkit-version"] != "1.17.4-1" {
		t.Errorf("annotations: %v", n.Annotations)
	}
	noPrepJobs(t)

	// The readiness matrix with the failed checks and their hints.
	r = env.Gpu(ctx, "prep", "gpu-a100-0", "gpu-k3s-0")
	if r.Code != 1 || !strings.Contains(r.Stdout, "NODE         FLAVOUR   GPUS   DRIVER") || !strings.Contains(r.Stdout, "swap is on") || !strings.Contains(r.Stdout, "→ kubectl gpu prep --apply") {
		t.Fatalf("table: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}

	// --apply without --yes and without a terminal refuses and changes nothing.
	r = env.Gpu(ctx, "prep", "gpu-a100-0", "--apply")
	if r.Code != 2 || !strings.Contains(r.Stderr, "pass --yes to confirm") || !strings.Contains(r.Stderr, "+net.ipv4.ip_forward = 1") {
		t.Fatalf("apply without --yes: exit %d\n%s", r.Code, r.Stderr)
	}
	noPrepJobs(t)

	// --apply --yes: the plan is shown, the agent applies (to the copy of the fake root) and
	// checks again.
	outs.set("gpu-a100-0", "apply", runAgent(t, agent, roots["gpu-a100-0"], "gpu-a100-0", "apply"))
	r = env.Gpu(ctx, "prep", "gpu-a100-0", "--apply", "--yes", "-o", "json")
	if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil {
		t.Fatalf("%v\n%s\n%s", err, r.Stdout, r.Stderr)
	}
	if doc.Mode != "apply" || len(doc.Items) != 1 || !strings.Contains(r.Stderr, "/etc/containerd/config.toml") {
		t.Fatalf("apply: %+v\n%s", doc, r.Stderr)
	}
	fixed := 0
	for _, c := range doc.Items[0].Report.Checks {
		if c.Status == "fixed" {
			fixed++
		}
	}
	if fixed == 0 {
		t.Fatalf("nothing fixed: %+v", doc.Items[0].Report.Checks)
	}
	// The simulated host takes the effect of what the agent ran (modprobe, sysctl --system,
	// swapoff -a), so the re-check after the apply finds those fixed, not failing again
	// with the same advice.
	for _, c := range doc.Items[0].Report.Checks {
		switch c.ID {
		case rep.CheckModules, rep.CheckSysctl, rep.CheckSwap:
			if c.Status != "fixed" && c.Status != "ok" {
				t.Errorf("%s after the apply: %s %q → %q; want fixed", c.ID, c.Status, c.Message, c.Remediation)
			}
		}
	}
	b, _ := os.ReadFile(filepath.Join(roots["gpu-a100-0"], "etc/containerd/config.toml"))
	if !strings.Contains(string(b), "SystemdCgroup = true") {
		t.Fatal("the fake root's containerd config was not edited")
	}
	noPrepJobs(t)

	// A node without GPUs is reported but is not a failure unless every node is one.
	cpuRoot := filepath.Join(dir, "cpu-0")
	if err := hostconfigtest.Build("rhel9", cpuRoot, 0); err != nil {
		t.Fatal(err)
	}
	outs.set("cpu-0", "check", runAgent(t, agent, cpuRoot, "cpu-0", "check"))
	r = env.Gpu(ctx, "prep", "gpu-k3s-0", "cpu-0")
	if r.Code != 0 || !strings.Contains(r.Stdout, "1 without an NVIDIA GPU") || !strings.Contains(r.Stdout, "no NVIDIA GPU on the PCI bus") {
		t.Fatalf("a CPU node beside a ready GPU node: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if r = env.Gpu(ctx, "prep", "cpu-0"); r.Code != 1 {
		t.Fatalf("only a CPU node: exit %d, want 1\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	noPrepJobs(t)

	// A namespace whose Pod Security level forbids the agent: the Job controller's refusal is
	// reported per node with the label to set, and the Jobs are removed.
	psaNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "baseline-only", Labels: map[string]string{"pod-security.kubernetes.io/enforce": "baseline"}}}
	if _, err := env.Cluster.Client.CoreV1().Namespaces().Create(ctx, psaNS, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r = env.Gpu(ctx, "prep", "gpu-k3s-0", "--namespace", "baseline-only", "--timeout", "60s")
	if r.Code != 1 || !strings.Contains(r.Stdout, "violates PodSecurity") || !strings.Contains(r.Stdout, "label namespace baseline-only pod-security.kubernetes.io/enforce=privileged") {
		t.Fatalf("Pod Security refusal: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if jobs, _ := env.Cluster.Client.BatchV1().Jobs("baseline-only").List(ctx, metav1.ListOptions{}); jobs != nil && len(jobs.Items) > 0 && jobs.Items[0].DeletionTimestamp == nil {
		t.Fatalf("%d Jobs left in baseline-only", len(jobs.Items))
	}

	// A report that is not JSON is named, per node.
	outs.set("gpu-bare-0", "check", "segmentation fault\n")
	r = env.Gpu(ctx, "prep", "gpu-bare-0")
	if r.Code != 1 || !strings.Contains(r.Stdout, "not a JSON report") {
		t.Fatalf("bad report: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	noPrepJobs(t)
}

// TestPrepCannotAnnotate: a user who may run the Jobs but not patch nodes gets the report and
// one line naming the refused verb and resource (exit 2).
func TestPrepCannotAnnotate(t *testing.T) {
	ctx := context.Background()
	c := env.Cluster.Client
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "prep-no-patch"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "create"}},
		{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"get"}},
		{APIGroups: []string{""}, Resources: []string{"pods", "events"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}},
		{APIGroups: []string{"batch"}, Resources: []string{"jobs"}, Verbs: []string{"create", "list", "delete"}},
	}}
	if _, err := c.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "prep-no-patch"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "prep-no-patch"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "prep-no-patch", APIGroup: "rbac.authorization.k8s.io"}}}
	if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	outs := &agentOutputs{out: map[string]string{}}
	agent, root := simHost(t, "gpu-k3s-0", "k3s", 1)
	outs.set("gpu-k3s-0", "check", runAgent(t, agent, root, "gpu-k3s-0", "check"))
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	serveAgentLogs(t, wctx, outs)
	r := env.Gpu(ctx, "prep", "gpu-k3s-0", "--as", "prep-no-patch")
	lines := strings.Split(strings.TrimRight(r.Stderr, "\n"), "\n")
	if r.Code != 2 || !strings.Contains(r.Stdout, "gpu-k3s-0") || len(lines) != 1 || !strings.Contains(lines[0], "cannot annotate node gpu-k3s-0: forbidden by RBAC") || !strings.Contains(lines[0], `cannot patch resource "nodes"`) {
		t.Fatalf("exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	noPrepJobs(t)
}

func TestPrepBadInput(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"prep", "no-such-node"}, `node "no-such-node" not found`},
		{[]string{"prep", "-l", "pool=none"}, `no node matches "pool=none"`},
		{[]string{"prep", "--yes"}, "only go with --apply"},
		{[]string{"prep", "gpu-k3s-0", "--all"}, "not both"},
		{[]string{"prep", "-o", "xml"}, `unknown output format "xml"`},
		{[]string{"prep", "--as", "nobody"}, "cannot list nodes: forbidden by RBAC"},
	} {
		r := env.Gpu(ctx, tc.args...)
		lines := strings.Split(strings.TrimRight(r.Stderr, "\n"), "\n")
		if r.Code != 2 || r.Stdout != "" || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
			t.Errorf("%v: exit %d stdout %q stderr %q; want exit 2 and %q", tc.args, r.Code, r.Stdout, r.Stderr, tc.want)
		}
	}
	noPrepJobs(t)
}

// TestPrepInterrupt: Ctrl-C while the agents run exits 130 and leaves no Job or pod.
func TestPrepInterrupt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := env.Command(ctx, "gpu", "prep", "--timeout", "60s")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// kwok finishes a Job's pod one to five seconds after it runs: interrupt as soon as the
	// Jobs exist.
	deadline := time.Now().Add(30 * time.Second)
	for {
		jobs, _ := env.Cluster.Client.BatchV1().Jobs(nodepod.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: nodepod.Selector(prep.Component)})
		if jobs != nil && len(jobs.Items) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("prep Jobs never appeared")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("exit: %v, want 130", err)
	}
	noPrepJobs(t)
}
