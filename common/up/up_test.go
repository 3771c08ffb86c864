package up

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
)

// TestExpected: the values are derived from the nodes as the host step leaves them — a
// planned driver and toolkit install count as a host driver and toolkit, so the operator's
// own are turned off; a node without a plan stays as it is.
func TestExpected(t *testing.T) {
	nodes := []corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "bare", Annotations: map[string]string{}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "runtime-only"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "unplanned", Annotations: map[string]string{rep.AnnotationDriver: "570.1"}}},
	}
	bare := rep.New("v0", rep.ModePlan)
	bare.Flavour, bare.GPUs = rep.FlavourKubeadm, []rep.GPU{{PCIAddress: "0000:07:00.0"}}
	bare.Changes = []rep.Change{
		{Check: rep.CheckDriver, Packages: []rep.Package{{Name: "nvidia-driver-580-server", Version: "580.95.05-0ubuntu1"}}},
		{Check: rep.CheckToolkit, Packages: []rep.Package{{Name: "libnvidia-container1", Version: "1.17.8-1"}, {Name: "nvidia-container-toolkit", Version: "1.17.8-1"}}},
	}
	runtimeOnly := rep.New("v0", rep.ModePlan)
	runtimeOnly.ToolkitVersion = "1.17.8-1"
	runtimeOnly.Changes = []rep.Change{{Check: rep.CheckNvidiaRuntime, File: "/etc/containerd/config.toml"}}
	got := Expected(nodes, map[string]*rep.Report{"bare": bare, "runtime-only": runtimeOnly}, "580")
	a := got[0].Annotations
	if a[rep.AnnotationDriver] != "580.95.05" || a[rep.AnnotationToolkit] != "1.17.8-1" || a[rep.AnnotationNvidiaRuntime] != "true" || a[rep.AnnotationGPUs] != "1" {
		t.Errorf("bare node after the host step: %v", a)
	}
	if a := got[1].Annotations; a[rep.AnnotationNvidiaRuntime] != "true" || a[rep.AnnotationDriver] != "" {
		t.Errorf("runtime-only node: %v", a)
	}
	if got[2].Annotations[rep.AnnotationDriver] != "570.1" {
		t.Errorf("an unplanned node changed: %v", got[2].Annotations)
	}
	if nodes[0].Annotations[rep.AnnotationDriver] != "" {
		t.Error("Expected changed the caller's nodes")
	}
	d := op.Derive(got[:1])
	var keys []string
	for _, v := range d.Values {
		keys = append(keys, v.Key+"="+strings.TrimSpace(strings.ToLower(fmtAny(v.Value))))
	}
	joined := strings.Join(keys, " ")
	if !strings.Contains(joined, "driver.enabled=false") || !strings.Contains(joined, "toolkit.enabled=false") {
		t.Errorf("derived from the expected node: %s", joined)
	}
}

func fmtAny(v any) string {
	if b, ok := v.(bool); ok {
		if b {
			return "true"
		}
		return "false"
	}
	s, _ := v.(string)
	return s
}

func TestDifferences(t *testing.T) {
	old := Record{Stack: StackOperator, Nodes: []string{"a", "b"}, Releases: []RecordRelease{{Release: "gpu-operator", Chart: "gpu-operator-v26.7.0", Values: "sha256:1"}}}
	if d := old.Differences(old); len(d) != 0 {
		t.Errorf("the same plan differs: %v", d)
	}
	n := Record{Stack: StackDevicePlugin, Nodes: []string{"b", "c"}, HostDriver: "580", Releases: []RecordRelease{{Release: "gpu-operator", Chart: "gpu-operator-v26.7.0", Values: "sha256:2"}, {Release: "x", Chart: "x-1"}}}
	got := strings.Join(old.Differences(n), "; ")
	for _, want := range []string{"stack: operator → device-plugin", "nodes added: c", "nodes no longer chosen: a", `host driver: "" → "580"`, "release gpu-operator: other values", "release x: new"} {
		if !strings.Contains(got, want) {
			t.Errorf("differences %q lack %q", got, want)
		}
	}
	steps := Record{Steps: []StepRecord{{Step: StepPrep, State: StateDone}, {Step: StepInstall, State: StateRunning}}}
	if u := steps.Unfinished(); u != StepInstall {
		t.Errorf("unfinished %q, want install", u)
	}
}

// TestDecisions: a host driver and toolkit install and a roll are said, with their reasons.
func TestDecisions(t *testing.T) {
	r := rep.New("v0", rep.ModePlan)
	r.Flavour = rep.FlavourRKE2
	r.Changes = []rep.Change{{Check: rep.CheckDriver}, {Check: rep.CheckToolkit}, {Check: rep.CheckNvidiaRuntime}}
	pp := &prep.Plan{Nodes: []string{"n"}, Roll: []string{"n"}}
	req := Request{Stack: StackOperator, Prep: prep.Request{RestartRuntime: true, Roll: &prep.RollOptions{MaxUnavailable: 2}}}
	var got []string
	for _, d := range decisions(req, pp, map[string]*rep.Report{"n": r}) {
		got = append(got, d.Decision+": "+d.Reason)
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{"driver.enabled=false", "toolkit.enabled=false", "1 node cordoned, drained, rebooted and uncordoned, at most 2 at a time", "containerd (rke2 / k3s) is restarted", "rke2's template"} {
		if !strings.Contains(all, want) {
			t.Errorf("decisions lack %q:\n%s", want, all)
		}
	}
}
