package deviceplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/kube"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/repo"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	discoveryfake "k8s.io/client-go/discovery/fake"
	dynfake "k8s.io/client-go/dynamic/fake"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/operator/operatortest"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

// world is a cluster for the command tests: GPU nodes as prep left them, Helm's releases in
// memory, the operator's objects in a fake dynamic client.
type world struct {
	g        *clustertest.Getter
	releases *storage.Storage
	dyn      *dynfake.FakeDynamicClient
}

// prepAnnotations are what `kubectl gpu prep` writes on a node with a host driver and toolkit.
func prepAnnotations(driver bool) map[string]string {
	a := map[string]string{
		flavour.AnnotationPrefix + "reported-at":                "2026-12-06T10:00:00Z",
		flavour.AnnotationPrefix + "toolkit-version":            "1.17.8-1",
		flavour.AnnotationPrefix + "nvidia-runtime":             "true",
		flavour.AnnotationPrefix + "containerd-default-runtime": "runc",
		flavour.AnnotationPrefix + "containerd-cdi":             "false",
		flavour.AnnotationPrefix + "gpus":                       "8",
		flavour.AnnotationPrefix + "mig":                        "disabled",
	}
	if driver {
		a[flavour.AnnotationPrefix+"driver-version"] = "570.195.03"
	}
	return a
}

// newWorld: two kubeadm A100 nodes and an RKE2 node prepped with host driver and toolkit, a
// CPU node; with bare, a GPU node prep found without a driver too.
func newWorld(t *testing.T, bare bool, objs ...runtime.Object) *world {
	var all []runtime.Object
	add := func(name, profile string, ann map[string]string) {
		n := nodefixtures.NodeObject(name, nodefixtures.Profiles[profile])
		for k, v := range ann {
			n.Annotations[k] = v
		}
		// No device plugin yet: the nodes advertise no GPUs.
		delete(n.Status.Allocatable, "nvidia.com/gpu")
		delete(n.Status.Capacity, "nvidia.com/gpu")
		for k := range n.Labels {
			if strings.HasPrefix(k, "nvidia.com/") || strings.HasPrefix(k, "feature.node.kubernetes.io/") {
				delete(n.Labels, k)
			}
		}
		all = append(all, n)
	}
	add("gpu-a100-0", "a100", prepAnnotations(true))
	add("gpu-a100-1", "a100", prepAnnotations(true))
	rke2 := prepAnnotations(true)
	rke2[flavour.Annotation] = "rke2"
	add("gpu-rke2-0", "rke2", rke2)
	add("cpu-0", "cpu", nil)
	if bare {
		add("gpu-bare-0", "bare-gpu", prepAnnotations(false))
	}
	w := &world{g: clustertest.New(append(all, objs...)...), releases: storage.Init(driver.NewMemory())}
	w.dyn = dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		gpusoftware.ClusterPolicyGVR: "ClusterPolicyList", gpusoftware.GPUClusterGVR: "GPUClusterList"})
	return w
}

func (w *world) client(g cluster.Getter, ns string, log io.Writer) (*op.Client, error) {
	return operatortest.NewClient(w.releases, w.dyn)(g, ns, log)
}

func (w *world) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	cmd := newCmdDevicePlugin(w.g, streams, w.client)
	cmd.SetArgs(args)
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func chartEnv(t *testing.T, env, what string) string {
	p := os.Getenv(env)
	if p == "" {
		t.Skipf("%s is not set: the %s chart (../shared/testdata/charts, set by .ci/run) is needed", env, what)
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s: %v", env, err)
	}
	return p
}

func charts(t *testing.T) []string {
	return []string{"--chart", chartEnv(t, "KGPU_DEVICE_PLUGIN_CHART", "nvidia-device-plugin 0.20.0"),
		"--dcgm-chart", chartEnv(t, "KGPU_DCGM_EXPORTER_CHART", "dcgm-exporter 4.8.2")}
}

func filepathBase(p string) string { return p[strings.LastIndex(p, "/")+1:] }

