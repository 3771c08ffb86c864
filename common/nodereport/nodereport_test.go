package nodereport

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
)

func TestParse(t *testing.T) {
	r := New("v1.2.3", "check")
	r.Add(CheckSwap, Fail, "swap is on", "swapoff")
	b, _ := json.Marshal(r)
	got, err := Parse(b)
	if err != nil || got.Ready() || got.AgentVersion != "v1.2.3" {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	for _, tc := range []struct{ in, want string }{
		{"segfault", "not a JSON report"},
		{`{"apiVersion":"v1","kind":"Pod"}`, "not a gpu.kubectl-gpu.io/v1alpha1 NodeReport"},
		{`{"apiVersion":"gpu.kubectl-gpu.io/v1alpha1","kind":"NodeReport","schemaVersion":3,"agentVersion":"v9.0.0"}`, "speaks report schema 3, this plugin schemas 1 to 2"},
		{`{"apiVersion":"gpu.kubectl-gpu.io/v1alpha1","kind":"NodeReport","schemaVersion":0,"agentVersion":"v0.0.1"}`, "speaks report schema 0, this plugin schemas 1 to 2"},
	} {
		if _, err := Parse([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.in, err, tc.want)
		}
	}
	// A schema 1 agent (an earlier release) is read, its XID actions written as phrases.
	old := `{"apiVersion":"gpu.kubectl-gpu.io/v1alpha1","kind":"NodeReport","schemaVersion":1,"agentVersion":"v0.1.0",
		"xids":[{"xid":48,"pci":"0000:08:00","message":"DBE","meaning":"double-bit ECC error","action":"drain and reset the GPU"},
		{"xid":13,"pci":"0000:08:00","message":"x","meaning":"app","action":"restart the application"}]}`
	got, err = Parse([]byte(old))
	if err != nil || len(got.XIDs) != 2 || got.XIDs[0].Action != remedy.ResetGPU || got.XIDs[1].Action != remedy.Restart {
		t.Errorf("schema 1: %v %+v", err, got)
	}
}
