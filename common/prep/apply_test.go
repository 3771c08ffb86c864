package prep_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

// TestApplySkipsANodeWhosePlanFailed: a node whose agent gave no plan showed no changes, so
// nothing is applied to it; the others are applied.
func TestApplySkipsANodeWhosePlanFailed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: nodepod.DefaultNamespace}}
	c := clustertest.New(nodefixtures.NodeObject("gpu-0", nodefixtures.Profiles["a100"]), nodefixtures.NodeObject("gpu-1", nodefixtures.Profiles["a100"]), sa)
	var mu sync.Mutex
	applied := map[string]int{}
	_ = c.RunNodes(ctx, nodepod.DefaultNamespace, func(p *corev1.Pod) clustertest.Outcome {
		mode := rep.Mode(p.Spec.Containers[0].Args[0])
		if mode == rep.ModePlan && p.Spec.NodeName == "gpu-1" {
			return clustertest.Outcome{Phase: corev1.PodSucceeded, Log: "segmentation fault\n"}
		}
		if mode == rep.ModeApply {
			mu.Lock()
			applied[p.Spec.NodeName]++
			mu.Unlock()
		}
		r := rep.New("v0", mode)
		r.Node, r.Flavour = p.Spec.NodeName, rep.FlavourKubeadm
		r.GPUs = []rep.GPU{{PCIAddress: "0000:07:00.0"}}
		r.Changes = []rep.Change{{Check: rep.CheckSysctl, File: "/etc/sysctl.d/99-kubernetes-gpu.conf", Done: mode == rep.ModeApply}}
		b, _ := json.Marshal(r)
		return clustertest.Outcome{Phase: corev1.PodSucceeded, Log: string(b) + "\n"}
	})
	cs, _ := c.Clientset()
	req := &prep.Request{Namespace: nodepod.DefaultNamespace, Image: "agent:v1", Timeout: time.Minute, Apply: true}
	p, err := prep.MakePlan(ctx, cs, req)
	if err != nil {
		t.Fatal(err)
	}
	r, err := prep.Apply(ctx, cs, req, p)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if applied["gpu-0"] != 1 || applied["gpu-1"] != 0 {
		t.Errorf("applied %v: want gpu-0 once and gpu-1 never", applied)
	}
	if len(r.Items) != 2 || r.Items[1].Node != "gpu-1" || !strings.Contains(r.Items[1].Error, "its plan failed") {
		t.Errorf("report: %+v", r.Items)
	}
}
