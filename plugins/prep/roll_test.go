package prep

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

// rollCluster answers prep pods like nodes whose nouveau blacklist needs a reboot: the
// reboot pod gives the node a new boot ID (the fake clientset has no kubelet to restart).
func rollCluster(t *testing.T) *clustertest.Getter {
	t.Helper()
	g := clustertest.New(nodefixtures.DemoObjects(nodepod.DefaultNamespace)...)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	applied := map[string]bool{}
	var mu sync.Mutex
	err := g.RunNodes(ctx, nodepod.DefaultNamespace, func(p *corev1.Pod) clustertest.Outcome {
		mu.Lock()
		defer mu.Unlock()
		node, mode := p.Spec.NodeName, rep.Mode(p.Spec.Containers[0].Args[0])
		r := rep.New("v0.0.0-test", mode)
		r.Node, r.Flavour, r.OS = node, rep.FlavourKubeadm, "Ubuntu 22.04.5 LTS"
		r.GPUs = []rep.GPU{{PCIAddress: "0000:07:00.0", DeviceID: "0x20b0"}}
		r.Add(rep.CheckPCI, rep.OK, "1 NVIDIA GPU", "")
		switch mode {
		case rep.ModePlan, rep.ModeApply:
			if !applied[node] {
				r.Changes = []rep.Change{{Check: rep.CheckNouveau, File: "/etc/modprobe.d/blacklist-nouveau.conf", Diff: "+blacklist nouveau\n", Done: mode == rep.ModeApply}}
				r.Reboot = "nouveau blacklisted: rebuild the initramfs and reboot for the NVIDIA driver to take the GPUs"
			}
			applied[node] = applied[node] || mode == rep.ModeApply
		case rep.ModeReboot:
			n, _ := g.Client.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
			n.Status.NodeInfo.BootID = "boot-after-" + node
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
			_, _ = g.Client.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{})
		}
		b, _ := json.Marshal(r)
		return clustertest.Outcome{Phase: corev1.PodSucceeded, Log: string(b) + "\n"}
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestPrepRollGolden: the plan names the nodes the roll takes; the report ends with the roll
// table; each node ends uncordoned with its roll done.
func TestPrepRollGolden(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // as outside a cluster, wherever the tests run
	g := rollCluster(t)
	out, errOut, err := run(t, g, "", "gpu-a100-0", "gpu-a100-1", "--apply", "--yes", "--reboot", "--max-unavailable", "2")
	if err != nil {
		t.Fatalf("exit %d: %v\n%s\n%s", cliexit.Code(err, false), err, out, errOut)
	}
	// Durations vary: the golden file has them as "-".
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "gpu-a100-") && strings.Contains(l, "done") {
			f := strings.Fields(l)
			l = strings.Replace(l, f[4], strings.Repeat("-", len(f[4])), 1)
		}
		lines = append(lines, l)
	}
	golden.Assert(t, "prep.roll.table.golden", []byte(strings.Join(lines, "\n")))
	if !strings.Contains(errOut, "=== roll: 2 node(s) cordoned, drained, rebooted, checked and uncordoned, at most 2 at a time") {
		t.Errorf("the plan does not show the roll:\n%s", errOut)
	}
	for _, n := range []string{"gpu-a100-0", "gpu-a100-1"} {
		node, err := g.Client.CoreV1().Nodes().Get(context.Background(), n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if st := prep.ReadRollState(node); node.Spec.Unschedulable || st.Phase != prep.PhaseDone {
			t.Errorf("%s: unschedulable %v, %+v", n, node.Spec.Unschedulable, st)
		}
	}
	if n := left(t, g); n != 0 {
		t.Fatalf("%d Jobs left", n)
	}
}

// TestPrepRollWarnsWhenItsOwnNodeIsUnknown: run in a pod (KUBERNETES_SERVICE_HOST set) whose
// pod and node cannot be found by its hostname, the roll says it cannot tell its own node.
func TestPrepRollWarnsWhenItsOwnNodeIsUnknown(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
	g := rollCluster(t)
	out, errOut, err := run(t, g, "", "gpu-a100-0", "--apply", "--yes", "--reboot")
	if err != nil {
		t.Fatalf("exit %d: %v\n%s\n%s", cliexit.Code(err, false), err, out, errOut)
	}
	if !strings.Contains(errOut, "warning: this command runs in a pod (KUBERNETES_SERVICE_HOST is set) whose node cannot be told") ||
		!strings.Contains(errOut, "name the nodes to roll") {
		t.Errorf("no warning that the command's own node is unknown:\n%s", errOut)
	}
}
