package realnode

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
)

// TestDevicePluginOnRealNode: the device plugin chart on the real node. prep (the real agent)
// finds no host driver, so install refuses naming the node. The node's driver and toolkit are
// then stood in for by their prep annotations (this machine has no GPU and no NVIDIA driver:
// the test goes up to that boundary) and the chart is installed: the real scheduler places
// its DaemonSet's pod on the node and the real kubelet fails to pull its image, as it would
// on a node that reaches no registry; status names exactly that pod and pull, while the fake
// device plugin still advertises the node's GPUs and verify passes unchanged. Uninstall
// removes the release and its pod.
func TestDevicePluginOnRealNode(t *testing.T) {
	need(t)
	chart := os.Getenv("KGPU_DEVICE_PLUGIN_CHART")
	if chart == "" {
		t.Skip("KGPU_DEVICE_PLUGIN_CHART is not set (.ci/run sets it from ../shared/testdata/charts)")
	}
	ctx := ctxT(t, 8*time.Minute)
	cs := env.Cluster.Client
	henv := []string{"HELM_CACHE_HOME=" + t.TempDir(), "HELM_CONFIG_HOME=" + t.TempDir(), "HELM_DATA_HOME=" + t.TempDir()}
	gpu := func(args ...string) (int, string, string) {
		r := env.Kubectl(ctx, henv, append([]string{"gpu", "device-plugin"}, args...)...)
		return r.Code, r.Stdout, r.Stderr
	}
	t.Cleanup(func() {
		bg := context.Background()
		env.Kubectl(bg, henv, "gpu", "device-plugin", "uninstall", "--yes")
		_ = cs.CoreV1().Namespaces().Delete(bg, dp.DefaultNamespace, metav1.DeleteOptions{})
		patch := `{"metadata":{"annotations":{"` + rep.AnnotationDriver + `":null,"` + rep.AnnotationToolkit + `":null}}}`
		_, _ = cs.CoreV1().Nodes().Patch(bg, nodeName, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	})

	// prep's real report of this host.
	if r := env.Gpu(ctx, "prep", nodeName, "--image", agentImage, "-o", "json", "--timeout", "2m"); r.Code != 1 {
		t.Fatalf("prep: exit %d\n%s", r.Code, r.Stderr)
	}
	code, out, errOut := gpu("install", "--chart", chart, "--gfd=false")
	if code != 2 || out != "" || !strings.Contains(errOut, "nothing installed: "+nodeName+": no host driver") {
		t.Fatalf("install on a node without a driver: exit %d\n%s%s", code, out, errOut)
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Annotations[rep.AnnotationNvidiaRuntime] != "true" {
		t.Fatalf("prep did not find the node's nvidia runtime: %v", n.Annotations)
	}

	// The stand-in for a host driver and toolkit.
	patch := `{"metadata":{"annotations":{"` + rep.AnnotationDriver + `":"570.195.03","` + rep.AnnotationToolkit + `":"1.17.8-1"}}}`
	if _, err := cs.CoreV1().Nodes().Patch(ctx, nodeName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = gpu("install", "--chart", chart, "--gfd=false", "--atomic=false")
	if code != 0 || !strings.Contains(out, "release nvidia-device-plugin revision 1 deployed") {
		t.Fatalf("install: exit %d\n%s%s", code, out, errOut)
	}
	var st dp.Status
	deadline := time.Now().Add(3 * time.Minute)
	for {
		code, out, errOut = gpu("status", "-o", "json")
		st = dp.Status{}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status: exit %d %v\n%s%s", code, err, out, errOut)
		}
		if code == 1 && len(st.Nodes) == 1 && len(st.Nodes[0].Pods) == 1 && strings.Contains(st.Nodes[0].Pods[0].State, "ImagePull") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never named the image pull: exit %d\n%s", code, out)
		}
		time.Sleep(2 * time.Second)
	}
	p := st.Nodes[0].Pods[0]
	t.Logf("status: %s", st.Failing)
	if !strings.Contains(p.Message, "nvcr.io/nvidia/k8s-device-plugin:v0.20.0") || !strings.HasPrefix(st.Failing, nodeName+": nvidia-device-plugin pod "+p.State) ||
		!strings.Contains(st.Hint, "mirror") {
		t.Errorf("status: %+v, failing %q, hint %q", p, st.Failing, st.Hint)
	}
	if st.Nodes[0].GPUs != gpus {
		t.Errorf("the node advertises %d GPUs, want the fake device plugin's %d", st.Nodes[0].GPUs, gpus)
	}
	// verify is unchanged: the GPUs the fake plugin advertises run the stand-in.
	r := env.Gpu(ctx, "verify", nodeName, "--image", localcluster.VectorAddStandInOK, "--runtime-class", "nvidia", "-o", "json", "--timeout", "2m")
	if doc := verifyDoc(t, r); r.Code != 0 || doc.Items[0].Result != verify.Passed {
		t.Errorf("verify beside the failing chart: exit %d %+v", r.Code, doc.Items[0])
	}
	noneLeft(t, ctx)

	code, out, errOut = gpu("uninstall", "--yes")
	if code != 0 || !strings.Contains(out, "release nvidia-device-plugin uninstalled") {
		t.Fatalf("uninstall: exit %d\n%s%s", code, out, errOut)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		pods, err := cs.CoreV1().Pods(dp.DefaultNamespace).List(ctx, metav1.ListOptions{})
		if err == nil && len(pods.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the chart's pods are still there a minute after uninstall: %v", err)
		}
	}
}
