package operator

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

// sharingWorld: the demo nodes plus a MIG node, and the ClusterPolicy of an installed
// operator.
func sharingWorld(t *testing.T) *world {
	w := newWorld(t, nodefixtures.NodeObject("gpu-mig-0", nodefixtures.Profiles["mig"]))
	if _, err := w.dyn.Resource(gpusoftware.ClusterPolicyGVR).Create(context.Background(), policy("ready"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return w
}

func configMap(t *testing.T, w *world) *corev1.ConfigMap {
	t.Helper()
	cm, err := w.g.Client.CoreV1().ConfigMaps(op.DefaultNamespace).Get(context.Background(), op.DefaultSharingConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return cm
}

func TestSharingDryRunChangesNothing(t *testing.T) {
	w := sharingWorld(t)
	out, _, err := w.run(t, "sharing", "time-slicing", "--replicas", "4", "--dry-run")
	if err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "sharing.dry-run.golden", []byte(out))
	if configMap(t, w) != nil {
		t.Fatal("a dry run wrote the ConfigMap")
	}
	cp, _ := w.dyn.Resource(gpusoftware.ClusterPolicyGVR).Get(context.Background(), gpusoftware.ClusterPolicyName, metav1.GetOptions{})
	if _, ok := cp.Object["spec"]; ok {
		t.Fatal("a dry run patched the ClusterPolicy")
	}
}

// TestSharingWritesTheDevicePluginsConfig: the profile, read back strictly in the device
// plugin's config format; the ClusterPolicy points at it; per-node profiles label nodes.
func TestSharingWritesTheDevicePluginsConfig(t *testing.T) {
	w := sharingWorld(t)
	if _, _, err := w.run(t, "sharing", "time-slicing", "--replicas", "4"); err != nil {
		t.Fatal(err)
	}
	cm := configMap(t, w)
	if cm == nil {
		t.Fatal("no ConfigMap")
	}
	var cfg gpusoftware.DevicePluginConfig
	if err := yaml.UnmarshalStrict([]byte(cm.Data["time-slicing-4"]), &cfg); err != nil {
		t.Fatal(err)
	}
	ts := cfg.Sharing.TimeSlicing
	if cfg.Version != "v1" || ts == nil || cfg.Sharing.MPS != nil || len(ts.Resources) != 1 || ts.Resources[0].Name != "nvidia.com/gpu" || ts.Resources[0].Replicas != 4 || ts.RenameByDefault {
		t.Fatalf("config %+v", cfg)
	}
	cp, _ := w.dyn.Resource(gpusoftware.ClusterPolicyGVR).Get(context.Background(), gpusoftware.ClusterPolicyName, metav1.GetOptions{})
	dp := cp.Object["spec"].(map[string]any)["devicePlugin"].(map[string]any)["config"].(map[string]any)
	if dp["name"] != op.DefaultSharingConfigMap || dp["default"] != "time-slicing-4" {
		t.Fatalf("ClusterPolicy devicePlugin.config %v", dp)
	}

	// A per-node MPS profile on the RKE2 node, kept beside the first.
	out, _, err := w.run(t, "sharing", "mps", "--replicas", "2", "--rename", "-l", "kubernetes.io/hostname=gpu-rke2-0", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	cm = configMap(t, w)
	if err := yaml.UnmarshalStrict([]byte(cm.Data["mps-2"]), &cfg); err != nil || cfg.Sharing.MPS == nil || !cfg.Sharing.MPS.RenameByDefault || cm.Data["time-slicing-4"] == "" {
		t.Fatalf("mps profile %v %+v, data %v", err, cfg, cm.Data)
	}
	n, _ := w.g.Client.CoreV1().Nodes().Get(context.Background(), "gpu-rke2-0", metav1.GetOptions{})
	if n.Labels["nvidia.com/device-plugin.config"] != "mps-2" || !strings.Contains(out, `"nodeLabels": [`) {
		t.Fatalf("labels %v\n%s", n.Labels, out)
	}
}

func TestSharingRefusals(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sharing", "time-slicing", "--replicas", "0"}, "--replicas 0"},
		{[]string{"sharing", "time-slicing", "--replicas", "1"}, "at least 2"},
		{[]string{"sharing", "spatial", "--replicas", "2"}, `sharing strategy "spatial"`},
		{[]string{"sharing", "mps", "--replicas", "2"}, "MPS cannot share GPUs split with MIG (gpu-mig-0)"},
		{[]string{"sharing", "time-slicing", "--replicas", "2", "-l", "pool=none"}, `no GPU node matches "pool=none"`},
		{[]string{"mig", "all-1g.10gb"}, "-l SELECTOR is required"},
		{[]string{"mig", "all-9g.99gb", "-l", "kubernetes.io/hostname=gpu-mig-0"}, `MIG profile "all-9g.99gb" is not in ConfigMap`},
		{[]string{"mig", "all-1g.10gb", "-l", "pool=none"}, `no GPU node matches "pool=none"`},
	} {
		w := sharingWorld(t)
		if _, err := w.g.Client.CoreV1().ConfigMaps(op.DefaultNamespace).Create(context.Background(), migConfig(), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		w.g.Client.ClearActions()
		out, _, err := w.run(t, tc.args...)
		if cliexit.Code(err, false) != cliexit.Usage || out != "" || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: exit %d %v, stdout %q; want %q", tc.args, cliexit.Code(err, false), err, out, tc.want)
		}
		for _, a := range w.g.Client.Actions() {
			if v := a.GetVerb(); v != "get" && v != "list" {
				t.Errorf("%v: %s %s", tc.args, v, a.GetResource().Resource)
			}
		}
	}
}

// TestSharingWarnsAboutIgnoredKeys: a profile someone wrote with renameByDefault under
// flags, which the device plugin silently ignores.
func TestSharingWarnsAboutIgnoredKeys(t *testing.T) {
	w := sharingWorld(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: op.DefaultSharingConfigMap, Namespace: op.DefaultNamespace},
		Data: map[string]string{"handmade": "version: v1\nflags:\n  renameByDefault: true\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 2\n"}}
	if _, err := w.g.Client.CoreV1().ConfigMaps(op.DefaultNamespace).Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := w.run(t, "sharing", "time-slicing", "--replicas", "4", "--dry-run")
	if err != nil || !strings.Contains(errOut, "warning: profile handmade: flags.renameByDefault is not read by the device plugin (it belongs under sharing.timeSlicing or sharing.mps)") {
		t.Fatalf("%v\n%s", err, errOut)
	}
}

// migConfig is the MIG manager's default config, in part.
func migConfig() *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: op.MIGConfigMap, Namespace: op.DefaultNamespace},
		Data: map[string]string{"config.yaml": "version: v1\nmig-configs:\n  all-disabled:\n    - devices: all\n      mig-enabled: false\n  all-1g.10gb:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        1g.10gb: 7\n  all-balanced:\n    - devices: all\n      mig-enabled: true\n"}}
}

