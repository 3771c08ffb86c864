package up

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	dynfake "k8s.io/client-go/dynamic/fake"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/operator/operatortest"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/up"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/simnodes"
)

// world: two A100 nodes with the host driver and toolkit, one needing a sysctl file (no
// reboot), the other ready; the simulated kubelets answer the agent's Jobs (plan: the
// change; apply: done; check: ready) and the CUDA sample with its pass; Helm keeps the
// release in memory and the operator's ClusterPolicy is ready.
type world struct {
	g        *clustertest.Getter
	releases *storage.Storage
	chart    string
	applied  int
	// noOperator: no ClusterPolicy in the cluster (the device-plugin stack's world).
	noOperator bool
}

func newWorld(t *testing.T) *world {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var objs []runtime.Object
	for _, name := range []string{"gpu-a100-0", "gpu-a100-1"} {
		objs = append(objs, nodefixtures.NodeObject(name, nodefixtures.Profiles["a100"]))
	}
	objs = append(objs, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: nodepod.DefaultNamespace}})
	w := &world{g: clustertest.New(objs...), releases: storage.Init(driver.NewMemory())}
	w.chart = t.TempDir()
	_ = os.WriteFile(filepath.Join(w.chart, "Chart.yaml"), []byte("apiVersion: v2\nname: gpu-operator\nversion: v26.7.0\nappVersion: v26.7.0\n"), 0o644)
	_ = os.WriteFile(filepath.Join(w.chart, "values.yaml"), []byte("driver:\n  enabled: true\ntoolkit:\n  enabled: true\n"), 0o644)
	if err := w.g.RunNodes(ctx, nodepod.DefaultNamespace, func(p *corev1.Pod) clustertest.Outcome {
		if p.Labels[nodepod.LabelComponent] != prep.Component {
			return clustertest.Outcome{Phase: corev1.PodSucceeded, Log: simnodes.VectorAddPassLog}
		}
		mode := rep.Mode(p.Spec.Containers[0].Args[0])
		r := rep.New("v0.0.0-test", mode)
		r.Node, r.Flavour, r.DriverVersion, r.ToolkitVersion, r.NvidiaRuntime = p.Spec.NodeName, rep.FlavourKubeadm, "580.95.05", "1.17.8-1", true
		r.OS, r.Kernel, r.Arch = "Ubuntu 22.04.5 LTS", "5.15.0-126-generic", "amd64"
		r.GPUs = []rep.GPU{{PCIAddress: "0000:07:00.0", DeviceID: "0x20b0"}}
		r.Add(rep.CheckPCI, rep.OK, "1 NVIDIA GPU", "")
		if p.Spec.NodeName == "gpu-a100-0" && w.applied == 0 {
			switch mode {
			case rep.ModePlan:
				r.Add(rep.CheckSysctl, rep.Fail, "net.bridge.bridge-nf-call-iptables is 0", "kubectl gpu prep --apply")
				r.Changes = []rep.Change{{Check: rep.CheckSysctl, File: "/etc/sysctl.d/99-kubernetes-gpu.conf", Diff: "+net.bridge.bridge-nf-call-iptables = 1\n"}}
			case rep.ModeApply:
				r.Add(rep.CheckSysctl, rep.Fixed, "net.bridge.bridge-nf-call-iptables set to 1", "")
				r.Changes = []rep.Change{{Check: rep.CheckSysctl, File: "/etc/sysctl.d/99-kubernetes-gpu.conf", Done: true}}
				w.applied++
			}
		}
		b, _ := json.Marshal(r)
		return clustertest.Outcome{Phase: corev1.PodSucceeded, Log: string(b) + "\n"}
	}); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	policy := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "metadata": map[string]any{"name": gpusoftware.ClusterPolicyName},
		"status": map[string]any{"state": "ready", "conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ClusterPolicy is ready"}}}}}
	objs := []runtime.Object{policy}
	if w.noOperator {
		objs = nil
	}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		gpusoftware.ClusterPolicyGVR: "ClusterPolicyList", gpusoftware.GPUClusterGVR: "GPUClusterList"}, objs...)
	clients := func(g cluster.Getter, ns string, o *Options) (up.Clients, error) {
		c, err := operatortest.NewClient(w.releases, dyn)(g, ns, o.Streams.ErrOut)
		if err != nil {
			return up.Clients{}, err
		}
		return up.Clients{CS: c.CS, Dynamic: dyn, Release: c}, nil
	}
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	cmd := newCmdUp(w.g, streams, clients)
	cmd.SetArgs(append(args, "--chart", w.chart))
	cmd.SetOut(out)
	cmd.SetErr(errOut)
	err := cmd.ExecuteContext(context.Background())
	return strings.ReplaceAll(out.String(), w.chart, "CHART"), strings.ReplaceAll(errOut.String(), w.chart, "CHART"), err
}

// durations in the report differ from run to run.
func stable(s string) string {
	var b bytes.Buffer
	for _, line := range strings.SplitAfter(s, "\n") {
		for _, step := range []string{"prep ", "install ", "verify "} {
			if strings.HasPrefix(line, step) {
				if i := strings.Index(line, "s  "); i > 0 {
					line = line[:20] + "   N.Ns" + line[i+1:]
				}
			}
		}
		b.WriteString(line)
	}
	return b.String()
}

