package prep

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

func bootNode(name, boot string, ready corev1.ConditionStatus) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{
		NodeInfo:   corev1.NodeSystemInfo{BootID: boot},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}}}
}

// TestWaitBoot: the roll's node watch sees a node come back with a new boot ID, and waits
// for Ready too; a node that does not come back is said with the timeout.
func TestWaitBoot(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(bootNode("gpu-0", "old", corev1.ConditionTrue), bootNode("gpu-1", "old", corev1.ConditionTrue), bootNode("gpu-2", "", corev1.ConditionFalse))
	w, err := watchNodes(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	defer w.stop()
	r := &roller{nodes: w, o: RollOptions{RebootTimeout: 5 * time.Second}, prog: report.ForStream(nil)}
	if got := r.bootID("gpu-0"); got != "old" {
		t.Fatalf("boot %q", got)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, _ = cs.CoreV1().Nodes().Update(ctx, bootNode("gpu-0", "new", corev1.ConditionFalse), metav1.UpdateOptions{})
		time.Sleep(100 * time.Millisecond)
		_, _ = cs.CoreV1().Nodes().Update(ctx, bootNode("gpu-0", "new", corev1.ConditionTrue), metav1.UpdateOptions{})
	}()
	var states []string
	boot, err := r.waitBoot(ctx, "gpu-0", "old", func(state, _ string) { states = append(states, state) })
	if err != nil || boot != "new" {
		t.Fatalf("boot %q, %v", boot, err)
	}
	if !strings.Contains(strings.Join(states, "\n"), "waiting for Ready") {
		t.Errorf("states %q; want the wait for Ready said", states)
	}
	r.o.RebootTimeout = 200 * time.Millisecond
	if _, err := r.waitBoot(ctx, "gpu-1", "old", func(string, string) {}); err == nil || !strings.Contains(err.Error(), "within 200ms") {
		t.Fatalf("a node that stays: %v", err)
	}
	// A node that reported no boot ID before the reboot: said without an empty "(was )".
	states = nil
	r.o.RebootTimeout = 5 * time.Second
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, _ = cs.CoreV1().Nodes().Update(ctx, bootNode("gpu-2", "b1", corev1.ConditionTrue), metav1.UpdateOptions{})
	}()
	if boot, err := r.waitBoot(ctx, "gpu-2", "", func(state, _ string) { states = append(states, state) }); err != nil || boot != "b1" {
		t.Fatalf("boot %q, %v", boot, err)
	}
	if got := strings.Join(states, "\n"); len(states) == 0 || strings.Contains(got, "(was )") || !strings.Contains(got, "report a boot ID") {
		t.Errorf("states %q", got)
	}
}

// TestWatchNodesRefused: a role that may not list nodes stops the roll before it starts,
// with the API's reason, instead of waiting for a sync that never comes.
func TestWatchNodesRefused(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", nil)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := watchNodes(ctx, cs)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "watch nodes") {
		t.Fatalf("%v (context %v); want the refusal at once", err, ctx.Err())
	}
}
