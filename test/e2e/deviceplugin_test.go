package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

// What is real here: NVIDIA's device plugin and DCGM exporter charts (from ../shared, paths in
// KGPU_DEVICE_PLUGIN_CHART and KGPU_DCGM_EXPORTER_CHART) served as Helm repositories on
// 127.0.0.1, Helm's SDK installing them into the real API server, the real helm CLI reading
// and rolling back the releases, the DaemonSet controller and scheduler placing their pods.
// What is simulated: kwok runs the pods (no image is pulled, no GPU is opened); the prep
// annotations are written by the test as `kubectl gpu prep` writes them on a host with a
// driver and the toolkit; a node's advertised GPUs for the one node whose fixture has none are
// patched in by the test, standing in for the device plugin's registration.

func dpCharts(t *testing.T) (string, string) {
	get := func(env string) string {
		p := os.Getenv(env)
		if p == "" {
			t.Skipf("%s is not set (.ci/run sets it from ../shared/testdata/charts)", env)
		}
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s: %v", env, err)
		}
		return p
	}
	return get("KGPU_DEVICE_PLUGIN_CHART"), get("KGPU_DCGM_EXPORTER_CHART")
}

// prepNodes annotates nodes as prep leaves a host with a driver, the toolkit and containerd's
// nvidia runtime (not the default); nil values remove the annotations again.
func prepNodes(t *testing.T, ctx context.Context, nodes []string, remove bool) {
	t.Helper()
	ann := map[string]any{
		rep.AnnotationDriver:                     "570.195.03",
		rep.AnnotationToolkit:                    "1.17.8-1",
		rep.AnnotationNvidiaRuntime:              "true",
		rep.AnnotationDefaultRuntime:             "runc",
		rep.AnnotationCDI:                        "false",
		flavour.AnnotationPrefix + "reported-at": time.Now().UTC().Format(time.RFC3339),
	}
	if remove {
		for k := range ann {
			ann[k] = nil
		}
	}
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	for _, n := range nodes {
		if _, err := env.Cluster.Client.CoreV1().Nodes().Patch(ctx, n, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDevicePluginLifecycle(t *testing.T) {
	dpChart, dcgmChart := dpCharts(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := env.Cluster
	henv := helmEnv(t)
	dpRepo, dcgmRepo := chartRepo(t, dpChart), chartRepo(t, dcgmChart)
	const ns = dp.DefaultNamespace
	gpuNodes := []string{"gpu-a100-0", "gpu-a100-1", "gpu-rke2-0", "gpu-k3s-0", "gpu-bare-0"}
	t.Cleanup(func() {
		bg := context.Background()
		prepNodes(t, bg, gpuNodes, true)
		_, _ = c.Client.CoreV1().Nodes().Patch(bg, "gpu-bare-0", types.MergePatchType, []byte(`{"metadata":{"labels":{"nvidia.com/gpu.present":null}}}`), metav1.PatchOptions{})
		_ = c.Client.NodeV1().RuntimeClasses().Delete(bg, dp.RuntimeClassName, metav1.DeleteOptions{})
		_ = c.Client.CoreV1().Namespaces().Delete(bg, ns, metav1.DeleteOptions{})
	})
	gpu := func(args ...string) resultT {
		return env.Kubectl(ctx, henv, append([]string{"gpu", "device-plugin"}, args...)...)
	}
	repoFlags := []string{"--repo", dpRepo, "--dcgm-exporter", "--dcgm-repo", dcgmRepo}

	// Four GPU nodes prepped, one not: refused, every unready node named, nothing installed.
	prepNodes(t, ctx, gpuNodes[:4], false)
	r := gpu(append([]string{"install"}, repoFlags...)...)
	if r.Code != 2 || !strings.Contains(r.Stderr, "error: 1 of 5 GPU nodes are not ready for the device plugin, nothing installed: gpu-bare-0: not checked yet: run 'kubectl gpu prep gpu-bare-0'") {
		t.Fatalf("install with an unprepped GPU node: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	if rels := helmListNS(t, henv, ns); len(rels) != 0 {
		t.Fatalf("refused install left releases: %+v", rels)
	}
	if _, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("refused install created namespace %s: %v", ns, err)
	}
	prepNodes(t, ctx, gpuNodes[4:], false)

	// values: the derived ones with reasons; gpu-bare-0 is found through NFD's PCI label.
	r = gpu(append([]string{"values", "-o", "json"}, repoFlags...)...)
	var plan dp.Plan
	if err := json.Unmarshal([]byte(r.Stdout), &plan); r.Code != 0 || err != nil {
		t.Fatalf("values: exit %d %v\n%s", r.Code, err, r.Stderr)
	}
	if plan.GPUNodes != 5 || plan.Releases[0].Values["runtimeClassName"] != "nvidia" || plan.CreateRuntimeClass == "" || len(plan.Releases) != 2 {
		t.Fatalf("values: %+v", plan)
	}

	// install from the repositories with --wait: RuntimeClass created, both releases deployed,
	// the DaemonSets' pods on every GPU node (kwok runs them); --wait waits for gpu-bare-0 to
	// advertise GPUs, which the test patches in once its plugin pod runs.
	done := make(chan resultT, 1)
	go func() {
		done <- gpu(append([]string{"install", "--wait", "--timeout", "4m"}, repoFlags...)...)
	}()
	waitPluginPod(t, ctx, ns, "gpu-bare-0")
	setGPUs(t, ctx, "gpu-bare-0", 8)
	t.Cleanup(func() { setGPUs(t, context.Background(), "gpu-bare-0", 0) })
	r = <-done
	if r.Code != 0 || !strings.Contains(r.Stdout, "release nvidia-device-plugin revision 1 deployed") || !strings.Contains(r.Stdout, "release dcgm-exporter revision 1 deployed") ||
		!strings.Contains(r.Stdout, "device plugin ready: 5/5 GPU nodes serve GPUs") || !strings.Contains(r.Stderr, "created RuntimeClass nvidia (handler nvidia)") {
		t.Fatalf("install --wait: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	rels := helmListNS(t, henv, ns)
	if len(rels) != 2 {
		t.Fatalf("helm list: %+v", rels)
	}
	for _, rel := range rels {
		if rel.Status != "deployed" || rel.Revision != "1" {
			t.Errorf("helm list: %+v", rel)
		}
	}
	if rc, err := c.Client.NodeV1().RuntimeClasses().Get(ctx, "nvidia", metav1.GetOptions{}); err != nil || rc.Handler != "nvidia" {
		t.Fatalf("RuntimeClass: %v %v", rc, err)
	}

	// status: every GPU node's pods and GPUs.
	r = gpu("status", "-o", "json")
	var st dp.Status
	if err := json.Unmarshal([]byte(r.Stdout), &st); r.Code != 0 || err != nil || !st.Ready || len(st.Nodes) != 5 {
		t.Fatalf("status: exit %d %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
	}
	for _, n := range st.Nodes {
		if len(n.Pods) < 3 { // device plugin, GFD, DCGM exporter
			t.Errorf("node %s: pods %+v", n.Node, n.Pods)
		}
	}

	// upgrade (revision 2), rolled back with the real helm CLI: our status reads revision 3.
	r = gpu("upgrade", "--repo", dpRepo, "--set", "failOnInitError=false")
	if r.Code != 0 || !strings.Contains(r.Stdout, "release nvidia-device-plugin revision 2 deployed") {
		t.Fatalf("upgrade: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	helmCLI(t, henv, "rollback", "nvidia-device-plugin", "1", "-n", ns, "--wait", "--timeout", "2m")
	r = gpu("status", "-o", "json")
	st = dp.Status{}
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil || st.Releases[0].Name != "nvidia-device-plugin" || st.Releases[0].Revision != 3 {
		t.Fatalf("status after helm rollback: %v %+v", err, st.Releases)
	}

	// The GPU Operator now refuses to install its own device plugin beside this one.
	if opChart := os.Getenv("KGPU_GPU_OPERATOR_CHART"); opChart != "" {
		r = env.Kubectl(ctx, henv, "gpu", "operator", "install", "--chart", opChart)
		if r.Code != 2 || !strings.Contains(r.Stderr, "already runs NVIDIA's device plugin") || !strings.Contains(r.Stderr, "devicePlugin.enabled=false") {
			t.Errorf("operator install beside the device plugin: exit %d\n%s", r.Code, r.Stderr)
		}
		if rels := helmListNS(t, henv, "gpu-operator"); len(rels) != 0 {
			t.Errorf("refused operator install left %+v", rels)
		}
	}

	// A failing pod is named: the DCGM exporter's on gpu-k3s-0 made to wait on its image.
	breakPod(t, ctx, ns, "gpu-k3s-0", "dcgm-exporter")
	r = gpu("status")
	if r.Code != 1 || !strings.Contains(r.Stdout, "gpu-k3s-0: dcgm-exporter pod ImagePullBackOff") {
		t.Errorf("status with a pod that cannot pull: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}

	// uninstall: both releases gone; nodes and RuntimeClass stay.
	r = gpu("uninstall", "--yes")
	if r.Code != 0 || !strings.Contains(r.Stdout, "release nvidia-device-plugin uninstalled") || !strings.Contains(r.Stdout, "release dcgm-exporter uninstalled") {
		t.Fatalf("uninstall: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if rels := helmListNS(t, henv, ns); len(rels) != 0 {
		t.Fatalf("after uninstall: %+v", rels)
	}
}

// TestDevicePluginBadInput: one line, exit 2, nothing installed.
func TestDevicePluginBadInput(t *testing.T) {
	dpChart, dcgmChart := dpCharts(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	henv := helmEnv(t)
	url := chartRepo(t, dpChart)
	gpuNodes := []string{"gpu-a100-0", "gpu-a100-1", "gpu-rke2-0", "gpu-k3s-0", "gpu-bare-0"}
	prepNodes(t, ctx, gpuNodes, false)
	t.Cleanup(func() { prepNodes(t, context.Background(), gpuNodes, true) })
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--chart", dcgmChart}, `is "dcgm-exporter", not the NVIDIA nvidia-device-plugin chart`},
		{[]string{"--repo", url, "--version", "0.17.0"}, "cannot find chart nvidia-device-plugin from " + url + " version 0.17.0"},
		{[]string{"--repo", "http://127.0.0.1:1", "--version", "0.20.0"}, "cannot find chart nvidia-device-plugin from http://127.0.0.1:1"},
		{[]string{"--chart", dpChart, "--set", "a.b[=x"}, "bad values"},
		{[]string{"--chart", dpChart, "-f", writeTemp(t, "values.yaml", "gfd: [unclosed\n")}, "bad values"},
		{[]string{"--chart", dpChart, "--dra"}, "has no DRA mode"},
	} {
		r := env.Kubectl(ctx, henv, append([]string{"gpu", "device-plugin", "install"}, tc.args...)...)
		lines := strings.Split(strings.TrimRight(r.Stderr, "\n"), "\n")
		last := lines[len(lines)-1]
		if r.Code != 2 || r.Stdout != "" || !strings.HasPrefix(last, "error: ") || !strings.Contains(last, tc.want) {
			t.Errorf("%v: exit %d stdout %q stderr %q; want exit 2 and %q", tc.args, r.Code, r.Stdout, r.Stderr, tc.want)
		}
	}
	if rels := helmListNS(t, henv, dp.DefaultNamespace); len(rels) != 0 {
		t.Fatalf("bad input installed %+v", rels)
	}
	if _, err := env.Cluster.Client.NodeV1().RuntimeClasses().Get(ctx, "nvidia", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("bad input created RuntimeClass nvidia: %v", err)
	}
}

func helmListNS(t *testing.T, henv []string, ns string) []helmRelease {
	var rels []helmRelease
	if err := json.Unmarshal([]byte(helmCLI(t, henv, "list", "-n", ns, "-o", "json")), &rels); err != nil {
		t.Fatal(err)
	}
	return rels
}

// waitPluginPod waits until the device plugin DaemonSet's pod on node is Running.
func waitPluginPod(t *testing.T, ctx context.Context, ns, node string) {
	t.Helper()
	for {
		pods, err := env.Cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err == nil {
			for _, p := range pods.Items {
				if strings.HasPrefix(p.Name, "nvidia-device-plugin-") && !strings.Contains(p.Name, "gpu-feature") && p.Status.Phase == corev1.PodRunning {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no running device plugin pod on %s", node)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// setGPUs sets the node's nvidia.com/gpu capacity and allocatable (0 removes them), as a
// device plugin's registration does.
func setGPUs(t *testing.T, ctx context.Context, node string, n int64) {
	t.Helper()
	cs := env.Cluster.Client
	for i := 0; i < 5; i++ {
		nd, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			delete(nd.Status.Capacity, "nvidia.com/gpu")
			delete(nd.Status.Allocatable, "nvidia.com/gpu")
		} else {
			nd.Status.Capacity["nvidia.com/gpu"] = *resource.NewQuantity(n, resource.DecimalSI)
			nd.Status.Allocatable["nvidia.com/gpu"] = *resource.NewQuantity(n, resource.DecimalSI)
		}
		if _, err = cs.CoreV1().Nodes().UpdateStatus(ctx, nd, metav1.UpdateOptions{}); err == nil {
			return
		} else if !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
	}
	t.Fatalf("cannot set the GPUs of %s", node)
}

// breakPod makes the pod of the DaemonSet named prefix… on node wait on its image, as the
// kubelet reports a pull that fails.
func breakPod(t *testing.T, ctx context.Context, ns, node, prefix string) {
	t.Helper()
	cs := env.Cluster.Client
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if !strings.HasPrefix(p.Name, prefix) {
			continue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "exporter", Image: p.Spec.Containers[0].Image, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
			Reason: "ImagePullBackOff", Message: fmt.Sprintf("Back-off pulling image %q", p.Spec.Containers[0].Image)}}}}
		if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, &p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no %s pod on %s", prefix, node)
}

// TestDevicePluginLeastPrivilege: install (GPU feature discovery and the DCGM exporter on),
// status and uninstall as a ServiceAccount bound to exactly docs/rbac/device-plugin.yaml
// succeed; with any one rule removed the first of them that needs it exits 2 with one line
// naming the missing permission. Every run uses a namespace that does not exist yet and
// RuntimeClass nvidia is removed before it, so creating both is part of what the role must
// allow.
func TestDevicePluginLeastPrivilege(t *testing.T) {
	dpChart, dcgmChart := dpCharts(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	c := env.Cluster
	cs := c.Client
	gpuNodes := []string{"gpu-a100-0", "gpu-a100-1", "gpu-rke2-0", "gpu-k3s-0", "gpu-bare-0"}
	prepNodes(t, ctx, gpuNodes, false)
	t.Cleanup(func() {
		prepNodes(t, context.Background(), gpuNodes, true)
		_ = cs.NodeV1().RuntimeClasses().Delete(context.Background(), dp.RuntimeClassName, metav1.DeleteOptions{})
	})
	u := harness.BindDocRole(t, ctx, env.Cluster, "device-plugin")
	role, kubeconfig, user := u.Role, u.Kubeconfig, u.User
	henv := helmEnv(t)

	// run is install, status, uninstall as the ServiceAccount in a new namespace; the first
	// that does not end as it should is returned. The admin removes what a refused run left.
	run := func() (string, resultT) {
		t.Helper()
		ns := fmt.Sprintf("kgpu-rbac-dp-%d", time.Now().UnixNano()%1e9)
		_ = cs.NodeV1().RuntimeClasses().Delete(ctx, dp.RuntimeClassName, metav1.DeleteOptions{})
		defer func() {
			env.Kubectl(context.WithoutCancel(ctx), henv, "gpu", "device-plugin", "uninstall", "--yes", "-n", ns)
			_ = cs.CoreV1().Namespaces().Delete(context.WithoutCancel(ctx), ns, metav1.DeleteOptions{})
		}()
		as := append([]string{"KUBECONFIG=" + kubeconfig}, henv...)
		for _, step := range []struct {
			args []string
			code int
		}{
			{[]string{"install", "--chart", dpChart, "--dcgm-exporter", "--dcgm-chart", dcgmChart}, 0},
			// gpu-bare-0 advertises no GPUs (no device plugin runs on kwok): exit 1, after every read.
			{[]string{"status", "-o", "json"}, 1},
			{[]string{"uninstall", "--yes"}, 0},
		} {
			r := env.Kubectl(ctx, as, append(append([]string{"gpu", "device-plugin"}, step.args...), "-n", ns)...)
			if r.Code != step.code {
				return step.args[0], r
			}
		}
		return "", resultT{}
	}

	harness.SetRole(t, ctx, cs, role.Name, role.Rules, user)
	if step, r := run(); step != "" {
		t.Fatalf("with the whole role, %s: exit %d\n%s%s", step, r.Code, r.Stdout, r.Stderr)
	}
	for i, rule := range role.Rules {
		rest := append(append([]rbacv1.PolicyRule(nil), role.Rules[:i]...), role.Rules[i+1:]...)
		harness.SetRole(t, ctx, cs, role.Name, rest, user)
		harness.WaitAccess(t, ctx, cs, user, rule, false)
		step, r := run()
		lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
		last := lines[len(lines)-1]
		res := rule.Resources[0]
		if step == "" || r.Code != 2 || !strings.Contains(last, "forbidden") || !strings.Contains(last, res) {
			t.Errorf("without %v on %s: %q exit %d, want exit 2 and a line naming %q\nstdout: %s\nstderr: %s", rule.Verbs, res, step, r.Code, res, r.Stdout, r.Stderr)
		} else {
			t.Logf("without %v on %s: %s refused: %s", rule.Verbs, res, step, nodepodFit(last))
		}
	}
	harness.SetRole(t, ctx, cs, role.Name, role.Rules, user)
}

func nodepodFit(s string) string {
	if len(s) > 220 {
		return s[:220] + "…"
	}
	return s
}