// serveRepo serves dir as a Helm repository (index.yaml written) on 127.0.0.1.
func serveRepo(t *testing.T, dir string) string {
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	idx, err := repo.IndexDirectory(dir, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.WriteFile(dir+"/index.yaml", 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HELM_CACHE_HOME", t.TempDir())
	t.Setenv("HELM_CONFIG_HOME", t.TempDir())
	return srv.URL
}

func code(err error) int { return cliexit.Code(err, false) }

func TestValuesGolden(t *testing.T) {
	c := charts(t)
	w := newWorld(t, false)
	for _, f := range []string{"table", "json"} {
		out, errOut, err := w.run(t, append([]string{"values", "--dcgm-exporter", "-o", f}, c...)...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", f, err, errOut)
		}
		golden.Assert(t, "values."+f+".golden", []byte(out))
	}
	// The JSON is the document a runbook reads.
	out, _, _ := w.run(t, append([]string{"values", "--dcgm-exporter", "-o", "json"}, c...)...)
	var p dp.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	if p.Kind != dp.PlanKind || len(p.Releases) != 2 || p.Releases[0].Values["runtimeClassName"] != "nvidia" ||
		p.CreateRuntimeClass == "" || p.GPUNodes != 3 {
		t.Errorf("plan: %+v", p)
	}
}

// TestValuesGitOps: both releases for Flux (one Namespace, a HelmRepository and HelmRelease
// per chart, the RuntimeClass install would create) and for Argo CD; a local chart refused.
func TestValuesGitOps(t *testing.T) {
	charts(t)
	w := newWorld(t, false)
	dir := t.TempDir()
	for _, name := range []string{"KGPU_DEVICE_PLUGIN_CHART", "KGPU_DCGM_EXPORTER_CHART"} {
		b, _ := os.ReadFile(os.Getenv(name))
		_ = os.WriteFile(dir+"/"+filepathBase(os.Getenv(name)), b, 0o644)
	}
	repoURL := serveRepo(t, dir)
	out, errOut, err := w.run(t, "values", "--dcgm-exporter", "--repo", repoURL, "--dcgm-repo", repoURL, "-o", "helmrelease")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	golden.Assert(t, "values.helmrelease.golden", []byte(strings.ReplaceAll(out, repoURL, "REPO")))
	var kinds []string
	for _, doc := range strings.Split(out, "\n---\n") {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, o["kind"].(string))
	}
	if strings.Join(kinds, ",") != "Namespace,HelmRepository,HelmRelease,HelmRepository,HelmRelease,RuntimeClass" {
		t.Errorf("objects: %v", kinds)
	}
	out, _, err = w.run(t, "values", "--dcgm-exporter", "--repo", repoURL, "--dcgm-repo", repoURL, "-o", "application")
	if err != nil || strings.Count(out, "kind: Application") != 2 {
		t.Errorf("-o application: %v\n%s", err, out)
	}
	if _, _, err := w.run(t, append([]string{"values", "-o", "helmrelease"}, charts(t)...)...); code(err) != cliexit.Usage {
		t.Errorf("-o helmrelease of a local chart: %v", err)
	}
}

func TestValuesDerivations(t *testing.T) {
	c := charts(t)
	cdi := prepAnnotations(true)
	cdi[flavour.AnnotationPrefix+"containerd-cdi"] = "true"
	cdi[flavour.AnnotationPrefix+"containerd-default-runtime"] = "nvidia"
	cdi[flavour.AnnotationPrefix+"mig"] = "enabled"
	n := nodefixtures.NodeObject("gpu-h100-0", nodefixtures.Profiles["a100"])
	for k, v := range cdi {
		n.Annotations[k] = v
	}
	for k := range n.Labels {
		if strings.HasPrefix(k, "nvidia.com/") || strings.HasPrefix(k, "feature.node.kubernetes.io/") {
			delete(n.Labels, k)
		}
	}
	n.Spec.Taints = []corev1.Taint{{Key: "nvidia.com/gpu", Value: "present", Effect: corev1.TaintEffectNoSchedule}}
	nfd := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "nfd-worker", Namespace: "node-feature-discovery"},
		Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "registry.k8s.io/nfd/node-feature-discovery:v0.17.3", Command: []string{"nfd-worker"}}}}}}}
	w := &world{g: clustertest.New(n, nfd), releases: storage.Init(driver.NewMemory())}
	w.dyn = dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{gpusoftware.ClusterPolicyGVR: "ClusterPolicyList", gpusoftware.GPUClusterGVR: "GPUClusterList"})
	out, errOut, err := w.run(t, append([]string{"values", "--dcgm-exporter", "-o", "yaml", "--sharing", "time-slicing", "--replicas", "4", "--set", "migStrategy=single"}, c...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	var p dp.Plan
	if err := yaml.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	v, dc := p.Releases[0].Values, p.Releases[1].Values
	want := map[string]any{"deviceListStrategy": "cdi-cri", "migStrategy": "single"}
	for k, x := range want {
		if v[k] != x {
			t.Errorf("%s = %v, want %v", k, v[k], x)
		}
	}
	if _, ok := v["runtimeClassName"]; ok {
		t.Errorf("runtimeClassName set although nvidia is the default runtime: %v", v["runtimeClassName"])
	}
	if nfdOn := v["nfd"].(map[string]any)["enabled"]; nfdOn != false {
		t.Errorf("nfd.enabled = %v with an NFD already running", nfdOn)
	}
	cfg := v["config"].(map[string]any)
	if cfg["default"] != "time-slicing-4" || !strings.Contains(cfg["map"].(map[string]any)["time-slicing-4"].(string), "replicas: 4") {
		t.Errorf("config = %v", cfg)
	}
	if sm := dc["serviceMonitor"].(map[string]any)["enabled"]; sm != false {
		t.Errorf("serviceMonitor.enabled = %v without monitoring.coreos.com", sm)
	}
	if tol, _ := json.Marshal(dc["tolerations"]); !strings.Contains(string(tol), "nvidia.com/gpu") {
		t.Errorf("the exporter does not tolerate the GPU taint: %s", tol)
	}
	overridden := false
	for _, d := range p.Releases[0].Derived {
		overridden = overridden || d.Key == "migStrategy" && d.Overridden && d.Value == "mixed"
	}
	if !overridden {
		t.Errorf("migStrategy=mixed derived from MIG and overridden by --set: %+v", p.Releases[0].Derived)
	}
	if len(p.Releases[0].NodeLabels) != 1 {
		t.Errorf("with NFD running elsewhere the unlabelled GPU node needs nvidia.com/gpu.present: %+v", p.Releases[0].NodeLabels)
	}
	// An install without --label-nodes says so, of one node in the singular.
	if _, errOut, err := w.run(t, append([]string{"install"}, c...)...); err != nil || !strings.Contains(errOut, "warning: 1 GPU node needs a label for the derived values") {
		t.Errorf("install without --label-nodes: %v\n%s", err, errOut)
	}

	// The release's own NFD (its subchart, from an earlier install) is not another one: the
	// values stay as the first install's, so an upgrade does not turn it off.
	nfd.Name, nfd.Namespace = "nvidia-device-plugin-node-feature-discovery-worker", "nvidia-device-plugin"
	nfd.Annotations = map[string]string{"meta.helm.sh/release-name": "nvidia-device-plugin", "meta.helm.sh/release-namespace": "nvidia-device-plugin"}
	w = &world{g: clustertest.New(n, nfd), releases: storage.Init(driver.NewMemory()), dyn: w.dyn}
	if out, errOut, err = w.run(t, append([]string{"values", "-o", "yaml"}, c...)...); err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	p = dp.Plan{}
	if err := yaml.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	for _, d := range p.Releases[0].Derived {
		if d.Key == "nfd.enabled" {
			t.Errorf("the release's own NFD taken for another: %+v", d)
		}
	}
}

func TestInstallDryRunGolden(t *testing.T) {
	c := charts(t)
	w := newWorld(t, false)
	out, errOut, err := w.run(t, append([]string{"install", "--dry-run", "--dcgm-exporter"}, c...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	golden.Assert(t, "install.dry-run.golden", []byte(out))
	if rels, _ := w.releases.ListReleases(); len(rels) != 0 {
		t.Errorf("dry run stored %d releases", len(rels))
	}
	if _, err := w.g.Client.NodeV1().RuntimeClasses().Get(context.Background(), "nvidia", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("dry run created RuntimeClass nvidia: %v", err)
	}
}

func TestInstallUpgradeUninstall(t *testing.T) {
	c := charts(t)
	w := newWorld(t, false)
	ctx := context.Background()
	out, errOut, err := w.run(t, append([]string{"install", "--dcgm-exporter", "--label-nodes"}, c...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	for _, want := range []string{"release nvidia-device-plugin revision 1 deployed: chart nvidia-device-plugin-0.20.0 (app 0.20.0) in namespace nvidia-device-plugin",
		"release dcgm-exporter revision 1 deployed: chart dcgm-exporter-4.8.2"} {
		if !strings.Contains(out, want) {
			t.Errorf("install said:\n%s\nwant %q", out, want)
		}
	}
	if !strings.Contains(errOut, "created RuntimeClass nvidia (handler nvidia)") {
		t.Errorf("install must say it created the RuntimeClass:\n%s", errOut)
	}
	rc, err := w.g.Client.NodeV1().RuntimeClasses().Get(ctx, "nvidia", metav1.GetOptions{})
	if err != nil || rc.Handler != "nvidia" {
		t.Fatalf("RuntimeClass nvidia: %v %v", rc, err)
	}
	ns, err := w.g.Client.CoreV1().Namespaces().Get(ctx, "nvidia-device-plugin", metav1.GetOptions{})
	if err != nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace: %v %v", ns, err)
	}
	rel, err := w.releases.Last("nvidia-device-plugin")
	if err != nil || rel.Config["gfd"].(map[string]any)["enabled"] != true || rel.Config["runtimeClassName"] != "nvidia" {
		t.Fatalf("release values: %v %v", rel, err)
	}
	// An upgrade is a second revision of each; then uninstall removes both.
	out, errOut, err = w.run(t, append([]string{"upgrade", "--dcgm-exporter", "--gfd=false"}, c...)...)
	if err != nil || !strings.Contains(out, "release nvidia-device-plugin revision 2 deployed") {
		t.Fatalf("upgrade: %v\n%s\n%s", err, out, errOut)
	}
	if rel, _ := w.releases.Last("nvidia-device-plugin"); rel.Config["gfd"].(map[string]any)["enabled"] != false {
		t.Errorf("upgrade --gfd=false: %v", rel.Config)
	}
	out, _, err = w.run(t, "uninstall", "--yes")
	if err != nil || !strings.Contains(out, "release nvidia-device-plugin uninstalled") || !strings.Contains(out, "release dcgm-exporter uninstalled") {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	if _, _, err = w.run(t, "uninstall", "--yes"); code(err) != cliexit.Usage || !strings.Contains(err.Error(), "no release nvidia-device-plugin or dcgm-exporter in namespace nvidia-device-plugin") {
		t.Errorf("second uninstall: %v", err)
	}
}

func TestInstallRefusals(t *testing.T) {
	c := charts(t)
	operatorChart := os.Getenv("KGPU_GPU_OPERATOR_CHART")
	cp := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy",
		"metadata": map[string]any{"name": "cluster-policy", "annotations": map[string]any{gpusoftware.AnnotationHelmRelease: "gpu-operator"}},
		"spec":     map[string]any{"devicePlugin": map[string]any{"enabled": true}}}}
	staticDS := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-device-plugin-daemonset", Namespace: "kube-system"},
		Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "nvidia-device-plugin-ctr", Image: "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"}}}}}}
	badValues := t.TempDir() + "/bad.yaml"
	_ = os.WriteFile(badValues, []byte("gfd: [unclosed\n"), 0o644)
	cases := []struct {
		name  string
		world func() *world
		args  []string
		want  string
	}{
		{"unready nodes", func() *world {
			w := newWorld(t, true)
			patch := `{"metadata":{"annotations":{"` + flavour.AnnotationPrefix + `toolkit-version":null}}}`
			_, _ = w.g.Client.CoreV1().Nodes().Patch(context.Background(), "gpu-a100-1", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			return w
		}, c, "2 of 4 GPU nodes are not ready for the device plugin, nothing installed: gpu-a100-1: no NVIDIA Container Toolkit ('kubectl gpu prep gpu-a100-1 --apply --install-toolkit') (and 1 more nodes, listed above)"},
		{"operator", func() *world {
			w := newWorld(t, false)
			_, _ = w.dyn.Resource(gpusoftware.ClusterPolicyGVR).Create(context.Background(), cp, metav1.CreateOptions{})
			return w
		}, c, "ClusterPolicy cluster-policy (Helm release gpu-operator) already allocates GPUs"},
		// The operator's release under another name and namespace: the fix names them.
		{"operator release of its own", func() *world {
			w := newWorld(t, false)
			own := cp.DeepCopy()
			own.SetAnnotations(map[string]string{gpusoftware.AnnotationHelmRelease: "my-gpu-op", gpusoftware.AnnotationHelmNamespace: "ho-opns"})
			_, _ = w.dyn.Resource(gpusoftware.ClusterPolicyGVR).Create(context.Background(), own, metav1.CreateOptions{})
			return w
		}, c, "remove it ('kubectl gpu operator uninstall --release-name my-gpu-op -n ho-opns')"},
		{"static device plugin of a helm release", func() *world {
			ds := staticDS.DeepCopy()
			ds.Annotations = map[string]string{gpusoftware.AnnotationHelmRelease: "old-plugin", gpusoftware.AnnotationHelmNamespace: "kube-system"}
			return newWorld(t, false, ds)
		}, c, "remove it ('helm uninstall old-plugin -n kube-system')"},
		{"static device plugin", func() *world { return newWorld(t, false, staticDS) }, c, "DaemonSet kube-system/nvidia-device-plugin-daemonset already allocates GPUs"},
		{"dra", func() *world { return newWorld(t, false) }, append([]string{"--dra"}, c...), "--dra: NVIDIA's device plugin chart has no DRA mode"},
		{"bad values", func() *world { return newWorld(t, false) }, append([]string{"-f", badValues}, c...), "bad values:"},
		{"bad sharing", func() *world { return newWorld(t, false) }, append([]string{"--sharing", "mps"}, c...), "--sharing mps needs --replicas of at least 2"},
		{"wrong chart", func() *world { return newWorld(t, false) }, []string{"--chart", c[3]}, `is "dcgm-exporter", not the NVIDIA nvidia-device-plugin chart`},
		{"wrong version", func() *world { return newWorld(t, false) }, append([]string{"--version", "0.17.0"}, c...), "is version 0.20.0, not 0.17.0"},
		{"unreachable repository", func() *world { return newWorld(t, false) }, []string{"--repo", "http://127.0.0.1:9/charts"}, "cannot find chart nvidia-device-plugin from http://127.0.0.1:9/charts version 0.20.0"},
	}
	if operatorChart != "" {
		cases = append(cases, struct {
			name  string
			world func() *world
			args  []string
			want  string
		}{"operator chart", func() *world { return newWorld(t, false) }, []string{"--chart", operatorChart}, `is "gpu-operator", not the NVIDIA nvidia-device-plugin chart`})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.world()
			t.Setenv("HELM_CACHE_HOME", t.TempDir())
			t.Setenv("HELM_CONFIG_HOME", t.TempDir())
			_, errOut, err := w.run(t, append([]string{"install", "--dcgm-exporter"}, tc.args...)...)
			if code(err) != cliexit.Usage || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got exit %d %v\nwant exit 2 and a line with %q\n%s", code(err), err, tc.want, errOut)
			}
			if rels, _ := w.releases.ListReleases(); len(rels) != 0 {
				t.Errorf("refused install stored %d releases", len(rels))
			}
			if _, err := w.g.Client.NodeV1().RuntimeClasses().Get(context.Background(), "nvidia", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("refused install created RuntimeClass nvidia: %v", err)
			}
			if _, err := w.g.Client.CoreV1().Namespaces().Get(context.Background(), "nvidia-device-plugin", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("refused install created the namespace: %v", err)
			}
			if tc.name == "unready nodes" && (!strings.Contains(errOut, "node gpu-bare-0 is not ready for the device plugin: no host driver") || !strings.Contains(errOut, "node gpu-a100-1 is not ready")) {
				t.Errorf("every unready node is listed on stderr:\n%s", errOut)
			}
		})
	}
}

