package nodereport

import (
	"strings"
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
)

// TestFactsRoundTrip: what prep writes on a node is what every reader reads back; an
// unknown fact is removed from the node, not left as an older value.
func TestFactsRoundTrip(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 500, time.FixedZone("x", 3600))
	r := &Report{Flavour: FlavourKubeadm, DriverVersion: "580.95.05", ToolkitVersion: "1.17.8", NvidiaRuntime: true,
		ContainerdConfigVersion: 3, DefaultRuntime: "nvidia", CDI: true,
		GPUs: []GPU{{PCIAddress: "0000:07:00.0", UUID: "GPU-a", MIG: "disabled", ECCUncorrectable: 3}, {PCIAddress: "0000:0f:00.0", UUID: "GPU-b", MIG: "enabled"}}}
	want := FactsOf(r, now)
	if want.GPUs != 2 || want.MIG != "enabled" || want.GPUHealth != remedy.ResetGPU || !strings.Contains(want.GPUHealthDetail, "3 uncorrectable ECC errors") {
		t.Fatalf("facts of the report: %+v", want)
	}
	got, ok := FactsFrom(stringMap(t, want.Annotations()))
	if !ok || got != want {
		t.Errorf("read back %+v (reported %v), want %+v", got, ok, want)
	}

	// No driver, an unknown flavour, healthy or unseen GPUs: those keys go.
	bare := FactsOf(&Report{Flavour: FlavourUnknown, GPUs: []GPU{{PCIAddress: "0000:07:00.0"}}}, now)
	a := bare.Annotations()
	for _, k := range []string{AnnotationFlavour, AnnotationDriver, AnnotationDriverInstalled, AnnotationToolkit, AnnotationContainerdConfigVersion, AnnotationMIG, AnnotationGPUHealth, AnnotationGPUHealthDetail} {
		if v, set := a[k]; !set || v != nil {
			t.Errorf("%s = %v (set %v); want removed (null in the merge patch)", k, v, set)
		}
	}
	if got, ok := FactsFrom(stringMap(t, a)); !ok || got.GPUs != 1 || got.DriverVersion != "" || got.NvidiaRuntime || got.GPUHealth != remedy.Unknown {
		t.Errorf("bare node read back %+v (%v)", got, ok)
	}
	// A node an earlier release annotated ("ok", "warn") reads as the same steps.
	for v, want := range map[string]remedy.Action{"ok": remedy.None, "warn": remedy.Watch, "reset": remedy.ResetGPU, "service": remedy.Service} {
		if got, _ := FactsFrom(map[string]string{AnnotationGPUHealth: v}); got.GPUHealth != want {
			t.Errorf("gpu-health %q read as %q, want %q", v, got.GPUHealth.Token(), want.Token())
		}
	}
	// A driver package installed with no driver loaded (a module that did not load) is a
	// fact; with its driver loaded it is not (the loaded version says it).
	notLoaded := FactsOf(&Report{DriverPackage: "580.95.05"}, now)
	if got, _ := FactsFrom(stringMap(t, notLoaded.Annotations())); got.DriverInstalled != "580.95.05" || got.DriverVersion != "" {
		t.Errorf("a driver installed, not loaded: read back %+v", got)
	}
	if a := FactsOf(&Report{DriverPackage: "580.95.05", DriverVersion: "580.95.05"}, now).Annotations(); a[AnnotationDriverInstalled] != nil {
		t.Errorf("a driver loaded: %s = %v, want removed", AnnotationDriverInstalled, a[AnnotationDriverInstalled])
	}
	if _, ok := FactsFrom(map[string]string{AnnotationDriver: "580.95.05"}); ok {
		t.Error("a node prep never reported on reads as reported")
	}
	long := FactsOf(&Report{GPUs: []GPU{{PCIAddress: "0000:07:00.0", UUID: "GPU-a", ECCUncorrectable: 1, Slowdown: []string{strings.Repeat("x", 3000)}}}}, now)
	if len(long.GPUHealthDetail) > maxDetail {
		t.Errorf("detail of %d bytes, want at most %d", len(long.GPUHealthDetail), maxDetail)
	}
}

func stringMap(t *testing.T, a map[string]any) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range a {
		switch v := v.(type) {
		case nil:
		case string:
			out[k] = v
		default:
			t.Fatalf("%s is a %T, not a string an annotation can hold", k, v)
		}
	}
	return out
}
