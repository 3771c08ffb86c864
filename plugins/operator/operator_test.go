package operator

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	"github.com/google/go-containerregistry/pkg/registry"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/repo"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	helmtime "helm.sh/helm/v3/pkg/time"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynfake "k8s.io/client-go/dynamic/fake"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/mirror"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/operator/operatortest"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

// world is a cluster for the operator's command tests: the demo nodes (the A100s and RKE2
// as prep left them: host driver and toolkit), Helm's releases in memory, and the operator's
// objects in fake clients.
type world struct {
	g        *clustertest.Getter
	releases *storage.Storage
	dyn      *dynfake.FakeDynamicClient
}

func newWorld(t *testing.T, objs ...runtime.Object) *world {
	var nodes []runtime.Object
	for _, s := range nodefixtures.DefaultNodes {
		for i := 0; i < s.Count; i++ {
			n := nodefixtures.NodeObject(s.Prefix+"-"+string(rune('0'+i)), nodefixtures.Profiles[s.Profile])
			nodes = append(nodes, n)
		}
	}
	w := &world{g: clustertest.New(append(nodes, objs...)...), releases: storage.Init(driver.NewMemory())}
	scheme := runtime.NewScheme()
	w.dyn = dynfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{gpusoftware.ClusterPolicyGVR: "ClusterPolicyList", {Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}: "CustomResourceDefinitionList"})
	return w
}

func (w *world) client(g cluster.Getter, ns string, log io.Writer) (*op.Client, error) {
	return operatortest.NewClient(w.releases, w.dyn)(g, ns, log)
}

func (w *world) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	cmd := newCmdOperator(w.g, streams, w.client)
	cmd.SetArgs(args)
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func chartPath(t *testing.T) string {
	p := os.Getenv("KGPU_GPU_OPERATOR_CHART")
	if p == "" {
		t.Skip("KGPU_GPU_OPERATOR_CHART is not set: the GPU Operator chart (../shared/testdata/charts, set by .ci/run) is needed")
	}
	return p
}

// prepped annotates nodes as 'kubectl gpu prep' leaves them.
func prepped(w *world, names ...string) {
	for _, n := range names {
		node, _ := w.g.Client.CoreV1().Nodes().Get(context.Background(), n, metav1.GetOptions{})
		if node.Annotations == nil {
			node.Annotations = map[string]string{}
		}
		node.Annotations[flavour.AnnotationPrefix+"driver-version"] = "550.127.08"
		node.Annotations[flavour.AnnotationPrefix+"toolkit-version"] = "1.17.4-1"
		node.Annotations[flavour.AnnotationPrefix+"nvidia-runtime"] = "true"
		_, _ = w.g.Client.CoreV1().Nodes().Update(context.Background(), node, metav1.UpdateOptions{})
	}
}

func TestOperatorValuesGolden(t *testing.T) {
	chart := chartPath(t)
	for _, tc := range []struct{ name, golden, out string }{
		{"table", "values.table.golden", ""},
		{"json", "values.json.golden", "json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			prepped(w, "gpu-a100-0", "gpu-a100-1")
			args := []string{"values", "--chart", chart, "--set", "dcgmExporter.enabled=false"}
			if tc.out != "" {
				args = append(args, "-o", tc.out)
			}
			out, _, err := w.run(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			golden.Assert(t, tc.golden, []byte(out))
		})
	}
}

// TestOperatorInstallDryRun: the values with their reasons and the rendered objects'
// summary; no release, no namespace, no node label.
func TestOperatorInstallDryRun(t *testing.T) {
	chart := chartPath(t)
	w := newWorld(t)
	prepped(w, "gpu-a100-0", "gpu-a100-1", "gpu-rke2-0", "gpu-k3s-0")
	out, _, err := w.run(t, "install", "--dry-run", "--chart", chart, "--label-nodes")
	if err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "install.dry-run.golden", []byte(out))
	if rels, _ := w.releases.ListReleases(); len(rels) != 0 {
		t.Fatalf("%d releases stored by a dry run", len(rels))
	}
	if _, err := w.g.Client.CoreV1().Namespaces().Get(context.Background(), op.DefaultNamespace, metav1.GetOptions{}); err == nil {
		t.Fatal("a dry run created the namespace")
	}
	if n, _ := w.g.Client.CoreV1().Nodes().Get(context.Background(), "gpu-a100-0", metav1.GetOptions{}); n.Labels["nvidia.com/gpu.deploy.driver"] != "" {
		t.Fatal("a dry run labelled a node")
	}
}

