package realnode

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
)

// TestRollRebootsTheRealNode: a roll that an earlier run left after its install resumes at
// the reboot on the real node. The real agent image, in its privileged reboot pod, reads the
// node's boot ID and asks the host's systemd for a reboot through nsenter into the node's
// namespaces; there the node's init stands in for systemd-run and reboots the node (kubelet,
// containerd and every container stopped, a new boot ID, started again); the real kubelet
// reports the new boot ID and Ready, which the roll waits for; then the check runs on the
// rebooted node. The machine has no GPU, so that check finds the node not ready: the roll
// stops there, the node cordoned, as it must.
func TestRollRebootsTheRealNode(t *testing.T) {
	need(t)
	if !localcluster.RebootSupported() {
		t.Skipf("no %s on this machine to stand in for inside the node", localcluster.SystemdRun)
	}
	ctx := ctxT(t, 8*time.Minute)
	cs := env.Cluster.Client
	before, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldBoot := before.Status.NodeInfo.BootID
	if oldBoot == "" {
		t.Fatal("the real kubelet reports no boot ID")
	}
	state, _ := json.Marshal(prep.RollState{Phase: prep.PhaseInstalled, Reason: "set by the test: resume at the reboot"})
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{prep.RollAnnotation: string(state)}}, "spec": map[string]any{"unschedulable": true}})
	if _, err := cs.CoreV1().Nodes().Patch(ctx, nodeName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		undo := []byte(`{"metadata":{"annotations":{"` + prep.RollAnnotation + `":null}},"spec":{"unschedulable":null}}`)
		_, _ = cs.CoreV1().Nodes().Patch(context.Background(), nodeName, types.MergePatchType, undo, metav1.PatchOptions{})
	}()

	r := env.Gpu(ctx, "prep", nodeName, "--apply", "--yes", "--reboot", "--image", agentImage, "--reboot-timeout", "4m", "--timeout", "2m", "-o", "json")
	var rp prep.Report
	if err := json.Unmarshal([]byte(r.Stdout), &rp); err != nil || len(rp.Roll) != 1 {
		t.Fatalf("exit %d, no roll report: %v\n%s\n%s", r.Code, err, r.Stdout, r.Stderr)
	}
	rl := rp.Roll[0]
	t.Logf("roll: %+v", rl)
	if rl.ResumedFrom != prep.PhaseInstalled || rl.Phase != prep.PhaseRebooted || rl.BootID == "" || rl.BootID == oldBoot {
		t.Fatalf("roll %+v; want resumed after installed, rebooted with a new boot ID (was %s)", rl, oldBoot)
	}
	after, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.Status.NodeInfo.BootID != rl.BootID {
		t.Errorf("the kubelet reports boot %s, the roll saw %s", after.Status.NodeInfo.BootID, rl.BootID)
	}
	// The check ran on the rebooted node (the machine has no GPU: not ready), so the roll
	// stopped there and the node stays cordoned with the reason.
	if r.Code != 1 || !strings.Contains(rl.Error, "not ready") || !after.Spec.Unschedulable {
		t.Errorf("exit %d, error %q, unschedulable %v; want 1, not ready, cordoned", r.Code, rl.Error, after.Spec.Unschedulable)
	}
	noneLeft(t, ctx)
	// The node works after its reboot: Ready, and its GPUs advertised again.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err == nil && ready(n) && n.Status.Allocatable.Name("nvidia.com/gpu", "").Value() == gpus {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node is not Ready with its GPUs after the reboot")
		}
		time.Sleep(time.Second)
	}
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
