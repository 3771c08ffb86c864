package up

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
)

// TestPlanCanary: the canary is the node an earlier run left part-way, else the first by
// name; nodes are proven one by one only when every release is deployed already (an upgrade
// or unchanged), not on a first install nor where a release must be recovered first; the
// decisions say which, and the canary's size is bounded by the roll.
func TestPlanCanary(t *testing.T) {
	mk := func(action string, recovery bool, resumes string) *Plan {
		p := &Plan{prep: &prep.Plan{Roll: []string{"a", "b", "c"}}, prepRq: prep.Request{Roll: &prep.RollOptions{MaxUnavailable: 2}},
			Nodes:    []NodePlan{{Node: "a"}, {Node: "b", Resumes: resumes}, {Node: "c"}},
			Releases: []ReleasePlan{{Release: "r", Action: action}}}
		if recovery {
			p.Releases[0].Recovery = &helmrelease.Recovery{}
		}
		return p
	}
	req := Request{Canary: 1, Prep: prep.Request{Roll: &prep.RollOptions{MaxUnavailable: 2}}}
	cases := []struct {
		name    string
		plan    *Plan
		canary  int
		want    []string
		prove   bool
		decided string
	}{
		{"day two", mk(ActionUnchanged, false, ""), 1, []string{"a"}, true, "canary: a first; the other 2 nodes only after it is done, 2 at a time"},
		{"upgrade, resumed node first", mk(ActionUpgrade, false, "drained"), 1, []string{"b"}, true, "canary: b first"},
		{"first install", mk(ActionInstall, false, ""), 1, []string{"a"}, false, "verified at the end"},
		{"recovery first", mk(ActionUpgrade, true, ""), 1, []string{"a"}, false, "verified at the end"},
		{"no canary", mk(ActionUnchanged, false, ""), 0, nil, true, "before it is uncordoned"},
		{"canary larger than the roll", mk(ActionUnchanged, false, ""), 5, []string{"a", "b", "c"}, true, "before it is uncordoned"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := req
			r.Canary = c.canary
			c.plan.planCanary(r)
			if strings.Join(c.plan.Canary, ",") != strings.Join(c.want, ",") || c.plan.ProveRolled != c.prove {
				t.Errorf("canary %v prove %v; want %v %v", c.plan.Canary, c.plan.ProveRolled, c.want, c.prove)
			}
			var ds []string
			for _, d := range c.plan.Decisions {
				ds = append(ds, d.Decision)
			}
			if !strings.Contains(strings.Join(ds, "\n"), c.decided) {
				t.Errorf("decisions %q lack %q", ds, c.decided)
			}
			if c.canary > 0 && c.canary < 3 != strings.Contains(strings.Join(ds, "\n"), "canary:") {
				t.Errorf("a canary decision only when some nodes wait for it: %q", ds)
			}
			o := c.plan.rollOptions(Clients{}, r)
			if o.Canary != len(c.want) || (o.Prove != nil) != c.prove || c.plan.prepRq.Roll.Canary != 0 {
				t.Errorf("roll options: canary %d, prove %v (the plan's own options changed: %d)", o.Canary, o.Prove != nil, c.plan.prepRq.Roll.Canary)
			}
		})
	}
}

// TestVerifyServingWaits: a node back from its reboot (or a driver reload) is proven only once
// it advertises its GPUs again — the wait is said, and ends when they are back; a node that
// never advertises them within --timeout fails the proof naming the timeout. (The CUDA
// sample is not run here: its pods would never run on a fake API server; test/up runs it.)
func TestVerifyServingWaits(t *testing.T) {
	defer func(w time.Duration) { proveWait = w }(proveWait)
	proveWait = 50 * time.Millisecond
	node := func(gpus int64) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-0"},
			Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{"nvidia.com/gpu": *resource.NewQuantity(gpus, resource.DecimalSI)},
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
	}
	req := Request{Verify: verify.Request{Namespace: "gpu-verify", Image: verify.DefaultImage, Timeout: 200 * time.Millisecond}}
	req.Install.Timeout = 5 * time.Second

	cs := fake.NewClientset(node(0))
	var mu sync.Mutex
	var said []string
	back := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	status := func(state, detail string) {
		mu.Lock()
		defer mu.Unlock()
		said = append(said, state)
		if state == "running the CUDA sample" {
			cancel() // its pods would never run on the fake API server
		}
		if strings.HasPrefix(state, "waiting for gpu-0 to advertise its GPUs again") && len(said) == 2 {
			go func() {
				_, _ = cs.CoreV1().Nodes().UpdateStatus(context.Background(), node(2), metav1.UpdateOptions{})
				close(back)
			}()
		}
	}
	_, err := verifyServing(ctx, Clients{CS: cs}, req, []string{"gpu-0"}, true, status)
	select {
	case <-back:
	default:
		t.Fatalf("the proof did not wait for the GPUs: %v, said %q", err, said)
	}
	if last := said[len(said)-1]; last != "running the CUDA sample" {
		t.Errorf("after the GPUs came back the proof said %q, want the CUDA sample run (all: %q)", last, said)
	}
	var ns *errNotServing
	if errors.As(err, &ns) {
		t.Errorf("the GPUs came back, yet: %v", err)
	}

	// Never back within --timeout.
	req.Install.Timeout = 300 * time.Millisecond
	_, err = verifyServing(context.Background(), Clients{CS: fake.NewClientset(node(0))}, req, []string{"gpu-0"}, true, func(string, string) {})
	if !errors.As(err, &ns) || !strings.Contains(err.Error(), "not advertising GPUs within --timeout 300ms") || !strings.Contains(err.Error(), "no allocatable nvidia.com/gpu") {
		t.Errorf("never back: %v", err)
	}
}

