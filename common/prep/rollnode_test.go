package prep

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// The driver a roll installed is the one its check wants loaded after the reboot.
func TestDriverNotLoaded(t *testing.T) {
	apply := &rep.Report{DriverVersion: "570.195.03", Changes: []rep.Change{
		{Check: rep.CheckToolkit, Done: true, Packages: []rep.Package{{Name: "nvidia-container-toolkit", Version: "1.17.8-1"}}},
		{Check: rep.CheckDriver, Done: true, Packages: []rep.Package{
			{Name: "linux-modules-nvidia-580-server-6.8.0-51-generic", Version: "6.8.0-51.52+1"},
			{Name: "nvidia-headless-no-dkms-580-server", Version: "580.95.05-0ubuntu0.22.04.1", Replaces: "570.195.03-0ubuntu0.22.04.1"}}},
	}}
	driver, was := installedDriver(apply)
	if driver != "580.95.05" || was != "570.195.03" {
		t.Fatalf("installedDriver: %q, was %q; want 580.95.05, was 570.195.03", driver, was)
	}
	// Not done, failed, or no driver: nothing to want.
	for _, r := range []*rep.Report{nil, {Changes: []rep.Change{{Check: rep.CheckDriver, Packages: apply.Changes[1].Packages}}},
		{Changes: []rep.Change{{Check: rep.CheckDriver, Done: true, Error: "apt-get failed", Packages: apply.Changes[1].Packages}}}, {Changes: apply.Changes[:1]}} {
		if d, _ := installedDriver(r); d != "" {
			t.Errorf("installedDriver(%+v) = %q, want none", r, d)
		}
	}
	n := &nodeRoll{name: "gpu-0", st: RollState{Driver: driver, DriverWas: was}}
	for _, tc := range []struct {
		loaded, want, hint string
	}{
		{"580.95.05", "", ""},
		{"", "back after the reboot with no NVIDIA driver loaded, not the installed 580.95.05: its kernel module did not load", "--host-driver=570.195.03"},
		{"570.195.03", "with driver 570.195.03 loaded, not the installed 580.95.05", "the same command with --host-driver=570.195.03"},
	} {
		msg, hint := n.driverNotLoaded(&rep.Report{DriverVersion: tc.loaded})
		if tc.want == "" && msg != "" || !strings.Contains(msg, tc.want) || !strings.Contains(hint, tc.hint) {
			t.Errorf("loaded %q: %q, %q; want %q with a hint naming %q", tc.loaded, msg, hint, tc.want, tc.hint)
		}
	}
	// A roll that installed no driver checks none.
	if msg, _ := (&nodeRoll{}).driverNotLoaded(&rep.Report{}); msg != "" {
		t.Errorf("no driver installed: %q", msg)
	}
}

// A node's plan counts as changes to install again when it has packages to install or files
// to write: commands alone are what its reboot does.
func TestPlannedChanges(t *testing.T) {
	items := []NodeResult{
		{Node: "pkgs", Report: &rep.Report{Changes: []rep.Change{{Check: rep.CheckDriver, Packages: []rep.Package{{Name: "nvidia-headless-no-dkms-570-server", Version: "570.195.03"}}}}}},
		{Node: "file", Report: &rep.Report{Changes: []rep.Change{{Check: rep.CheckNouveau, File: "/etc/modprobe.d/blacklist-nouveau.conf"}}}},
		{Node: "command", Report: &rep.Report{Changes: []rep.Change{{Check: rep.CheckModules, Command: []string{"modprobe", "br_netfilter"}}}}},
		{Node: "done", Report: &rep.Report{Changes: []rep.Change{{Check: rep.CheckNouveau, File: "/etc/x", Done: true}}}},
		{Node: "failed", Error: "the agent stopped", Report: &rep.Report{Changes: []rep.Change{{Check: rep.CheckNouveau, File: "/etc/x"}}}},
		{Node: "none", Report: &rep.Report{}},
	}
	got := plannedChanges(items)
	if len(got) != 2 || !got["pkgs"] || !got["file"] {
		t.Errorf("plannedChanges: %v, want pkgs and file", got)
	}
}

// The roll's plan says where each node goes on: after the step an earlier run reached, or —
// past its install with changes to make again — installed and rebooted again for them.
func TestResumeAfter(t *testing.T) {
	node := func(name string, st RollState) *corev1.Node {
		b, _ := json.Marshal(st)
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{RollAnnotation: string(b)}}}
	}
	nodes := map[string]*corev1.Node{
		"back":     node("back", RollState{Phase: PhaseRebooted, Error: "back after the reboot with no NVIDIA driver loaded"}),
		"same":     node("same", RollState{Phase: PhaseRebooted}),
		"drained":  node("drained", RollState{Phase: PhaseDrained}),
		"finished": node("finished", RollState{Phase: PhaseDone}),
	}
	changed := map[string]bool{"back": true, "drained": true, "finished": true}
	for name, want := range map[string]Phase{"back": PhaseCordoned, "same": PhaseRebooted, "drained": PhaseDrained, "finished": ""} {
		if got := ResumeAfter(ReadRollState(nodes[name]), changed[name]); got != want {
			t.Errorf("%s: resumes after %q, want %q", name, got, want)
		}
	}
	var b strings.Builder
	writeRollPlan(&b, &Request{Roll: &RollOptions{MaxUnavailable: 1}}, []string{"back", "drained", "same"}, nodes, changed)
	for _, want := range []string{
		"back: installed again for the changes above and rebooted for them (an earlier run stopped after rebooted) (stopped there: back after the reboot",
		"drained: resumes after drained\n", "same: resumes after rebooted\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the roll's plan lacks %q:\n%s", want, b.String())
		}
	}
}
