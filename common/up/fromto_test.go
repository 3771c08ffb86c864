package up

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// TestFromTo (plan reports written here, the API a fake clientset; test/up covers the real
// apt and API server): a node on driver 570 planned onto the 580 branch shows 570 → 580 (the
// version apt resolved, its revision dropped), and the values are derived from the new
// driver; a node already at the target shows nothing; the drain's GPU pods are listed with
// the budgets over them, DaemonSet pods and pods without GPUs left out.
func TestFromTo(t *testing.T) {
	upgrade := rep.New("v0", rep.ModePlan)
	upgrade.DriverVersion, upgrade.ToolkitVersion = "570.86.15", "1.17.4-1"
	upgrade.Changes = []rep.Change{
		{Check: rep.CheckDriver, Packages: []rep.Package{{Name: "linux-modules-nvidia-580-server-6.8.0-51-generic", Version: "6.8.0-51.52+1"},
			{Name: "nvidia-headless-no-dkms-580-server", Version: "580.95.05-0ubuntu0.24.04.1", Replaces: "570.86.15-0ubuntu0.24.04.1"}}},
		{Check: rep.CheckToolkit, Packages: []rep.Package{{Name: "nvidia-container-toolkit", Version: "1.17.8-1"}}},
	}
	got := versionChanges(upgrade, "580")
	if len(got) != 2 || got[0].String() != "driver 570.86.15 → 580.95.05" || got[0].Back != "--host-driver=570.86.15" || got[1].String() != "toolkit 1.17.4-1 → 1.17.8" || got[1].Back != "" {
		t.Errorf("versions %v", got)
	}
	current := rep.New("v0", rep.ModePlan)
	current.DriverVersion = "580.95.05"
	if v := versionChanges(current, "580"); len(v) != 0 {
		t.Errorf("a node at the target: %v", v)
	}
	exp := Expected([]corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: map[string]string{rep.AnnotationDriver: "570.86.15"}}}}, map[string]*rep.Report{"n": upgrade}, "580")
	if d := exp[0].Annotations[rep.AnnotationDriver]; d != "580.95.05" {
		t.Errorf("values derived from driver %q, want the new 580.95.05", d)
	}

	gpu := func(name string, labels map[string]string, owner string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ml", Labels: labels}, Spec: corev1.PodSpec{NodeName: "n",
			Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("2")}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if owner != "" {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: owner, Name: "x"}}
		}
		return p
	}
	cpu := gpu("web", map[string]string{"app": "train"}, "")
	cpu.Spec.Containers[0].Resources = corev1.ResourceRequirements{}
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "train-pdb", Namespace: "ml"},
		Spec:   policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "train"}}},
		Status: policyv1.PodDisruptionBudgetStatus{DisruptionsAllowed: 0}}
	cs := fake.NewSimpleClientset(gpu("train-0", map[string]string{"app": "train"}, "StatefulSet"), gpu("plugin", nil, "DaemonSet"), cpu, pdb)
	ev, err := evictions(context.Background(), cs, []string{"n"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ev["n"]) != 1 || ev["n"][0].Pod != "ml/train-0" || ev["n"][0].GPUs != 2 || len(ev["n"][0].Budgets) != 1 || ev["n"][0].Budgets[0] != "PodDisruptionBudget ml/train-pdb allows 0" {
		t.Errorf("evictions %+v", ev)
	}

	p := &Plan{Nodes: []NodePlan{{Node: "n", Versions: got, Reboot: "driver", Evicts: ev["n"]}, {Node: "m"}}}
	var b bytes.Buffer
	p.writeFromTo(&b)
	want := "\n== from → to\n  n: driver 570.86.15 → 580.95.05, toolkit 1.17.4-1 → 1.17.8, rebooted\n" +
		"    back: the same command with --host-driver=570.86.15 reinstalls driver 570.86.15, pinned\n" +
		"    evicts ml/train-0 (2 GPUs): PodDisruptionBudget ml/train-pdb allows 0\n"
	if b.String() != want {
		t.Errorf("text:\n%s\nwant:\n%s", b.String(), want)
	}
	if strings.Contains(b.String(), "  m:") {
		t.Error("a node with nothing moving is listed")
	}
}

// TestOperatorDriver: an upgrade whose values move driver.version shows the operator's
// driver from the deployed version to the new one; the chart's default counts where the
// values say nothing; the same version, or the driver container off, show nothing.
func TestOperatorDriver(t *testing.T) {
	chart := map[string]any{"driver": map[string]any{"enabled": true, "version": "580.95.05"}}
	old := map[string]any{"driver": map[string]any{"version": "570.172.08"}}
	if d := operatorDriver(old, chart, map[string]any{}, chart); d == nil || d.String() != "operator driver 570.172.08 → 580.95.05" {
		t.Errorf("move: %v", d)
	}
	if d := operatorDriver(map[string]any{}, chart, map[string]any{}, chart); d != nil {
		t.Errorf("same version: %v", d)
	}
	if d := operatorDriver(old, chart, map[string]any{"driver": map[string]any{"enabled": false}}, chart); d != nil {
		t.Errorf("driver container off: %v", d)
	}
}