// TestVerifyWaitsForAdvertised: right after an install the verify step waits for the nodes
// whose device plugin has not registered yet (said, with the time left), and goes on with the
// nodes that advertise when the wait ends; an error other than "no GPUs" ends it at once.
// Simulated: a fake API server (client-go's fake clientset) whose node status the test sets.
func TestVerifyWaitsForAdvertised(t *testing.T) {
	defer func(w time.Duration) { proveWait = w }(proveWait)
	proveWait = 50 * time.Millisecond
	node := func(name string, gpus int64) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"nvidia.com/gpu.present": "true"}},
			Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{"nvidia.com/gpu": *resource.NewQuantity(gpus, resource.DecimalSI)},
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
	}
	want := []string{"gpu-0", "gpu-1"}
	vr := verify.Request{Namespace: "gpu-verify", Image: verify.DefaultImage}
	cs := fake.NewClientset(node("gpu-0", 2), node("gpu-1", 0))
	var said []string
	plan, err := awaitAdvertised(context.Background(), Clients{CS: cs}, &vr, want, 10*time.Second, func(missing []string, left time.Duration) {
		said = append(said, strings.Join(missing, ","))
		if left <= 0 || left > 10*time.Second {
			t.Errorf("time left %s", left)
		}
		_, _ = cs.CoreV1().Nodes().UpdateStatus(context.Background(), node("gpu-1", 2), metav1.UpdateOptions{})
	})
	if err != nil || plan == nil || strings.Join(plan.Nodes(), " ") != "gpu-0 gpu-1" || strings.Join(said, ";") != "gpu-1" {
		t.Fatalf("after gpu-1 advertised: %v, nodes %v; said %q", err, plan, said)
	}

	// Never advertised: after the wait, the nodes that do.
	never := fake.NewClientset(node("gpu-0", 2), node("gpu-1", 0))
	start := time.Now()
	plan, err = awaitAdvertised(context.Background(), Clients{CS: never}, &vr, want, 300*time.Millisecond, func([]string, time.Duration) {})
	if err != nil || plan == nil || strings.Join(plan.Nodes(), " ") != "gpu-0" || time.Since(start) < 300*time.Millisecond {
		t.Errorf("never advertised: %v, %v after %s", err, plan, time.Since(start))
	}
	// No node advertises: the "no GPUs" error after the wait.
	none := fake.NewClientset(node("gpu-0", 0), node("gpu-1", 0))
	if _, err := awaitAdvertised(context.Background(), Clients{CS: none}, &vr, want, 200*time.Millisecond, func([]string, time.Duration) {}); !errors.Is(err, verify.ErrNoGPUs) {
		t.Errorf("none advertised: %v", err)
	}
	// Another error (a RuntimeClass that does not exist) is not waited on.
	bad := vr
	bad.RuntimeClass = "no-such-class"
	start = time.Now()
	if _, err := awaitAdvertised(context.Background(), Clients{CS: never}, &bad, want, 10*time.Second, func([]string, time.Duration) {}); err == nil || errors.Is(err, verify.ErrNoGPUs) || time.Since(start) > 5*time.Second {
		t.Errorf("another error: %v after %s", err, time.Since(start))
	}
	// Interrupted while waiting.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err := awaitAdvertised(ctx, Clients{CS: never}, &vr, want, 10*time.Second, func([]string, time.Duration) {}); !errors.Is(err, cliexit.ErrInterrupted) {
		t.Errorf("interrupted: %v", err)
	}
}
