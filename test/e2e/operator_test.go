package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/repo"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
	dpv1 "github.com/kubectl-gpu/kubectl-gpu/hack/testenv/third_party/k8s-device-plugin/api/config/v1"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

// What is real here: the GPU Operator chart (from ../shared, path in KGPU_GPU_OPERATOR_CHART),
// Helm's SDK installing it into the real API server, a chart repository served over HTTP on
// 127.0.0.1, and the real helm CLI reading the release. What is simulated: no operator ever
// runs a GPU; the test writes ClusterPolicy's status itself to drive `status` and `--wait`
// through notReady → ready, and kwok makes the chart's pods Running.

func chartPath(t *testing.T) string {
	p := os.Getenv("KGPU_GPU_OPERATOR_CHART")
	if p == "" {
		t.Skip("KGPU_GPU_OPERATOR_CHART is not set (path to gpu-operator-v26.7.0.tgz; .ci/run sets it from ../shared/testdata/charts)")
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("KGPU_GPU_OPERATOR_CHART: %v", err)
	}
	return p
}

// chartRepo serves the chart as a Helm repository (index.yaml + tgz) on 127.0.0.1.
func chartRepo(t *testing.T, chart string) string {
	dir := t.TempDir()
	b, err := os.ReadFile(chart)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(chart)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	idx, err := repo.IndexDirectory(dir, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.WriteFile(filepath.Join(dir, "index.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	return srv.URL
}

// helmEnv keeps Helm's cache and config in the test's own directories.
func helmEnv(t *testing.T) []string {
	d := t.TempDir()
	return []string{"HELM_CACHE_HOME=" + filepath.Join(d, "cache"), "HELM_CONFIG_HOME=" + filepath.Join(d, "config"), "HELM_DATA_HOME=" + filepath.Join(d, "data")}
}

func helmCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	bin := filepath.Join(localcluster.DefaultBinDir(), "helm-v3.22.0", "helm")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("helm CLI not built (%s): run make tools", bin)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+env0()), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func env0() string { return envCluster().Kubeconfig }

func envCluster() *localcluster.Cluster { return env.Cluster }

type helmRelease struct {
	Name     string `json:"name"`
	Revision string `json:"revision"`
	Status   string `json:"status"`
	Chart    string `json:"chart"`
}

func helmList(t *testing.T, henv []string) []helmRelease {
	var rels []helmRelease
	if err := json.Unmarshal([]byte(helmCLI(t, henv, "list", "-n", "gpu-operator", "-o", "json")), &rels); err != nil {
		t.Fatal(err)
	}
	return rels
}

func setPolicyState(t *testing.T, dyn dynamic.Interface, state string) {
	t.Helper()
	ctx := context.Background()
	cp, err := dyn.Resource(gpusoftware.ClusterPolicyGVR).Get(ctx, gpusoftware.ClusterPolicyName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cond := map[string]any{"type": "Ready", "status": "False", "reason": "OperandNotReady", "message": "nvidia-driver-daemonset is not ready", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}
	if state == "ready" {
		cond = map[string]any{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ClusterPolicy is ready", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}
	}
	_ = unstructured.SetNestedField(cp.Object, state, "status", "state")
	_ = unstructured.SetNestedSlice(cp.Object, []any{cond}, "status", "conditions")
	if _, err := dyn.Resource(gpusoftware.ClusterPolicyGVR).UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestOperatorLifecycle(t *testing.T) {
	chart := chartPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := env.Cluster
	henv := helmEnv(t)
	url := chartRepo(t, chart)
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}

	// Every GPU node runs a host driver, as `kubectl gpu prep` would have found and noted.
	gpuNodes := []string{"gpu-a100-0", "gpu-a100-1", "gpu-rke2-0", "gpu-k3s-0", "gpu-bare-0"}
	for _, n := range gpuNodes {
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"550.127.08"}}}`, rep.AnnotationDriver)
		if _, err := c.Client.CoreV1().Nodes().Patch(ctx, n, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range gpuNodes {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:null}}}`, rep.AnnotationDriver)
			_, _ = c.Client.CoreV1().Nodes().Patch(context.Background(), n, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		}
	})

	gpu := func(args ...string) resultT {
		return (env.Kubectl(ctx, henv, append([]string{"gpu", "operator"}, args...)...))
	}

	// values: driver.enabled=false with its reason; the stale key is warned about.
	r := gpu("values", "--chart", chart, "--set", "operator.defaultRuntime=containerd", "-o", "json")
	if r.Code != 0 || !strings.Contains(r.Stderr, "operator.defaultRuntime was removed from the GPU Operator chart in v25.3.0") {
		t.Fatalf("values: exit %d\n%s", r.Code, r.Stderr)
	}
	var doc helmrelease.ValuesDoc
	if err := json.Unmarshal([]byte(r.Stdout), &doc); err != nil || len(doc.Derived) != 1 || doc.Derived[0].Key != "driver.enabled" {
		t.Fatalf("values document: %v %s", err, r.Stdout)
	}

	// install --dry-run changes nothing.
	r = gpu("install", "--repo", url, "--dry-run")
	if r.Code != 0 || !strings.Contains(r.Stdout, "# driver.enabled (derived): every GPU node (5) runs a host driver") || !strings.Contains(r.Stdout, "ClusterPolicy") {
		t.Fatalf("dry run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if rels := helmList(t, henv); len(rels) != 0 {
		t.Fatalf("dry run installed %v", rels)
	}

	// install from the repository (the default path, with --repo for the mirror).
	r = gpu("install", "--repo", url, "--version", "v26.7.0", "--timeout", "3m")
	if r.Code != 0 || !strings.Contains(r.Stdout, "release gpu-operator revision 1 deployed") {
		t.Fatalf("install: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	rels := helmList(t, henv)
	if len(rels) != 1 || rels[0].Status != "deployed" || rels[0].Chart != "gpu-operator-v26.7.0" {
		t.Fatalf("helm list: %+v", rels)
	}
	cp, err := dyn.Resource(gpusoftware.ClusterPolicyGVR).Get(ctx, gpusoftware.ClusterPolicyName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if enabled, found, _ := unstructured.NestedBool(cp.Object, "spec", "driver", "enabled"); !found || enabled {
		t.Fatalf("ClusterPolicy spec.driver.enabled = %v (found %v), want the derived false", enabled, found)
	}
	ns, err := c.Client.CoreV1().Namespaces().Get(ctx, "gpu-operator", metav1.GetOptions{})
	if err != nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Fatalf("namespace: %v %v", err, ns.Labels)
	}

	// status: no ClusterPolicy status yet, then notReady, then ready.
	r = gpu("status")
	if r.Code != 1 || !strings.Contains(r.Stdout, "Not ready: clusterpolicy") {
		t.Fatalf("status before the operator ran: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	setPolicyState(t, dyn, "notReady")
	r = gpu("status", "-o", "json")
	var st operator.Status
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil || r.Code != 1 || st.Ready || st.ClusterPolicy.State != "notReady" || st.Release.Revision != 1 {
		t.Fatalf("status notReady: exit %d %v\n%s", r.Code, err, r.Stdout)
	}

	// upgrade with a changed value → revision 2; --wait follows until the test marks the
	// ClusterPolicy ready.
	done := make(chan resultT, 1)
	go func() {
		done <- gpu("upgrade", "--chart", chart, "--set", "dcgmExporter.enabled=false", "--wait", "--timeout", "2m")
	}()
	// Once revision 2 is deployed the command is in its wait loop: let it see notReady,
	// then mark the ClusterPolicy ready as the operator would.
	for i := 0; ; i++ {
		sec, err := c.Client.CoreV1().Secrets("gpu-operator").Get(ctx, "sh.helm.release.v1.gpu-operator.v2", metav1.GetOptions{})
		if err == nil && sec.Labels["status"] == "deployed" {
			break
		}
		if i > 600 {
			t.Fatal("revision 2 never deployed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	setPolicyState(t, dyn, "ready")
	r = <-done
	if r.Code != 0 || !strings.Contains(r.Stdout, "release gpu-operator revision 2 deployed") || !strings.Contains(r.Stdout, "GPU Operator ready") || !strings.Contains(r.Stderr, "waiting: clusterpolicy notReady") {
		t.Fatalf("upgrade --wait: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if r := gpu("status"); r.Code != 0 || !strings.Contains(r.Stdout, "Ready: the GPU Operator is ready") {
		t.Fatalf("status ready: exit %d\n%s", r.Code, r.Stdout)
	}

	// --atomic with a value the API server rejects: nothing half-done, revision 2 stays.
	r = gpu("upgrade", "--chart", chart, "--atomic", "--set", "operator.resources.limits.cpu=lots", "--timeout", "1m")
	if r.Code == 0 || strings.Count(strings.TrimSpace(r.Stderr), "\n") > 2 {
		t.Fatalf("bad value: exit %d\n%s", r.Code, r.Stderr)
	}
	rels = helmList(t, henv)
	if len(rels) != 1 || rels[0].Status != "deployed" || rels[0].Revision == "3" && rels[0].Status != "deployed" {
		t.Fatalf("after a failed atomic upgrade: %+v", rels)
	}

	// --wait that runs out of time prints the status and names what is not ready (exit 1).
	setPolicyState(t, dyn, "notReady")
	r = gpu("upgrade", "--chart", chart, "--wait", "--timeout", "15s")
	if r.Code != 1 || !strings.Contains(r.Stdout, "Not ready: clusterpolicy") || !strings.Contains(r.Stderr, "is not ready after 15s") {
		t.Fatalf("--wait timeout: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}

	// Bad input: one line, exit 2, nothing changed.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "--chart", "/nonexistent/gpu-operator.tgz"}, "cannot find chart /nonexistent/gpu-operator.tgz"},
		{[]string{"install", "--repo", url, "--version", "v1.0.0"}, "version v1.0.0"},
		{[]string{"install", "--repo", "http://127.0.0.1:1", "--version", "v26.7.0"}, "cannot find chart gpu-operator from http://127.0.0.1:1"},
		{[]string{"install", "--chart", chart, "--set", "a.b[=x"}, "bad values"},
		{[]string{"install", "--chart", chart, "-f", writeTemp(t, "values.yaml", "driver: [unclosed\n")}, "bad values"},
		{[]string{"uninstall"}, "pass --yes to confirm"},
	} {
		r := gpu(tc.args...)
		lines := strings.Split(strings.TrimRight(r.Stderr, "\n"), "\n")
		last := lines[len(lines)-1]
		if r.Code != 2 || r.Stdout != "" || !strings.HasPrefix(last, "error: ") || !strings.Contains(last, tc.want) {
			t.Errorf("%v: exit %d stdout %q stderr %q; want exit 2 and %q", tc.args, r.Code, r.Stdout, r.Stderr, tc.want)
		}
	}
	if rels := helmList(t, henv); len(rels) != 1 || rels[0].Revision == "1" {
		t.Fatalf("bad input changed the release: %+v", rels)
	}

	// Sharing on the real API server: the device plugin's ConfigMap (read back strictly in
	// its config format), the ClusterPolicy pointed at it (the real CRD's schema accepts the
	// patch), a per-node profile's label; MPS on a MIG node refused with nothing changed.
	r = gpu("sharing", "time-slicing", "--replicas", "4")
	if r.Code != 0 {
		t.Fatalf("sharing: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	cm, err := c.Client.CoreV1().ConfigMaps("gpu-operator").Get(ctx, operator.DefaultSharingConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Read with the device plugin's own config package (an unmodified copy, see
	// hack/testenv/third_party/k8s-device-plugin), as the device plugin reads its ConfigMap.
	var dpc dpv1.Config
	if err := sigsyaml.UnmarshalStrict([]byte(cm.Data["time-slicing-4"]), &dpc); err != nil || len(dpc.Sharing.TimeSlicing.Resources) != 1 || dpc.Sharing.TimeSlicing.Resources[0].Replicas != 4 {
		t.Fatalf("device plugin config: %v %+v", err, dpc)
	}
	cp, err = dyn.Resource(gpusoftware.ClusterPolicyGVR).Get(ctx, gpusoftware.ClusterPolicyName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if name, _, _ := unstructured.NestedString(cp.Object, "spec", "devicePlugin", "config", "name"); name != operator.DefaultSharingConfigMap {
		t.Fatalf("ClusterPolicy devicePlugin.config.name = %q", name)
	}
	if def, _, _ := unstructured.NestedString(cp.Object, "spec", "devicePlugin", "config", "default"); def != "time-slicing-4" {
		t.Fatalf("ClusterPolicy devicePlugin.config.default = %q", def)
	}
	r = gpu("sharing", "mps", "--replicas", "2", "-l", "kubernetes.io/hostname=gpu-k3s-0")
	if n, _ := c.Client.CoreV1().Nodes().Get(ctx, "gpu-k3s-0", metav1.GetOptions{}); r.Code != 0 || n.Labels["nvidia.com/device-plugin.config"] != "mps-2" {
		t.Fatalf("per-node sharing: exit %d %v\n%s", r.Code, n.Labels, r.Stderr)
	}
	_, _ = c.Client.CoreV1().Nodes().Patch(ctx, "gpu-k3s-0", types.MergePatchType, []byte(`{"metadata":{"labels":{"nvidia.com/device-plugin.config":null}}}`), metav1.PatchOptions{})
	// MIG: the layout label on the real node object (no MIG manager runs to apply it).
	r = gpu("mig", "all-1g.10gb", "-l", "kubernetes.io/hostname=gpu-a100-1")
	if n, _ := c.Client.CoreV1().Nodes().Get(ctx, "gpu-a100-1", metav1.GetOptions{}); r.Code != 0 || n.Labels["nvidia.com/mig.config"] != "all-1g.10gb" {
		t.Fatalf("mig: exit %d %v\n%s", r.Code, n.Labels, r.Stderr)
	}
	// --wait follows the MIG manager's state label on the real node object: the test plays the
	// MIG manager (none runs here) — pending, then success (exit 0); then failed (exit 1).
	for _, tc := range []struct {
		final string
		code  int
	}{{"success", 0}, {"failed", 1}} {
		_, _ = c.Client.CoreV1().Nodes().Patch(ctx, "gpu-a100-1", types.MergePatchType, []byte(`{"metadata":{"labels":{"nvidia.com/mig.config.state":"pending"}}}`), metav1.PatchOptions{})
		cmd := env.Command(ctx, "gpu", "operator", "mig", "all-1g.10gb", "-l", "kubernetes.io/hostname=gpu-a100-1", "--wait", "--timeout", "60s")
		var out strings.Builder
		cmd.Stderr = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		_, _ = c.Client.CoreV1().Nodes().Patch(ctx, "gpu-a100-1", types.MergePatchType, []byte(`{"metadata":{"labels":{"nvidia.com/mig.config.state":"`+tc.final+`"}}}`), metav1.PatchOptions{})
		err := cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code {
			t.Fatalf("mig --wait with the MIG manager saying %s: exit %d, want %d\n%s", tc.final, code, tc.code, out.String())
		}
	}
	_, _ = c.Client.CoreV1().Nodes().Patch(ctx, "gpu-a100-1", types.MergePatchType, []byte(`{"metadata":{"labels":{"nvidia.com/mig.config":null,"nvidia.com/mig.config.state":null}}}`), metav1.PatchOptions{})
	if r := gpu("sharing", "time-slicing", "--replicas", "0"); r.Code != 2 || r.Stdout != "" {
		t.Fatalf("replicas 0: exit %d", r.Code)
	}

	// uninstall removes the release and, with --keep-crds=false, the CRDs; nodes untouched.
	r = gpu("uninstall", "--yes", "--keep-crds=false")
	if r.Code != 0 || !strings.Contains(r.Stdout, "CRD clusterpolicies.nvidia.com removed") {
		t.Fatalf("uninstall: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if rels := helmList(t, henv); len(rels) != 0 {
		t.Fatalf("after uninstall: %+v", rels)
	}
	n, err := c.Client.CoreV1().Nodes().Get(ctx, "gpu-a100-0", metav1.GetOptions{})
	if err != nil || n.Annotations[rep.AnnotationDriver] == "" {
		t.Fatal("uninstall must leave nodes untouched")
	}
}

type resultT = harness.Result

func writeTemp(t *testing.T, name, content string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOperatorRefusals: permission problems and a name taken by another chart end in one
// line, exit 2, and no release.
func TestOperatorRefusals(t *testing.T) {
	chart := chartPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := env.Cluster.Client
	henv := helmEnv(t)
	gpu := func(args ...string) resultT {
		return (env.Kubectl(ctx, henv, append([]string{"gpu", "operator"}, args...)...))
	}
	oneLine := func(r resultT, want string) {
		t.Helper()
		lines := strings.Split(strings.TrimRight(r.Stderr, "\n"), "\n")
		last := lines[len(lines)-1]
		if r.Code != 2 || r.Stdout != "" || !strings.HasPrefix(last, "error: ") || !strings.Contains(last, want) {
			t.Fatalf("exit %d stdout %q stderr %q; want exit 2 and one error line with %q", r.Code, r.Stdout, r.Stderr, want)
		}
	}

	// Another chart already holds the release name.
	other := filepath.Join(t.TempDir(), "other")
	_ = os.MkdirAll(filepath.Join(other, "templates"), 0o755)
	_ = os.WriteFile(filepath.Join(other, "Chart.yaml"), []byte("apiVersion: v2\nname: other\nversion: 1.0.0\n"), 0o644)
	_ = os.WriteFile(filepath.Join(other, "templates", "cm.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata: {}\n"), 0o644)
	helmCLI(t, henv, "install", "gpu-operator", other, "-n", "taken", "--create-namespace")
	oneLine(gpu("install", "--chart", chart, "-n", "taken"), `release "gpu-operator" in namespace taken is chart "other", not gpu-operator`)
	helmCLI(t, henv, "uninstall", "gpu-operator", "-n", "taken")

	// A user who may read nodes but nothing in the release namespace.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "nodes-reader"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list"}}}}
	if _, err := c.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"no-namespace", "no-crds"} {
		b := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user + "-nodes"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "nodes-reader"},
			Subjects: []rbacv1.Subject{{Kind: "User", Name: user, APIGroup: "rbac.authorization.k8s.io"}}}
		if _, err := c.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	oneLine(gpu("install", "--chart", chart, "--as", "no-namespace"), "forbidden")

	// A user who owns the release namespace (admin there) but may not create CRDs.
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gpu-operator"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "no-crds-admin", Namespace: "gpu-operator"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "admin"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "no-crds", APIGroup: "rbac.authorization.k8s.io"}}}
	if _, err := c.RbacV1().RoleBindings("gpu-operator").Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	oneLine(gpu("install", "--chart", chart, "--as", "no-crds"), "customresourcedefinitions")
	if rels := helmList(t, henv); len(rels) != 0 {
		t.Fatalf("a refused install left a release: %+v", rels)
	}
}

func setGPUClusterState(t *testing.T, dyn dynamic.Interface, state string) {
	t.Helper()
	ctx := context.Background()
	gc, err := dyn.Resource(gpusoftware.GPUClusterGVR).Get(ctx, gpusoftware.GPUClusterName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(gc.Object, state, "status", "state")
	if _, err := dyn.Resource(gpusoftware.GPUClusterGVR).UpdateStatus(ctx, gc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestOperatorDRA: install --dra renders the real chart's GPUCluster stack (no
// ClusterPolicy) once the prerequisites hold, refuses with the reason when they do not,
// and status / --wait follow the GPUCluster (whose status the test writes, as the operator
// would).
func TestOperatorDRA(t *testing.T) {
	chart := chartPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := env.Cluster
	henv := helmEnv(t)
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	gpu := func(args ...string) resultT {
		return env.Kubectl(ctx, henv, append([]string{"gpu", "operator"}, args...)...)
	}
	annotate := func(version string) {
		for _, n := range []string{"gpu-a100-0", "gpu-a100-1", "gpu-rke2-0", "gpu-k3s-0", "gpu-bare-0"} {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, rep.AnnotationDriver, version)
			if _, err := c.Client.CoreV1().Nodes().Patch(context.Background(), n, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() { annotate("null") })

	// A host driver older than 580: refused, every reason named, nothing installed.
	annotate(`"550.127.08"`)
	r := gpu("install", "--dra", "--chart", chart)
	if r.Code != 2 || r.Stdout != "" || !strings.Contains(r.Stderr, "host drivers older than 580 on gpu-a100-0 550.127.08") {
		t.Fatalf("--dra with old drivers: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if rels := helmList(t, henv); len(rels) != 0 {
		t.Fatalf("a refused install left %v", rels)
	}

	annotate(`"580.95.05"`)
	r = gpu("install", "--dra", "--chart", chart, "--dry-run")
	if r.Code != 0 || !strings.Contains(r.Stdout, "# gpuCluster.deployCR (derived): --dra") || !strings.Contains(r.Stdout, "GPUCluster ") || strings.Contains(r.Stdout, "#   ClusterPolicy ") {
		t.Fatalf("--dra --dry-run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	r = gpu("install", "--dra", "--chart", chart, "--timeout", "3m")
	if r.Code != 0 || !strings.Contains(r.Stdout, "release gpu-operator revision 1 deployed") {
		t.Fatalf("install --dra: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if _, err := dyn.Resource(gpusoftware.ClusterPolicyGVR).Get(ctx, gpusoftware.ClusterPolicyName, metav1.GetOptions{}); err == nil {
		t.Fatal("install --dra made a ClusterPolicy")
	}
	r = gpu("status")
	if r.Code != 1 || !strings.Contains(r.Stdout, "Not ready: gpucluster") {
		t.Fatalf("status before the operator ran: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	setGPUClusterState(t, dyn, "notReady")
	done := make(chan resultT, 1)
	go func() { done <- gpu("upgrade", "--dra", "--chart", chart, "--wait", "--timeout", "2m") }()
	for i := 0; ; i++ {
		sec, err := c.Client.CoreV1().Secrets("gpu-operator").Get(ctx, "sh.helm.release.v1.gpu-operator.v2", metav1.GetOptions{})
		if err == nil && sec.Labels["status"] == "deployed" {
			break
		}
		if i > 600 {
			t.Fatal("revision 2 never deployed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	setGPUClusterState(t, dyn, "ready")
	r = <-done
	if r.Code != 0 || !strings.Contains(r.Stdout, "GPU Operator ready: GPUCluster gpu-cluster is ready") || !strings.Contains(r.Stderr, "waiting: gpucluster notReady") {
		t.Fatalf("upgrade --dra --wait: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	var st operator.Status
	r = gpu("status", "-o", "json")
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil || r.Code != 0 || st.GPUCluster == nil || st.GPUCluster.State != "ready" || st.ClusterPolicy != nil {
		t.Fatalf("status: exit %d %v\n%s", r.Code, err, r.Stdout)
	}
	// The GPUCluster (kept by Helm's resource policy) goes with its CRD.
	if r := gpu("uninstall", "--yes", "--keep-crds=false", "--timeout", "2m"); r.Code != 0 {
		t.Fatalf("uninstall: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if rels := helmList(t, henv); len(rels) != 0 {
		t.Fatalf("after uninstall: %+v", rels)
	}
}
