package prep

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	k8stesting "k8s.io/client-go/testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

// agentReport is the real agent's report of a fake host root (the node agent's own golden
// files), on one line as the agent prints it, for mode and node; with change, a plan
// that changes one file.
func agentReport(t *testing.T, root string, mode rep.Mode, node string, change bool) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "common", "hostconfig", "testdata", "check-"+root+".golden"))
	if err != nil {
		t.Fatal(err)
	}
	var r rep.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	r.Mode, r.Node = mode, node
	if change {
		r.Changes = append(r.Changes, rep.Change{Check: rep.CheckSysctl, File: "/etc/sysctl.d/99-kubectl-gpu.conf", Diff: "+net.ipv4.ip_forward = 1\n"})
	}
	out, _ := json.Marshal(r)
	return "runtime noise\n" + string(out) + "\n"
}

// cluster is the demo cluster's nodes, the tool's namespace, and nodes that answer prep
// pods like the node agent on the fake roots would (gpu-bare-0's image cannot be pulled).
func simCluster(t *testing.T, change bool) *clustertest.Getter {
	g := clustertest.New(nodefixtures.DemoObjects(nodepod.DefaultNamespace)...)
	roots := map[string]string{"gpu-a100-0": "ubuntu2204-kubeadm", "gpu-a100-1": "ubuntu2404-containerd2", "gpu-rke2-0": "rke2", "gpu-k3s-0": "k3s"}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	err := g.RunNodes(ctx, nodepod.DefaultNamespace, func(p *corev1.Pod) clustertest.Outcome {
		node := p.Spec.NodeName
		root, ok := roots[node]
		if !ok {
			return clustertest.Outcome{Status: &corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "agent",
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "pull access denied"}}}}}}
		}
		mode := rep.Mode(p.Spec.Containers[0].Args[0])
		return clustertest.Outcome{Phase: corev1.PodSucceeded, Log: agentReport(t, root, mode, node, change && mode == rep.ModePlan)}
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func run(t *testing.T, g *clustertest.Getter, in string, args ...string) (string, string, error) {
	t.Helper()
	streams, stdin, out, errOut := genericiooptions.NewTestIOStreams()
	stdin.WriteString(in)
	cmd := NewCmdPrep(g, streams)
	cmd.SetArgs(append([]string{"--image", "agent:test", "--timeout", "20s"}, args...))
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func left(t *testing.T, g *clustertest.Getter) int {
	t.Helper()
	jobs, err := g.Client.BatchV1().Jobs(nodepod.DefaultNamespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return len(jobs.Items)
}

func TestPrepCheckGolden(t *testing.T) {
	for _, tc := range []struct {
		name, golden string
		args         []string
	}{
		{"table", "prep.check.table.golden", nil},
		{"wide", "prep.check.wide.golden", []string{"-o", "wide"}},
		{"json", "prep.check.json.golden", []string{"-o", "json"}},
		{"named", "prep.check.named.golden", []string{"gpu-rke2-0", "gpu-k3s-0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := simCluster(t, false)
			out, _, err := run(t, g, "", tc.args...)
			// Every report has a failed check (the fake roots are not ready yet): exit 1.
			if cliexit.Code(err, false) != cliexit.Failures {
				t.Fatalf("exit %d (%v), want 1", cliexit.Code(err, false), err)
			}
			golden.Assert(t, tc.golden, []byte(out))
			if n := left(t, g); n != 0 {
				t.Fatalf("%d Jobs left", n)
			}
		})
	}
}

// TestPrepAnnotatesNodes: what the agent found is left on each node for the operator.
func TestPrepAnnotatesNodes(t *testing.T) {
	g := simCluster(t, false)
	if _, _, err := run(t, g, "", "gpu-rke2-0"); cliexit.Code(err, false) != cliexit.Failures {
		t.Fatal(err)
	}
	n, err := g.Client.CoreV1().Nodes().Get(context.Background(), "gpu-rke2-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Annotations[flavour.Annotation] != "rke2" || n.Annotations[flavour.AnnotationPrefix+"driver-version"] != "550.127.08" {
		t.Fatalf("annotations %v", n.Annotations)
	}
}

// TestPrepApplyAsks: --apply shows the plan and, not at a terminal, refuses without --yes
// having changed nothing; with --yes it applies (the apply pods run) and checks again.
func TestPrepApplyAsks(t *testing.T) {
	g := simCluster(t, true)
	out, errOut, err := run(t, g, "y\n", "--apply", "gpu-a100-0")
	if cliexit.Code(err, false) != cliexit.Usage || !strings.Contains(err.Error(), "pass --yes") || out != "" {
		t.Fatalf("exit %d %v, stdout %q", cliexit.Code(err, false), err, out)
	}
	if !strings.Contains(errOut, "=== gpu-a100-0") || !strings.Contains(errOut, "+net.ipv4.ip_forward = 1") {
		t.Fatalf("the plan was not shown:\n%s", errOut)
	}
	g.Client.ClearActions()
	out, _, err = run(t, g, "", "--apply", "--yes", "gpu-a100-0")
	if cliexit.Code(err, false) != cliexit.Failures || !strings.Contains(out, "gpu-a100-0") {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	var modes []string
	for _, a := range g.Client.Actions() {
		if c, ok := a.(k8stesting.CreateAction); ok && a.GetResource().Resource == "jobs" {
			modes = append(modes, c.GetObject().(*batchv1.Job).Spec.Template.Spec.Containers[0].Args[0])
		}
	}
	if strings.Join(modes, ",") != "plan,apply" {
		t.Fatalf("Jobs created for %v, want plan then apply", modes)
	}
	if n := left(t, g); n != 0 {
		t.Fatalf("%d Jobs left", n)
	}
}

func TestPrepValidate(t *testing.T) {
	g := simCluster(t, false)
	for _, args := range [][]string{
		{"--yes"},
		{"--restart-runtime"},
		{"--all", "gpu-a100-0"},
		{"-o", "xml"},
		{"--parallel", "-1"},
		{"--timeout", "0s"},
		{"--reboot"},
		{"--install-toolkit"},
		{"--install-driver=r580"},
		{"--apply", "--install-toolkit=1.17"},
		{"--apply", "--reboot", "--max-unavailable", "0"},
		{"--apply", "--max-unavailable", "3"},
		{"--apply", "--force"},
		{"--apply", "--package-repo", "https://mirror.example"},
		{"--apply", "--install-toolkit", "--package-repo", "mirror.example/nvidia"},
		{"--apply", "--install-toolkit", "--package-key", "/no/such/file"},
	} {
		out, _, err := run(t, g, "", args...)
		if cliexit.Code(err, false) != cliexit.Usage || out != "" {
			t.Errorf("%v: exit %d (%v), stdout %q", args, cliexit.Code(err, false), err, out)
		}
	}
	if n := left(t, g); n != 0 {
		t.Fatalf("%d Jobs left", n)
	}
}
