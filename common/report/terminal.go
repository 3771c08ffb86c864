package report

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"
)

// IsTerminal tells whether a stream (stdin, stdout or stderr) is a terminal.
func IsTerminal(stream any) bool {
	f, ok := stream.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// OnTerminal returns w when it is a terminal and nil otherwise: live progress is for people
// at a terminal, never for a pipe or a log.
func OnTerminal(w io.Writer) io.Writer {
	if IsTerminal(w) {
		return w
	}
	return nil
}

// Progress shows a run over many nodes on a terminal: one line per node as it finishes,
// under which a live count is rewritten in place. With a nil writer it shows nothing.
type Progress struct {
	w    io.Writer
	last time.Time
}

// NewProgress returns a Progress writing to w (nil: silent).
func NewProgress(w io.Writer) *Progress { return &Progress{w: w} }

// Node prints a finished node's line above the live count.
func (p *Progress) Node(line string) {
	if p == nil || p.w == nil {
		return
	}
	fmt.Fprintf(p.w, "\r\033[K%s\n", line)
	p.last = time.Time{}
}

// Count rewrites the live count, at most ten times a second.
func (p *Progress) Count(text string) {
	if p == nil || p.w == nil || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(p.w, "\r\033[K%s", text)
}

// End clears the live count.
func (p *Progress) End() {
	if p != nil && p.w != nil {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
