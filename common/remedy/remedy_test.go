package remedy

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestLadderOrder: the steps go from the least to the most disruptive, so that the worst of
// several findings is the greatest.
func TestLadderOrder(t *testing.T) {
	order := []Action{Unknown, None, Watch, Configure, Restart, ResetGPU, Reboot, Service}
	for i := 1; i < len(order); i++ {
		if order[i-1] >= order[i] {
			t.Errorf("%q is not below %q", order[i-1].Token(), order[i].Token())
		}
	}
}

// TestText: JSON carries the token, a table the phrase, and every spelling an earlier release
// wrote (the health annotation's ok/warn, doctor's and the XID catalog's phrases) reads back as
// the same step.
func TestText(t *testing.T) {
	b, err := json.Marshal(struct{ A Action }{ResetGPU})
	if err != nil || string(b) != `{"A":"reset"}` {
		t.Fatalf("marshal: %s %v", b, err)
	}
	if ResetGPU.String() != "drain and reset the GPU" || Unknown.String() != "" || Unknown.Token() != "" {
		t.Errorf("phrases: %q %q %q", ResetGPU, Unknown, Unknown.Token())
	}
	for s, want := range map[string]Action{
		"ok": None, "warn": Watch, "reset": ResetGPU, "service": Service, "none": None,
		"restart the component": Restart, "restart the application": Restart, "drain and reset the GPU": ResetGPU,
		"service the hardware": Service, "reboot": Reboot, "configure": Configure, "": Unknown, "later-step": Unknown,
	} {
		var a Action
		if err := json.Unmarshal([]byte(`"`+s+`"`), &a); err != nil || a != want {
			t.Errorf("%q read as %q (%v), want %q", s, a.Token(), err, want.Token())
		}
	}
	for a := None; a <= Service; a++ {
		if Parse(a.Token()) != a || Parse(a.String()) != a {
			t.Errorf("%q does not read back", a.Token())
		}
	}
}

// TestFix: each hardware step has its one fix, naming the GPU and the node when given; the
// others have none (their fix names what to configure or restart).
func TestFix(t *testing.T) {
	for _, a := range []Action{Watch, ResetGPU, Reboot, Service} {
		if a.Fix("", "") == "" {
			t.Errorf("%q has no fix", a.Token())
		}
	}
	for _, a := range []Action{Unknown, None, Configure, Restart} {
		if f := a.Fix("", ""); f != "" {
			t.Errorf("%q has a fix: %q", a.Token(), f)
		}
	}
	f := ResetGPU.Fix("0000:08:00", "gpu-1")
	if !strings.Contains(f, "nvidia-smi -r -i 0000:08:00") || !strings.Contains(f, "kubectl gpu prep gpu-1 --apply --reboot") {
		t.Errorf("reset fix: %q", f)
	}
	if f := ResetGPU.Fix("", ""); strings.Contains(f, " -i ") || strings.Contains(f, "kubectl") {
		t.Errorf("reset fix names what it was not given: %q", f)
	}
}