func TestReleaseNameTaken(t *testing.T) {
	c := charts(t)
	w := newWorld(t, false)
	ch, err := loader.Load(c[3])
	if err != nil {
		t.Fatal(err)
	}
	// A release of another chart under the device plugin's name.
	if err := w.releases.Create(&release.Release{Name: "nvidia-device-plugin", Namespace: "nvidia-device-plugin", Version: 1, Chart: ch,
		Info: &release.Info{Status: release.StatusDeployed}}); err != nil {
		t.Fatal(err)
	}
	_, _, err = w.run(t, append([]string{"install"}, c...)...)
	if code(err) != cliexit.Usage || !strings.Contains(err.Error(), `release "nvidia-device-plugin" in namespace nvidia-device-plugin is chart "dcgm-exporter", not nvidia-device-plugin`) {
		t.Fatalf("got %v", err)
	}
	if rels, _ := w.releases.ListReleases(); len(rels) != 1 {
		t.Errorf("%d releases after the refusal", len(rels))
	}
}

// TestStatusGolden: one node ready, one whose plugin image cannot be pulled, one crashing.
func TestStatusGolden(t *testing.T) {
	c := charts(t)
	w := newWorld(t, false)
	ctx := context.Background()
	if _, errOut, err := w.run(t, append([]string{"install", "--label-nodes", "--gfd=false"}, c...)...); err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-device-plugin", Namespace: "nvidia-device-plugin",
		Annotations: map[string]string{gpusoftware.AnnotationHelmRelease: "nvidia-device-plugin"}},
		Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "nvidia-device-plugin-ctr", Image: "nvcr.io/nvidia/k8s-device-plugin:v0.20.0", Command: []string{"nvidia-device-plugin"}}},
			Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{
				{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "nvidia.com/gpu.present", Operator: corev1.NodeSelectorOpIn, Values: []string{"true"}}}}}}}}}}},
		Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, NumberReady: 1, UpdatedNumberScheduled: 3}}
	if _, err := w.g.Client.AppsV1().DaemonSets(ds.Namespace).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := func(node string, ready bool, st corev1.ContainerState, restarts int32) {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-device-plugin-" + node, Namespace: ds.Namespace,
			OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Name: ds.Name, APIVersion: "apps/v1", UID: "u"}}},
			Spec: corev1.PodSpec{NodeName: node},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: map[bool]corev1.ConditionStatus{true: corev1.ConditionTrue, false: corev1.ConditionFalse}[ready]}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "nvidia-device-plugin-ctr", State: st, RestartCount: restarts}}}}
		if !ready && st.Waiting != nil && st.Waiting.Reason == "ErrImagePull" {
			p.Status.Phase = corev1.PodPending
		}
		if _, err := w.g.Client.CoreV1().Pods(ds.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod("gpu-a100-0", true, corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}, 0)
	pod("gpu-a100-1", false, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull",
		Message: "failed to pull and unpack image \"nvcr.io/nvidia/k8s-device-plugin:v0.20.0\": dial tcp: lookup nvcr.io: no such host"}}, 0)
	pod("gpu-rke2-0", false, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 5m0s restarting failed container"}}, 6)
	n, _ := w.g.Client.CoreV1().Nodes().Get(ctx, "gpu-a100-0", metav1.GetOptions{})
	n.Status.Allocatable["nvidia.com/gpu"] = *resource.NewQuantity(8, resource.DecimalSI)
	if _, err := w.g.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"table", "json"} {
		out, _, err := w.run(t, "status", "-o", f)
		if code(err) != cliexit.Failures {
			t.Fatalf("status of a cluster where two nodes fail: exit %d %v", code(err), err)
		}
		// The release's time is the run's.
		out = regexp.MustCompile(`"updated": "[^"]*"`).ReplaceAllString(out, `"updated": "TIME"`)
		golden.Assert(t, "status."+f+".golden", []byte(out))
	}
	var st dp.Status
	out, _, _ := w.run(t, "status", "-o", "json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if st.Ready || !strings.HasPrefix(st.Failing, "gpu-a100-1: nvidia-device-plugin pod ErrImagePull: failed to pull") || !strings.Contains(st.Hint, "mirror") {
		t.Errorf("status names the node whose image cannot be pulled first: %q / %q", st.Failing, st.Hint)
	}
}

