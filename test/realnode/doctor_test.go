package realnode

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/doctor"
)

// TestDoctorDevicePluginStopped: the real kubelet with the node's device plugin stopped —
// the kubelet marks its GPUs unhealthy and the node advertises none: doctor (cluster side)
// says the node serves no GPU, its kubernetes link broken with no GPU advertised; with the
// plugin started again the node advertises its GPUs and that link is ok again.
func TestDoctorDevicePluginStopped(t *testing.T) {
	need(t)
	ctx := ctxT(t, 5*time.Minute)
	cs := env.Cluster.Client
	gpus := func() int64 {
		n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		q := n.Status.Allocatable["nvidia.com/gpu"]
		return q.Value()
	}
	waitGPUs := func(want func(int64) bool, what string) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); !want(gpus()); time.Sleep(time.Second) {
			if time.Now().After(deadline) {
				t.Fatalf("the node never %s (allocatable nvidia.com/gpu %d)", what, gpus())
			}
		}
	}
	kubernetesLink := func() (doctor.Node, doctor.Link) {
		t.Helper()
		r := env.Gpu(ctx, "doctor", nodeName, "--no-agent", "-o", "json")
		var rep doctor.Report
		if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil || len(rep.Items) != 1 {
			t.Fatalf("doctor: exit %d %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
		}
		return rep.Items[0], rep.Items[0].Links[5]
	}
	waitGPUs(func(n int64) bool { return n > 0 }, "advertised its GPUs")
	if _, k := kubernetesLink(); k.State != doctor.OK {
		t.Fatalf("with the device plugin running: %+v", k)
	}

	if err := node.StopDevicePlugin(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = node.StartDevicePlugin()
		waitGPUs(func(n int64) bool { return n > 0 }, "advertised its GPUs again")
	})
	waitGPUs(func(n int64) bool { return n == 0 }, "stopped advertising its GPUs")
	// Serving no GPU: Unschedulable, or Faulty where prep ran before and found no GPU on
	// this machine's PCI bus (there is none).
	n, k := kubernetesLink()
	if (n.Verdict != doctor.Unschedulable && n.Verdict != doctor.Faulty) || k.State != doctor.Broken || !strings.Contains(k.Detail, "the node advertises no GPU") {
		t.Errorf("with the device plugin stopped: %s, kubernetes %+v", n.Verdict, k)
	}

	if err := node.StartDevicePlugin(); err != nil {
		t.Fatal(err)
	}
	waitGPUs(func(n int64) bool { return n > 0 }, "advertised its GPUs again")
	if _, k := kubernetesLink(); k.State != doctor.OK {
		t.Errorf("with the device plugin back: %+v", k)
	}
}
