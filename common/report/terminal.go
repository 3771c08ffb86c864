package report

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// IsTerminal tells whether a stream (stdin, stdout or stderr) is a terminal.
func IsTerminal(stream any) bool {
	if s, ok := stream.(*Stream); ok {
		f, ok := s.file()
		return ok && term.IsTerminal(int(f.Fd()))
	}
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
