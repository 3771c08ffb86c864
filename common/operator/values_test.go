package operator

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/strvals"
	corev1 "k8s.io/api/core/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

func node(name, profile string, ann map[string]string) corev1.Node {
	n := nodefixtures.NodeObject(name, nodefixtures.Profiles[profile])
	for k, v := range ann {
		n.Annotations[k] = v
	}
	return *n
}

var hostStack = map[string]string{rep.AnnotationDriver: "550.127.08", rep.AnnotationToolkit: "1.17.4", rep.AnnotationNvidiaRuntime: "true"}

// TestDerive: the derived values and their reasons for each kind of cluster, as golden files.
func TestDerive(t *testing.T) {
	tests := []struct {
		name  string
		nodes []corev1.Node
	}{
		{"kubeadm-driver-container", []corev1.Node{node("a", "a100", nil), node("b", "a100", nil), node("cpu", "cpu", nil)}},
		{"kubeadm-host-driver", []corev1.Node{node("a", "a100", map[string]string{rep.AnnotationDriver: "550.127.08"}), node("b", "a100", map[string]string{rep.AnnotationDriver: "550.127.08"})}},
		{"kubeadm-host-stack", []corev1.Node{node("a", "a100", hostStack)}},
		{"rke2", []corev1.Node{node("r", "rke2", map[string]string{rep.AnnotationDriver: "570.86.15"})}},
		{"rke2-host-stack", []corev1.Node{node("r", "rke2", hostStack)}},
		{"k3s", []corev1.Node{node("k", "k3s", nil)}},
		{"mixed", []corev1.Node{node("a", "a100", map[string]string{rep.AnnotationDriver: "550.127.08"}), node("b", "a100", nil), node("r", "rke2", nil)}},
		{"no-gpu", []corev1.Node{node("cpu", "cpu", nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Derive(tt.nodes)
			doc := &helmrelease.ValuesDoc{TypeMeta: report.Meta(helmrelease.ValuesKind), Chart: "gpu-operator-v26.7.0", Values: helmrelease.Merge(&d, nil), Derived: d.Values, NodeLabels: d.NodeLabels, Warnings: d.Warnings}
			var b bytes.Buffer
			if err := doc.WriteText(&b); err != nil {
				t.Fatal(err)
			}
			for _, w := range d.Warnings {
				b.WriteString("# warning: " + w + "\n")
			}
			golden.Assert(t, "derive-"+tt.name+".golden", b.Bytes())
		})
	}
}

// TestUserWins: a --set value (parsed by Helm's own strvals) beats the derived one, and the
// reason says so.
func TestUserWins(t *testing.T) {
	d := Derive([]corev1.Node{node("a", "a100", hostStack)})
	user := map[string]any{}
	if err := strvals.ParseInto("driver.enabled=true,driver.version=570.86.15", user); err != nil {
		t.Fatal(err)
	}
	final := helmrelease.Merge(&d, user)
	b, _ := json.Marshal(final)
	if string(b) != `{"driver":{"enabled":true,"version":"570.86.15"},"toolkit":{"enabled":false}}` {
		t.Fatalf("final values %s", b)
	}
	for _, v := range d.Values {
		if v.Key == "driver.enabled" && (!v.Overridden || !strings.HasSuffix(v.Reason, "your value wins")) {
			t.Fatalf("derived entry %+v", v)
		}
		if v.Key == "toolkit.enabled" && v.Overridden {
			t.Fatal("toolkit.enabled was not set by the user")
		}
	}
}

func TestStaleKeys(t *testing.T) {
	chartDefaults := map[string]any{
		"operator":   map[string]any{"repository": "nvcr.io", "annotations": map[string]any{}},
		"toolkit":    map[string]any{"enabled": true, "env": []any{}},
		"driver":     map[string]any{"enabled": true},
		"daemonsets": map[string]any{"tolerations": []any{}},
	}
	user := map[string]any{}
	for _, s := range []string{
		"operator.defaultRuntime=containerd", // removed in v25.3.0
		"toolkit.env[0].name=CONTAINERD_SOCKET",
		"operator.annotations.team=ml", // free-form map
		"driver.enabled=false",
		"drivr.enabled=false", // a typo
	} {
		if err := strvals.ParseInto(s, user); err != nil {
			t.Fatal(err)
		}
	}
	got := helmrelease.StaleKeys(user, chartDefaults, ChartName, "v26.7.0")
	want := []string{
		"value drivr.enabled is not in chart gpu-operator v26.7.0 and will be ignored",
		"value operator.defaultRuntime was removed from the GPU Operator chart in v25.3.0 (the operator reads each node's containerRuntimeVersion); it is ignored",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
