package report

import (
	"bytes"
	"testing"
)

func TestProgress(t *testing.T) {
	var b bytes.Buffer
	p := NewProgress(&b)
	p.Count("1/2")
	p.Count("2/2") // within 100 ms of the last count: skipped
	p.Node("gpu-1: ready")
	p.Count("2/2") // a node line makes the next count show at once
	p.End()
	if got, want := b.String(), "\r\033[K1/2\r\033[Kgpu-1: ready\n\r\033[K2/2\r\033[K"; got != want {
		t.Fatalf("progress %q, want %q", got, want)
	}
	if OnTerminal(&b) != nil || IsTerminal(&b) {
		t.Fatal("a buffer is not a terminal")
	}
	var none *Progress
	none.Node("x") // nil progress: silent
}