func deployed(w *world) {
	_ = w.releases.Create(&release.Release{Name: op.DefaultReleaseName, Namespace: op.DefaultNamespace, Version: 3,
		Chart: &chart.Chart{Metadata: &chart.Metadata{Name: op.ChartName, Version: "v26.7.0", AppVersion: "v26.7.0"}},
		Info:  &release.Info{Status: release.StatusDeployed, LastDeployed: helmtime.Time{Time: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}}})
}

func daemonSet(name string, desired, ready int32) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: op.DefaultNamespace},
		Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: desired, NumberReady: ready, UpdatedNumberScheduled: desired}}
}

func policy(state string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy",
		"metadata": map[string]any{"name": gpusoftware.ClusterPolicyName}, "status": map[string]any{"state": state}}}
	return u
}

func TestOperatorStatusGolden(t *testing.T) {
	for _, tc := range []struct {
		name, golden, out string
		state             string
		ready             int32
		code              int
	}{
		{"not ready", "status.notready.golden", "", "notReady", 1, cliexit.Failures},
		{"ready", "status.ready.golden", "", "ready", 2, cliexit.OK},
		{"json", "status.json.golden", "json", "notReady", 1, cliexit.Failures},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, daemonSet("nvidia-device-plugin-daemonset", 2, tc.ready), daemonSet("gpu-feature-discovery", 2, 2))
			deployed(w)
			if _, err := w.dyn.Resource(gpusoftware.ClusterPolicyGVR).Create(context.Background(), policy(tc.state), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			args := []string{"status"}
			if tc.out != "" {
				args = append(args, "-o", tc.out)
			}
			out, _, err := w.run(t, args...)
			if cliexit.Code(err, false) != tc.code {
				t.Fatalf("exit %d (%v), want %d", cliexit.Code(err, false), err, tc.code)
			}
			golden.Assert(t, tc.golden, []byte(out))
		})
	}
}

// TestOperatorStatusNotInstalled names the command to run.
func TestOperatorStatusNotInstalled(t *testing.T) {
	w := newWorld(t)
	out, _, err := w.run(t, "status")
	if cliexit.Code(err, false) != cliexit.Failures || !strings.Contains(out, "kubectl gpu operator install") {
		t.Fatalf("%v\n%s", err, out)
	}
}

func TestOperatorUninstall(t *testing.T) {
	w := newWorld(t)
	deployed(w)
	if _, _, err := w.run(t, "uninstall"); cliexit.Code(err, false) != cliexit.Usage || !strings.Contains(err.Error(), "pass --yes") {
		t.Fatalf("without --yes off a terminal: %v", err)
	}
	if r, _ := w.releases.Last(op.DefaultReleaseName); r == nil || r.Info.Status != release.StatusDeployed {
		t.Fatal("the release changed without confirmation")
	}
	out, _, err := w.run(t, "uninstall", "--yes")
	if err != nil || out != "release gpu-operator uninstalled from namespace gpu-operator\n" {
		t.Fatalf("%v %q", err, out)
	}
	if _, _, err := w.run(t, "uninstall", "--yes"); cliexit.Code(err, false) != cliexit.Usage || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("second uninstall: %v", err)
	}
}

