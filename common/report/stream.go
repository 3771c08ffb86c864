package report

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// Stream is a command's stderr shared by its live progress and every other line of the run
// (a warning, a "labelled node …", the interrupt line): the one writer of the stream. A line
// written while a live block is drawn goes above the block, which is drawn again below it,
// so the block never miscounts its lines and no stale line stays. Safe for concurrent use.
type Stream struct {
	mu    sync.Mutex
	w     io.Writer
	block string // the live block as last drawn (its lines end in "\n")
	lines int    // the lines of the block on the screen (0 when it is not drawn)
}

// NewStream returns the one writer of w. A *Stream is returned as it is.
func NewStream(w io.Writer) *Stream {
	if s, ok := w.(*Stream); ok {
		return s
	}
	return &Stream{w: w}
}

// Write writes b above the live block. A write that does not end a line (a question) clears
// the block and leaves it off until the progress draws it again.
func (s *Stream) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lines == 0 {
		return s.w.Write(b)
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\033[%dA\r\033[J", s.lines)
	out.Write(b)
	s.lines = 0
	if len(b) > 0 && b[len(b)-1] == '\n' {
		out.WriteString(s.block)
		s.lines = strings.Count(s.block, "\n")
	}
	if _, err := io.WriteString(s.w, out.String()); err != nil {
		return 0, err
	}
	return len(b), nil
}

// draw replaces the live block with lines, printing stay (when not empty) above it.
func (s *Stream) draw(stay string, lines []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out strings.Builder
	if s.lines > 0 {
		fmt.Fprintf(&out, "\033[%dA", s.lines)
	}
	out.WriteString("\r\033[J")
	if stay != "" {
		out.WriteString(stay + "\n")
	}
	var block strings.Builder
	for _, l := range lines {
		block.WriteString(l + "\n")
	}
	s.block, s.lines = block.String(), len(lines)
	out.WriteString(s.block)
	_, _ = io.WriteString(s.w, out.String())
}

// file is the terminal (or file) under the stream, if any.
func (s *Stream) file() (*os.File, bool) {
	f, ok := s.w.(*os.File)
	return f, ok
}
