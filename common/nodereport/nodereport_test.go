package nodereport

import (
	"encoding/json"
	"strings"
	"testing"
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
		{`{"apiVersion":"gpu.kubectl-gpu.io/v1alpha1","kind":"NodeReport","schemaVersion":2,"agentVersion":"v9.0.0"}`, "speaks report schema 2, this plugin schema 1"},
	} {
		if _, err := Parse([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.in, err, tc.want)
		}
	}
}