// TestOperatorDRARefusals: --dra names every unmet prerequisite, exit 2, nothing stored.
func TestOperatorDRARefusals(t *testing.T) {
	chart := chartPath(t)
	w := newWorld(t)
	w.g.Client.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: "v1.33.4"}
	if _, err := w.dyn.Resource(gpusoftware.ClusterPolicyGVR).Create(context.Background(), policy("ready"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, _, err := w.run(t, "install", "--dra", "--chart", chart)
	if cliexit.Code(err, false) != cliexit.Usage || out != "" {
		t.Fatalf("exit %d %v, stdout %q", cliexit.Code(err, false), err, out)
	}
	for _, want := range []string{"Kubernetes v1.33.4 is older than 1.34.2", "ClusterPolicy cluster-policy exists and cannot coexist with a GPUCluster", "nothing was changed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	if rels, _ := w.releases.ListReleases(); len(rels) != 0 {
		t.Fatalf("%d releases stored", len(rels))
	}
}

// TestOperatorGitOps: the install as Flux objects and as an Argo CD Application name the
// chart, version and values install would use. The HelmRelease is read back strictly with
// Flux's own Go types (helm-controller/api v2); the Application is checked field by field
// against the paths of Argo CD's Application CRD (argoproj.io/v1alpha1: spec.source.{repoURL,
// chart, targetRevision, helm.{releaseName, valuesObject}}, spec.destination, spec.syncPolicy).
func TestOperatorGitOps(t *testing.T) {
	chart := chartPath(t)
	w := newWorld(t)
	prepped(w, "gpu-a100-0", "gpu-a100-1", "gpu-rke2-0", "gpu-k3s-0", "gpu-bare-0")
	repo := chartRepoURL(t, chart)
	vals, _, err := w.run(t, "values", "--repo", repo, "-o", "json", "--set", "dcgmExporter.enabled=false")
	if err != nil {
		t.Fatal(err)
	}
	var doc helmrelease.ValuesDoc
	if err := json.Unmarshal([]byte(vals), &doc); err != nil {
		t.Fatal(err)
	}

	out, _, err := w.run(t, "values", "--repo", repo, "-o", "helmrelease", "--set", "dcgmExporter.enabled=false")
	if err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "values.helmrelease.golden", []byte(strings.ReplaceAll(out, repo, "REPO")))
	docs := strings.Split(out, "\n---\n")
	if len(docs) != 3 {
		t.Fatalf("%d documents, want Namespace, HelmRepository, HelmRelease", len(docs))
	}
	var hr helmv2.HelmRelease
	if err := yaml.UnmarshalStrict([]byte(docs[2]), &hr); err != nil {
		t.Fatalf("not a HelmRelease: %v", err)
	}
	var hrValues map[string]any
	if err := json.Unmarshal(hr.Spec.Values.Raw, &hrValues); err != nil {
		t.Fatal(err)
	}
	if hr.Spec.Chart.Spec.Chart != "gpu-operator" || hr.Spec.Chart.Spec.Version != "v26.7.0" || hr.Spec.ReleaseName != "gpu-operator" ||
		hr.Namespace != "gpu-operator" || !reflect.DeepEqual(hrValues, doc.Values) {
		t.Fatalf("HelmRelease %+v values %v, want %v", hr.Spec.Chart.Spec, hrValues, doc.Values)
	}

	out, _, err = w.run(t, "values", "--repo", repo, "-o", "application", "--set", "dcgmExporter.enabled=false")
	if err != nil {
		t.Fatal(err)
	}
	var app struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct{ Name, Namespace string }
		Spec       struct {
			Project string `json:"project"`
			Source  struct {
				RepoURL        string `json:"repoURL"`
				Chart          string `json:"chart"`
				TargetRevision string `json:"targetRevision"`
				Helm           struct {
					ReleaseName  string         `json:"releaseName"`
					ValuesObject map[string]any `json:"valuesObject"`
				} `json:"helm"`
			} `json:"source"`
			Destination struct {
				Server    string `json:"server"`
				Namespace string `json:"namespace"`
			} `json:"destination"`
			SyncPolicy struct {
				SyncOptions              []string `json:"syncOptions"`
				ManagedNamespaceMetadata struct {
					Labels map[string]string `json:"labels"`
				} `json:"managedNamespaceMetadata"`
			} `json:"syncPolicy"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict([]byte(out), &app); err != nil {
		t.Fatalf("not an Application of the fields checked: %v", err)
	}
	s := app.Spec
	if app.APIVersion != "argoproj.io/v1alpha1" || app.Kind != "Application" || s.Source.Chart != "gpu-operator" || s.Source.TargetRevision != "v26.7.0" ||
		s.Source.RepoURL != repo || s.Destination.Namespace != "gpu-operator" || !reflect.DeepEqual(s.Source.Helm.ValuesObject, doc.Values) ||
		s.SyncPolicy.ManagedNamespaceMetadata.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Fatalf("Application %+v", app)
	}
	if _, _, err := w.run(t, "values", "--chart", chart, "-o", "application"); cliexit.Code(err, false) != cliexit.Usage {
		t.Fatalf("-o application with --chart: %v", err)
	}
}

// chartRepoURL serves the chart as a chart repository on 127.0.0.1; Helm's cache and
// config go to the test's own directories.
func chartRepoURL(t *testing.T, chart string) string {
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
	h := t.TempDir()
	t.Setenv("HELM_CACHE_HOME", filepath.Join(h, "cache"))
	t.Setenv("HELM_CONFIG_HOME", filepath.Join(h, "config"))
	t.Setenv("HELM_DATA_HOME", filepath.Join(h, "data"))
	return srv.URL
}

// TestOperatorStatusNamesAnImageItCannotPull: an operand in ImagePullBackOff is named with
// its image and what to do (an air-gapped cluster without the mirror's values).
func TestOperatorStatusNamesAnImageItCannotPull(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-device-plugin-daemonset-x2k4p", Namespace: op.DefaultNamespace},
		Spec: corev1.PodSpec{NodeName: "gpu-a100-0"},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "nvidia-device-plugin", Image: "nvcr.io/nvidia/k8s-device-plugin:v0.20.0",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image \"nvcr.io/nvidia/k8s-device-plugin:v0.20.0\""}}}}}}
	w := newWorld(t, daemonSet("nvidia-device-plugin-daemonset", 2, 1), pod)
	deployed(w)
	if _, err := w.dyn.Resource(gpusoftware.ClusterPolicyGVR).Create(context.Background(), policy("notReady"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, _, err := w.run(t, "status")
	if cliexit.Code(err, false) != cliexit.Failures || !strings.Contains(out, "Not ready: nvidia-device-plugin-daemonset-x2k4p: image nvcr.io/nvidia/k8s-device-plugin:v0.20.0 cannot be pulled on node gpu-a100-0: mirror it ('kubectl gpu mirror --to REGISTRY')") {
		t.Fatalf("%v\n%s", err, out)
	}
}

// TestOperatorInstallFromMirror: --mirror moves every repository of the install's values to
// the mirror, under the user's own values: the chart then names mirror images only.
func TestOperatorInstallFromMirror(t *testing.T) {
	chart := chartPath(t)
	w := newWorld(t)
	out, _, err := w.run(t, "values", "--chart", chart, "--mirror", "registry.inside:5000/gpu", "-o", "json", "--set", "dcgmExporter.enabled=false")
	if err != nil {
		t.Fatal(err)
	}
	var doc helmrelease.ValuesDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	ch, err := loader.Load(chart)
	if err != nil {
		t.Fatal(err)
	}
	ro := mirror.RenderOptions{ReleaseName: "gpu-operator", Namespace: "gpu-operator", DriverOS: []string{"ubuntu22.04"}}
	manifest, err := mirror.Render(ch, doc.Values, ro)
	if err != nil {
		t.Fatal(err)
	}
	imgs, _ := mirror.ChartImages(manifest, ro)
	if len(imgs) < 5 {
		t.Fatalf("%d images", len(imgs))
	}
	for _, im := range imgs {
		if !strings.HasPrefix(im.Ref, "registry.inside:5000/gpu/") {
			t.Errorf("%s (%s) is not from the mirror", im.Ref, im.From)
		}
	}
	if dc, _ := doc.Values["dcgmExporter"].(map[string]any); dc["enabled"] != false {
		t.Fatalf("the user's value was lost: %v", doc.Values["dcgmExporter"])
	}
	if _, _, err := w.run(t, "values", "--chart", chart, "--mirror", "not a registry"); cliexit.Code(err, false) != cliexit.Usage {
		t.Fatalf("bad --mirror: %v", err)
	}

	// Without --chart or --repo the chart comes from the mirror too, where 'kubectl gpu
	// mirror --to' pushes it; a mirror without it is a usage error naming where it looked.
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	empty := host + "/empty"
	if _, _, err := w.run(t, "values", "--mirror", empty, "--plain-http", "--version", ch.Metadata.Version); cliexit.Code(err, false) != cliexit.Usage ||
		!strings.Contains(err.Error(), "oci://"+empty+"/charts/gpu-operator") {
		t.Fatalf("a mirror without the chart: %v", err)
	}
	target, _ := mirror.ParseTarget(host+"/gpu", true)
	if _, err := mirror.PushChart(context.Background(), chart, target, mirror.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	out, _, err = w.run(t, "values", "--mirror", host+"/gpu", "--plain-http", "--version", ch.Metadata.Version, "-o", "json")
	if err != nil {
		t.Fatalf("values with the chart from the mirror: %v", err)
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || !strings.Contains(doc.Chart, ch.Metadata.Version) {
		t.Fatalf("values doc: %v %q", err, doc.Chart)
	}
	// GitOps objects name that OCI repository.
	out, _, err = w.run(t, "values", "--mirror", host+"/gpu", "--plain-http", "--version", ch.Metadata.Version, "-o", "helmrelease")
	if err != nil || !strings.Contains(out, "url: oci://"+host+"/gpu/charts\n") || !strings.Contains(out, "type: oci\n") || !strings.Contains(out, "chart: gpu-operator\n") {
		t.Fatalf("-o helmrelease with the chart from the mirror: %v\n%s", err, out)
	}
}
