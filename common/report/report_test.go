package report

import (
	"bytes"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestYAMLControlCharacters: strings with characters JSON leaves raw but YAML refuses
// (DEL, C1 controls, U+FFFF) still print as YAML, and read back as the same strings.
func TestYAMLControlCharacters(t *testing.T) {
	in := map[string]string{"os": "Ubuntu\x7f 22.04\u0085\u0080\u009f\u2028\u2029\uffff é"}
	var b bytes.Buffer
	if err := Print(&b, YAML, in); err != nil {
		t.Fatal(err)
	}
	var back map[string]string
	if err := yaml.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if back["os"] != in["os"] {
		t.Fatalf("read back %q, want %q", back["os"], in["os"])
	}
}
