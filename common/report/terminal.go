package report

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
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

// Confirm asks question on a terminal and returns nil for "y" or "yes". Not at a terminal
// it asks nothing and returns a usage error saying refusal (which should name --yes); an
// answer other than yes is a usage error saying that nothing was changed.
func Confirm(in io.Reader, out io.Writer, question, refusal string) error {
	if !IsTerminal(in) {
		return cliexit.Usagef("%s", refusal)
	}
	return ConfirmFrom(in, out, question)
}

// ConfirmFrom asks question on out and reads the answer from in, wherever they are.
func ConfirmFrom(in io.Reader, out io.Writer, question string) error {
	fmt.Fprintf(out, "%s [y/N] ", question)
	answer, _ := bufio.NewReader(in).ReadString('\n')
	if a := strings.TrimSpace(strings.ToLower(answer)); a != "y" && a != "yes" {
		return cliexit.Usagef("not confirmed: nothing was changed")
	}
	return nil
}

// Removed returns what a --cleanup prints: with the count of what it removed, a line on w
// saying so; with an error, the error.
func Removed(w io.Writer, what, ns string) func(n int, err error) error {
	return func(n int, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "removed %d %s from namespace %s\n", n, what, ns)
		return nil
	}
}
