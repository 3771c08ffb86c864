package deviceplugin

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

func gpuNode(name string, ann map[string]string) corev1.Node {
	a := map[string]string{rep.AnnotationGPUs: "4", flavour.AnnotationPrefix + "reported-at": "2026-12-06T10:00:00Z"}
	for k, v := range ann {
		a[k] = v
	}
	return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: a}}
}

func value(d []helmrelease.Derived, key string) (any, bool) {
	for _, v := range d {
		if v.Key == key {
			return v.Value, true
		}
	}
	return nil, false
}

// TestDeriveRuntimeAndCDI: the runtime class and CDI only when every GPU node agrees; a node
// prep found without the runtime is warned about, one never checked is not (the
// prerequisites name it).
func TestDeriveRuntimeAndCDI(t *testing.T) {
	ready := map[string]string{rep.AnnotationNvidiaRuntime: "true", rep.AnnotationDefaultRuntime: "runc", rep.AnnotationCDI: "true", rep.AnnotationToolkit: "1.17.8-1", rep.AnnotationDriver: "570.195.03"}
	old := map[string]string{rep.AnnotationNvidiaRuntime: "true", rep.AnnotationDefaultRuntime: "runc", rep.AnnotationCDI: "true", rep.AnnotationToolkit: "1.15.0-1", rep.AnnotationDriver: "570.195.03"}
	noRuntime := map[string]string{rep.AnnotationNvidiaRuntime: "false", rep.AnnotationToolkit: "1.17.8-1"}

	d := Derive([]corev1.Node{gpuNode("a", ready), gpuNode("b", ready)}, Facts{RuntimeClass: true}, Options{GFD: true})
	if v, _ := value(d.DevicePlugin.Values, "runtimeClassName"); v != "nvidia" {
		t.Errorf("runtimeClassName %v", v)
	}
	if v, _ := value(d.DevicePlugin.Values, "deviceListStrategy"); v != "cdi-cri" {
		t.Errorf("deviceListStrategy %v", v)
	}
	if d.CreateRuntimeClass != "" {
		t.Errorf("the RuntimeClass exists: %q", d.CreateRuntimeClass)
	}
	// A toolkit without nvidia-cdi-hook (before 1.16): no CDI strategy.
	d = Derive([]corev1.Node{gpuNode("a", ready), gpuNode("b", old)}, Facts{}, Options{GFD: true})
	if _, ok := value(d.DevicePlugin.Values, "deviceListStrategy"); ok {
		t.Error("CDI derived with a toolkit older than 1.16 on one node")
	}
	if d.CreateRuntimeClass == "" {
		t.Error("the missing RuntimeClass is to be created")
	}
	d = Derive([]corev1.Node{gpuNode("a", ready), gpuNode("b", noRuntime), gpuNode("c", nil)}, Facts{}, Options{GFD: true})
	if _, ok := value(d.DevicePlugin.Values, "runtimeClassName"); ok {
		t.Error("runtimeClassName derived though a node has no nvidia runtime")
	}
	if len(d.DevicePlugin.Warnings) != 1 || !strings.Contains(d.DevicePlugin.Warnings[0], "1 of 3 GPU nodes have no nvidia runtime in containerd (b)") {
		t.Errorf("warnings: %q", d.DevicePlugin.Warnings)
	}
	// nvidia as every node's default runtime: no RuntimeClass needed.
	def := map[string]string{rep.AnnotationNvidiaRuntime: "true", rep.AnnotationDefaultRuntime: "nvidia"}
	d = Derive([]corev1.Node{gpuNode("a", def)}, Facts{}, Options{GFD: true})
	if _, ok := value(d.DevicePlugin.Values, "runtimeClassName"); ok || d.CreateRuntimeClass != "" {
		t.Errorf("nvidia is the default runtime: %+v", d)
	}
}

func TestToolkitCDI(t *testing.T) {
	for v, want := range map[string]bool{"1.17.8-1": true, "1.16.0": true, "v1.16.2": true, "1.15.9-1": false, "2.0.0": true, "": false, "x.y": false, "1": false} {
		if got := toolkitCDI(v); got != want {
			t.Errorf("toolkitCDI(%q) = %v", v, got)
		}
	}
}

// TestPrerequisites: each reason, in node order; the operator's pre-installed label counts
// for the driver.
func TestPrerequisites(t *testing.T) {
	pre := gpuNode("pre", map[string]string{rep.AnnotationToolkit: "1.17.8-1", rep.AnnotationNvidiaRuntime: "true"})
	pre.Labels = map[string]string{inventory.LabelDeployDriver: "pre-installed"}
	never := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "never", Annotations: map[string]string{rep.AnnotationGPUs: "2"}}}
	got := Prerequisites([]corev1.Node{
		gpuNode("ok", map[string]string{rep.AnnotationDriver: "570", rep.AnnotationToolkit: "1.17.8-1", rep.AnnotationNvidiaRuntime: "true"}),
		pre, never,
		gpuNode("noruntime", map[string]string{rep.AnnotationDriver: "570", rep.AnnotationToolkit: "1.17.8-1", rep.AnnotationNvidiaRuntime: "false"}),
		gpuNode("bare", nil),
	})
	want := map[string]string{
		"bare":      "no host driver ('kubectl gpu prep bare --apply --install-driver'); no NVIDIA Container Toolkit ('kubectl gpu prep bare --apply --install-toolkit')",
		"never":     "not checked yet: run 'kubectl gpu prep never'",
		"noruntime": "containerd has no nvidia runtime ('kubectl gpu prep noruntime --apply')",
	}
	if len(got) != len(want) {
		t.Fatalf("%+v", got)
	}
	for _, p := range got {
		if strings.Join(p.Reasons, "; ") != want[p.Node] {
			t.Errorf("%s: %q, want %q", p.Node, p.Reasons, want[p.Node])
		}
	}
}
