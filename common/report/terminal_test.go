package report

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// clock is a Progress clock the test moves.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestProgressLive(t *testing.T) {
	var b bytes.Buffer
	c := &clock{t: time.Unix(0, 0)}
	p := NewProgress(&b)
	p.now = c.now
	p.Count("1/2")
	c.t = c.t.Add(10 * time.Millisecond)
	p.Count("2/2") // within 100 ms of the last draw: not drawn yet
	if strings.Contains(b.String(), "2/2") {
		t.Fatalf("drawn within 100 ms: %q", b.String())
	}
	p.Node("gpu-1: failed") // a line that stays, above the block, with the count redrawn
	p.Status("roll-0", "draining", "2 pods left")
	p.Clear("roll-0")
	p.End()
	want := "\r\033[J1/2\n" + // the count
		"\033[1A\r\033[Jgpu-1: failed\n2/2\n" + // back up one line: the failure, then the count
		"\033[1A\r\033[Jroll-0: draining (2 pods left)\n2/2\n" + // the status above the count
		"\033[2A\r\033[J2/2\n" + // cleared
		"\033[1A\r\033[J" // ended
	if got := b.String(); got != want {
		t.Fatalf("progress\n%q\nwant\n%q", got, want)
	}
	if OnTerminal(&b) != nil || IsTerminal(&b) {
		t.Fatal("a buffer is not a terminal")
	}
	var none *Progress
	none.Node("x") // nil progress: silent
	none.Status("x", "y", "")
	NewProgress(nil).Status("x", "y", "z")
}

// TestProgressPlain: in a pipe a status is said when it changes, never twice within
// PlainEvery for a key; an unchanged state again after PlainHeartbeat; counts and node
// lines not at all.
func TestProgressPlain(t *testing.T) {
	var b bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	p := NewPlainProgress(&b)
	p.now = c.now
	p.Count("1/2")
	p.Node("gpu-1: failed")
	p.Status("roll-0", "draining", "3 pods left, 30s left")
	for i := 0; i < 20; i++ { // a second of updates: nothing new
		c.t = c.t.Add(50 * time.Millisecond)
		p.Status("roll-0", "draining", "2 pods left")
	}
	p.Status("roll-0", "blocked by budget web/web", "29s left") // changed, but too soon
	c.t = c.t.Add(PlainEvery)
	p.Status("roll-0", "blocked by budget web/web", "24s left") // now
	p.Status("roll-1", "rebooting", "")                         // another key: at once
	c.t = c.t.Add(PlainEvery)
	p.Status("roll-0", "blocked by budget web/web", "19s left") // same state: not again yet
	c.t = c.t.Add(PlainHeartbeat)
	p.Status("roll-0", "blocked by budget web/web", "0s left") // the heartbeat
	p.End()
	want := "roll-0: draining (3 pods left, 30s left)\n" +
		"roll-0: blocked by budget web/web (24s left)\n" +
		"roll-1: rebooting\n" +
		"roll-0: blocked by budget web/web (0s left)\n"
	if got := b.String(); got != want {
		t.Fatalf("plain progress\n%s\nwant\n%s", got, want)
	}
}

func TestTallyLine(t *testing.T) {
	p := NewPlainProgress(nil)
	ty := p.Tally("prep", 4)
	defer ty.Stop()
	t0 := time.Now()
	ty.Started("gpu-b")
	ty.Started("gpu-a")
	ty.started["gpu-a"] = t0.Add(-41 * time.Second) // started first
	ty.started["gpu-b"] = t0.Add(-3 * time.Second)
	ty.Finished("gpu-c", "")
	ty.Finished("gpu-d", "gpu-d: error: x")
	if got, want := ty.Line(t0), "prep: 2/4 finished: 1 ok, 1 failed; 2 waiting, longest gpu-a (41s)"; got != want {
		t.Fatalf("tally %q, want %q", got, want)
	}
}

// TestStreamOneWriter: a line written while the live block is drawn (the interrupt line, a
// warning) goes above the block, which is drawn again below it; the next draw moves up over
// the block's own lines only, so nothing stale stays and no line is wiped.
func TestStreamOneWriter(t *testing.T) {
	var b strings.Builder
	s := NewStream(&b)
	s.draw("", []string{"roll: 0/3 nodes done", "gpu-1: blocked (9m40s left)"})
	b.Reset()
	fmt.Fprintf(s, "\ninterrupt: cleaning up (press Ctrl-C again to abort)\n")
	want := "\033[2A\r\033[J\ninterrupt: cleaning up (press Ctrl-C again to abort)\nroll: 0/3 nodes done\ngpu-1: blocked (9m40s left)\n"
	if b.String() != want {
		t.Fatalf("write above the block:\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	s.draw("", nil) // the block ends
	if b.String() != "\033[2A\r\033[J" {
		t.Errorf("end: %q", b.String())
	}
	b.Reset()
	fmt.Fprint(s, "after\n")
	if b.String() != "after\n" {
		t.Errorf("a write with no block drawn: %q", b.String())
	}
	// A question (no newline) clears the block and leaves it off.
	s.draw("", []string{"x"})
	b.Reset()
	fmt.Fprint(s, "Apply? [y/N] ")
	if b.String() != "\033[1A\r\033[JApply? [y/N] " || s.lines != 0 {
		t.Errorf("question: %q (block lines %d)", b.String(), s.lines)
	}
	if NewStream(s) != s {
		t.Error("a stream wrapped twice")
	}
}
