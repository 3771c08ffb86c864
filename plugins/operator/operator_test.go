package operator

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"

	"k8s.io/apimachinery/pkg/runtime/schema"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	helmtime "helm.sh/helm/v3/pkg/time"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	dynfake "k8s.io/client-go/dynamic/fake"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/hack/nodefixtures"
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
	w.dyn = dynfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{op.ClusterPolicyGVR: "ClusterPolicyList", {Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}: "CustomResourceDefinitionList"})
	return w
}

func (w *world) client(g cluster.Getter, ns string, log io.Writer) (*op.Client, error) {
	cs, _ := g.Clientset()
	cfg := &action.Configuration{Releases: w.releases, KubeClient: &kubefake.PrintingKubeClient{Out: io.Discard},
		Capabilities: chartutil.DefaultCapabilities, Log: func(string, ...any) {}}
	return &op.Client{Namespace: ns, Helm: &op.Helm{Config: cfg, Settings: cli.New(), Namespace: ns}, CS: cs, Dyn: w.dyn, Log: log}, nil
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
		"metadata": map[string]any{"name": op.ClusterPolicyName}, "status": map[string]any{"state": state}}}
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
			if _, err := w.dyn.Resource(op.ClusterPolicyGVR).Create(context.Background(), policy(tc.state), metav1.CreateOptions{}); err != nil {
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
	if _, err := w.dyn.Resource(op.ClusterPolicyGVR).Create(context.Background(), policy("ready"), metav1.CreateOptions{}); err != nil {
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
