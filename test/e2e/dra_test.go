package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

// What is real here: the DeviceClasses (as the DRA driver's chart defines them), the
// ResourceSlices (as its kubelet plugin would publish them, written by the test), the
// claims made from verify's templates by kube-controller-manager, and their allocation by
// the real scheduler. No kubelet plugin runs: kwok runs the pods without preparing devices.

// draNodes adds two kwok nodes whose GPUs only DRA publishes (4 and 2 H100s) and the DRA
// driver's DeviceClasses, and removes all of it when the test ends.
func draNodes(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	c := env.Cluster
	names, err := c.AddNodes(ctx, localcluster.NodeSpec{Profile: "dra", Prefix: "gpu-dra", Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, dc := range nodefixtures.DeviceClasses() {
		if _, err := c.Client.ResourceV1().DeviceClasses().Create(ctx, dc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range names {
		if _, err := c.Client.ResourceV1().ResourceSlices().Create(ctx, nodefixtures.DRASlice(n, 4-2*i), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range names {
			_ = c.Client.ResourceV1().ResourceSlices().Delete(ctx, n+"-gpu.nvidia.com", metav1.DeleteOptions{})
			_ = c.Client.CoreV1().Nodes().Delete(ctx, n, metav1.DeleteOptions{})
		}
		for _, dc := range nodefixtures.DeviceClasses() {
			_ = c.Client.ResourceV1().DeviceClasses().Delete(ctx, dc.Name, metav1.DeleteOptions{})
		}
	})
	outcomes(t, names, nil)
	// kwok picks new nodes' Logs objects up asynchronously: a log read within the first
	// moment is refused (400). A real kubelet has no such delay; the test waits it out.
	time.Sleep(2 * time.Second)
	return names
}

// noDRALeft checks that no template or claim of verify is left.
func noDRALeft(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ts, err := env.Cluster.Client.ResourceV1().ResourceClaimTemplates(nodepod.DefaultNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cl, err := env.Cluster.Client.ResourceV1().ResourceClaims(nodepod.DefaultNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ts.Items) == 0 && len(cl.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d ResourceClaimTemplates and %d ResourceClaims of verify left", len(ts.Items), len(cl.Items))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func verifyJSON(t *testing.T, args ...string) (verify.Report, int, string) {
	t.Helper()
	r := env.Gpu(context.Background(), append([]string{"verify", "-o", "json", "--timeout", "60s"}, args...)...)
	var rep verify.Report
	if r.Stdout != "" {
		if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
			t.Fatalf("%v\n%s\n%s", err, r.Stdout, r.Stderr)
		}
	}
	return rep, r.Code, r.Stderr
}

func TestDRA(t *testing.T) {
	ctx := context.Background()
	c := env.Cluster
	names := draNodes(t)

	// nodes counts what DRA publishes, with the attributes the driver gives.
	r := env.Gpu(ctx, append([]string{"nodes", "-o", "json"}, names...)...)
	var inv inventory.Inventory
	if err := json.Unmarshal([]byte(r.Stdout), &inv); err != nil || r.Code != 0 {
		t.Fatalf("nodes: exit %d %v\n%s", r.Code, err, r.Stderr)
	}
	if inv.DRAVersion != "v1" || len(inv.Items) != 2 || inv.Items[0].GPUs != 4 || inv.Items[1].GPUs != 2 ||
		inv.Items[0].Source != inventory.SourceDRA || inv.Items[0].Product != "NVIDIA H100 80GB HBM3" || inv.Items[0].MemoryMiB != 81559 {
		t.Fatalf("nodes: %+v", inv)
	}

	// verify asks through claims on these nodes and passes; the real scheduler allocates.
	rep, code, stderr := verifyJSON(t, append([]string{"--gpus", "all"}, names...)...)
	if code != 0 || rep.Summary.Passed != 2 || rep.Items[0].Claim != verify.ClaimDRA || rep.Items[0].GPUs != 4 {
		t.Fatalf("verify over DRA: exit %d %+v\n%s", code, rep, stderr)
	}
	noVerifyPods(t)
	noDRALeft(t)

	// Ctrl-C once the run's template exists: exit 130 with nothing printed, or (the signal
	// landing after the report was complete) the report; either way no template, claim or
	// pod is left.
	cmd := env.Command(ctx, append([]string{"gpu", "verify", "-o", "json"}, names...)...)
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the run's ResourceClaimTemplate", func() bool {
		l, err := c.Client.ResourceV1().ResourceClaimTemplates(nodepod.DefaultNamespace).List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) > 0
	})
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); !(code == 130 && out.String() == "" || code == 0 && strings.Contains(out.String(), `"passed": 2`)) {
		t.Fatalf("Ctrl-C: exit %d, stdout %q", code, out.String())
	}
	noVerifyPods(t)
	noDRALeft(t)

	// A workload holds both GPUs of the second node: no device is left for verify.
	holder := &resourcev1.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: "training", Namespace: "default"},
		Spec: resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{{Name: "gpu",
			Exactly: &resourcev1.ExactDeviceRequest{DeviceClassName: "gpu.nvidia.com", AllocationMode: resourcev1.DeviceAllocationModeExactCount, Count: 2}}}}}}
	if _, err := c.Client.ResourceV1().ResourceClaims("default").Create(ctx, holder, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := nodefixtures.GPUPod("default", "training", names[1], 0)
	pod.Spec.NodeName = ""
	pod.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": names[1]}
	pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: "gpu"}}}
	pod.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimName: &holder.Name}}
	if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = c.Client.CoreV1().Pods("default").Delete(ctx, "training", metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		_ = c.Client.ResourceV1().ResourceClaims("default").Delete(ctx, "training", metav1.DeleteOptions{})
	}()
	waitFor(t, "the workload's claim allocated", func() bool {
		cl, err := c.Client.ResourceV1().ResourceClaims("default").Get(ctx, "training", metav1.GetOptions{})
		return err == nil && cl.Status.Allocation != nil
	})
	r = env.Gpu(ctx, "nodes", "-o", "json", names[1])
	if err := json.Unmarshal([]byte(r.Stdout), &inv); err != nil || inv.Items[0].Used != 2 || inv.Items[0].DRA.Allocated != 2 {
		t.Fatalf("nodes after the workload's claim: %v %+v", err, inv.Items)
	}
	rep, code, stderr = verifyJSON(t, "--gpus", "1", names[1])
	if code != 1 || rep.Items[0].Reason != verify.ReasonNoDevice {
		t.Fatalf("verify with every device claimed: exit %d %+v\n%s", code, rep.Items, stderr)
	}
	t.Logf("no device left: %s", rep.Items[0].Detail)
	noVerifyPods(t)
	noDRALeft(t)

	// Without the DeviceClass the claim cannot be allocated: said as such.
	if err := c.Client.ResourceV1().DeviceClasses().Delete(ctx, inventory.DeviceClassGPU, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, code, stderr = verifyJSON(t, names[0])
	if code != 1 || rep.Items[0].Reason != verify.ReasonNoDeviceClass || !strings.Contains(rep.Items[0].Hint, "DRA driver") {
		t.Fatalf("verify without the DeviceClass: exit %d %+v\n%s", code, rep.Items, stderr)
	}
	t.Logf("no DeviceClass: %s", rep.Items[0].Detail)
	noVerifyPods(t)
	noDRALeft(t)
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for i := 0; i < 300; i++ {
		if ok() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