func TestUpCommand(t *testing.T) {
	w := newWorld(t)
	// The plan (text and UpPlan), changing nothing.
	out, _, err := w.run(t, "--dry-run")
	if err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "dry-run.golden", []byte(out))
	out, _, err = w.run(t, "--dry-run", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "dry-run.json.golden", []byte(out))
	if rels, _ := w.releases.ListReleases(); len(rels) != 0 || w.applied != 0 {
		t.Fatalf("the dry run changed something: %d releases, %d applies", len(rels), w.applied)
	}
	// Not at a terminal: refused without --yes, nothing changed.
	if _, _, err := w.run(t); cliexit.Code(err, false) != cliexit.Usage || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("without --yes: %v", err)
	}
	// The run: the sysctl applied, the release installed, both nodes verified.
	out, errOut, err := w.run(t, "--yes")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	golden.Assert(t, "run.golden", []byte(stable(out)))
	if w.applied != 1 {
		t.Errorf("applied %d times, want once", w.applied)
	}
	// Again: nothing to change, only verify; the release stays at revision 1.
	out, errOut, err = w.run(t, "--yes", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	var r up.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Steps[0].Result != up.Skipped || r.Steps[1].Result != up.Skipped || r.Steps[2].Result != up.Done || r.Summary.Verified != 2 {
		t.Errorf("second run: %+v", r)
	}
	if !strings.Contains(errOut, "nothing to change: the cluster is up; verifying") {
		t.Errorf("second run did not say it changes nothing:\n%s", errOut)
	}
	if rels, _ := w.releases.History(op.DefaultReleaseName); len(rels) != 1 {
		t.Errorf("release history: %d revisions, want 1", len(rels))
	}
	// The recorded run, and a plan that differs from it: shown and asked again.
	cm, err := w.g.Client.CoreV1().ConfigMaps(nodepod.DefaultNamespace).Get(context.Background(), up.RecordName, metav1.GetOptions{})
	if err != nil || !strings.Contains(cm.Data["record.json"], `"state": "done"`) {
		t.Fatalf("record: %v %v", err, cm)
	}
	_, errOut, err = w.run(t, "--set", "dcgmExporter.enabled=false")
	if cliexit.Code(err, false) != cliexit.Usage || !strings.Contains(errOut, "release gpu-operator: other values") {
		t.Errorf("changed plan without --yes: %v\n%s", err, errOut)
	}
}

func TestUpBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--stack", "helm"}, `--stack "helm": use operator or device-plugin`},
		{[]string{"--dry-run", "--yes"}, "--dry-run changes nothing"},
		{[]string{"--dry-run", "--junit", "x.xml"}, "--junit writes the run's report"},
		{[]string{"--max-unavailable", "0"}, "--max-unavailable must be at least 1"},
		{[]string{"--package-repo", "http://127.0.0.1:1/nvidia"}, "--package-repo and --package-key only go with --host-driver or --host-toolkit"},
		{[]string{"--host-toolkit=1.17.8; rm -rf /"}, "toolkit"},
		{[]string{"--mirror", "http://x"}, "mirror"},
		{[]string{"-o", "xml"}, "xml"},
		{[]string{"--gfd=false"}, "--gfd goes with --stack device-plugin"},
		{[]string{"--dcgm-exporter"}, "--dcgm-exporter goes with --stack device-plugin"},
		{[]string{"--stack", "device-plugin", "--replicas", "2"}, "--replicas and --rename go with --sharing"},
		{[]string{"--stack", "device-plugin", "--sharing", "mps"}, "--sharing mps needs --replicas of at least 2"},
		{[]string{"--stack", "device-plugin", "--dcgm-version", "4.8.2"}, "--dcgm-chart and --dcgm-version go with --dcgm-exporter"},
	} {
		w := newWorld(t)
		_, _, err := w.run(t, tc.args...)
		if cliexit.Code(err, false) != cliexit.Usage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want exit 2 with %q", tc.args, err, tc.want)
		}
		if rels, _ := w.releases.ListReleases(); len(rels) != 0 || w.applied != 0 {
			t.Errorf("%v changed something", tc.args)
		}
	}
}

// TestUpDevicePluginChoices: up's device-plugin stack takes device-plugin install's choices —
// GFD off, the DCGM exporter as its own release, time-slicing — and plans them.
func TestUpDevicePluginChoices(t *testing.T) {
	dpChart, dcgmChart := os.Getenv("KGPU_DEVICE_PLUGIN_CHART"), os.Getenv("KGPU_DCGM_EXPORTER_CHART")
	if dpChart == "" || dcgmChart == "" {
		t.Skip("KGPU_DEVICE_PLUGIN_CHART and KGPU_DCGM_EXPORTER_CHART are not set (.ci/run sets them from ../shared/testdata/charts)")
	}
	w := newWorld(t)
	w.chart, w.noOperator = dpChart, true
	out, errOut, err := w.run(t, "--stack", "device-plugin", "--gfd=false", "--dcgm-exporter", "--dcgm-chart", dcgmChart, "--sharing", "time-slicing", "--replicas", "4", "--dry-run", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	var plan up.Plan
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatal(err)
	}
	if len(plan.Releases) != 2 || plan.Releases[1].Release != "dcgm-exporter" {
		t.Fatalf("releases %+v", plan.Releases)
	}
	v := plan.Releases[0].Values
	if gfd, _ := v["gfd"].(map[string]any); gfd["enabled"] != false {
		t.Errorf("gfd = %v, want off", v["gfd"])
	}
	if cfg, _ := v["config"].(map[string]any); cfg["default"] != "time-slicing-4" {
		t.Errorf("config = %v, want the time-slicing-4 profile", v["config"])
	}
}
