package prep

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// FuzzAgentOutput: whatever a prep pod's log holds (the agent's report line among other
// output, or garbage), reading it never panics; a report it accepts survives a JSON round
// trip unchanged and goes through the summary, the table, the findings and the changes.
func FuzzAgentOutput(f *testing.F) {
	golden, _ := filepath.Glob(filepath.Join("..", "hostconfig", "testdata", "check-*.golden"))
	for _, g := range golden {
		b, err := os.ReadFile(g)
		if err != nil {
			f.Fatal(err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, b); err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte("I1122 agent starting\n"), compact.Bytes()...))
	}
	f.Add([]byte(`{"apiVersion":"gpu.kubectl-gpu.io/v1alpha1","kind":"NodeReport","schemaVersion":2}`))
	f.Add([]byte(`{"apiVersion":"gpu.kubectl-gpu.io/v1alpha1","kind":"NodeReport","schemaVersion":1,"checks":[{"id":"swap","status":"bogus"}],"gpus":null}`))
	f.Add([]byte("{\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, log []byte) {
		r, err := rep.Parse(lastJSONLine(log))
		if err != nil {
			return // reported for the node as the agent's unreadable output
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		again, err := rep.Parse(b)
		if err != nil || !reflect.DeepEqual(r, again) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, r, again)
		}
		_ = r.Ready()
		doc := NewReport("check", []NodeResult{{Node: "n", Report: r}, {Node: "m", Error: "x"}})
		for _, fm := range []report.Format{report.Table, report.Wide, report.JSON, report.YAML} {
			if err := report.Print(io.Discard, fm, doc); err != nil {
				t.Fatal(err)
			}
		}
		doc.WriteFindings(io.Discard)
		doc.WriteChanges(io.Discard)
		_ = failureLine(doc.Items[0])
	})
}
