package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDocsUpToDate fails when docs/commands differs from what the cobra tree generates:
// run `make docs`.
func TestDocsUpToDate(t *testing.T) {
	tmp := t.TempDir()
	if err := Generate(tmp); err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.Glob(filepath.Join(tmp, "*.md"))
	have, _ := filepath.Glob(filepath.Join("..", "..", "..", "docs", "commands", "*.md"))
	if len(want) != len(have) {
		t.Fatalf("docs/commands has %d pages, the commands make %d: run 'make docs'", len(have), len(want))
	}
	for _, w := range want {
		a, _ := os.ReadFile(w)
		b, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "commands", filepath.Base(w)))
		if err != nil || string(a) != string(b) {
			t.Errorf("docs/commands/%s is out of date: run 'make docs'", filepath.Base(w))
		}
	}
}