func TestMIG(t *testing.T) {
	w := sharingWorld(t)
	ctx := context.Background()
	if _, err := w.g.Client.CoreV1().ConfigMaps(op.DefaultNamespace).Create(ctx, migConfig(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The MIG manager: it reports the new layout's state once it sees the label.
	manager := func(state string) {
		go func() {
			for i := 0; i < 100; i++ {
				n, _ := w.g.Client.CoreV1().Nodes().Get(ctx, "gpu-mig-0", metav1.GetOptions{})
				if n.Labels["nvidia.com/mig.config"] != "all-balanced" && n.Labels["nvidia.com/mig.config.state"] == "" {
					n.Labels["nvidia.com/mig.config.state"] = state
					_, _ = w.g.Client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	manager("success")
	out, _, err := w.run(t, "mig", "all-1g.10gb", "-l", "kubernetes.io/hostname=gpu-mig-0", "--wait", "--timeout", "20s")
	if err != nil || out != "labelled node gpu-mig-0 nvidia.com/mig.config=all-1g.10gb: success\n" {
		t.Fatalf("%v %q", err, out)
	}
	n, _ := w.g.Client.CoreV1().Nodes().Get(ctx, "gpu-mig-0", metav1.GetOptions{})
	if n.Labels["nvidia.com/mig.config"] != "all-1g.10gb" {
		t.Fatalf("labels %v", n.Labels)
	}
	// The old layout's success does not count for the next one; the manager fails it.
	manager("failed")
	_, _, err = w.run(t, "mig", "all-disabled", "-l", "kubernetes.io/hostname=gpu-mig-0", "--wait", "--timeout", "20s")
	if cliexit.Code(err, false) != cliexit.Failures || !strings.Contains(err.Error(), "failed to apply all-disabled on gpu-mig-0") {
		t.Fatalf("a layout the manager failed: %v", err)
	}
}