func TestStatusWithoutRelease(t *testing.T) {
	w := newWorld(t, false)
	_, _, err := w.run(t, "status")
	if code(err) != cliexit.Usage || !strings.Contains(err.Error(), "no release nvidia-device-plugin or dcgm-exporter in namespace nvidia-device-plugin") {
		t.Fatalf("got %v", err)
	}
}

// TestOperatorInstallRefusedBesideDevicePlugin is the reverse refusal, in the operator's
// library: a device plugin release already runs.
func TestOperatorInstallRefusedBesideDevicePlugin(t *testing.T) {
	opChart := os.Getenv("KGPU_GPU_OPERATOR_CHART")
	if opChart == "" {
		t.Skip("KGPU_GPU_OPERATOR_CHART is not set (.ci/run sets it from ../shared/testdata/charts)")
	}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-device-plugin", Namespace: "nvidia-device-plugin",
		Annotations: map[string]string{gpusoftware.AnnotationHelmRelease: "nvidia-device-plugin"}},
		Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "nvidia-device-plugin-ctr", Image: "nvcr.io/nvidia/k8s-device-plugin:v0.20.0", Command: []string{"nvidia-device-plugin"}}}}}}}
	w := newWorld(t, false, ds)
	c, _ := w.client(w.g, "gpu-operator", io.Discard)
	ch, doc, err := c.Values(context.Background(), op.ValuesRequest{Source: helmrelease.ChartSource{Chart: opChart}, Derive: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Install(context.Background(), ch, doc, helmrelease.InstallRequest{ReleaseName: "gpu-operator"})
	var ce *cliexit.Error
	if !errors.As(err, &ce) || ce.Code != cliexit.Usage || !strings.Contains(err.Error(), "DaemonSet nvidia-device-plugin/nvidia-device-plugin (Helm release nvidia-device-plugin) already runs NVIDIA's device plugin") {
		t.Fatalf("got %v", err)
	}
	doc.Values["devicePlugin"] = map[string]any{"enabled": false}
	if _, err := c.Install(context.Background(), ch, doc, helmrelease.InstallRequest{ReleaseName: "gpu-operator"}); err != nil {
		t.Fatalf("with devicePlugin.enabled=false the operator installs beside it: %v", err)
	}
}

// refusesServiceMonitor is Helm's Kubernetes client for an API server that no longer maps
// kind ServiceMonitor (its CRD removed, or going away while discovery still lists it).
type refusesServiceMonitor struct{ kubefake.PrintingKubeClient }

func (k *refusesServiceMonitor) Build(r io.Reader, validate bool) (kube.ResourceList, error) {
	b, _ := io.ReadAll(r)
	if strings.Contains(string(b), "kind: ServiceMonitor") {
		return nil, errors.New(`resource mapping not found for name: "dcgm-exporter" namespace: "nvidia-device-plugin" from "": no matches for kind "ServiceMonitor" in version "monitoring.coreos.com/v1"`)
	}
	return k.PrintingKubeClient.Build(bytes.NewReader(b), validate)
}

// TestUpgradeChecksBothReleases: an upgrade of the device plugin and the exporter where the
// API server would refuse the exporter's ServiceMonitor changes neither release and says
// which would fail (before, the device plugin was upgraded and then the exporter failed).
func TestUpgradeChecksBothReleases(t *testing.T) {
	c := charts(t)
	w := newWorld(t, false)
	// The cluster serves monitoring.coreos.com/v1: the exporter's ServiceMonitor is derived on.
	w.g.Client.Discovery().(*discoveryfake.FakeDiscovery).Resources = append(w.g.Client.Discovery().(*discoveryfake.FakeDiscovery).Resources,
		&metav1.APIResourceList{GroupVersion: "monitoring.coreos.com/v1", APIResources: []metav1.APIResource{{Name: "servicemonitors", Kind: "ServiceMonitor", Namespaced: true}}})
	if _, errOut, err := w.run(t, append([]string{"install", "--dcgm-exporter", "--label-nodes"}, c...)...); err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	refusing := operatortest.NewClientWithKube(w.releases, w.dyn, &refusesServiceMonitor{kubefake.PrintingKubeClient{Out: io.Discard}})
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	cmd := newCmdDevicePlugin(w.g, streams, refusing)
	cmd.SetArgs(append([]string{"upgrade", "--dcgm-exporter", "--gfd=false"}, c...))
	err := cmd.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "nothing changed: release dcgm-exporter would fail") || !strings.Contains(err.Error(), "ServiceMonitor") {
		t.Fatalf("upgrade: %v\n%s\n%s", err, out, errOut)
	}
	for _, name := range []string{"nvidia-device-plugin", "dcgm-exporter"} {
		if rel, _ := w.releases.Last(name); rel == nil || rel.Version != 1 {
			t.Errorf("release %s changed: %+v", name, rel)
		}
	}
}
