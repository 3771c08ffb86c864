// Package cliexit carries a process exit code inside an error, so that commands return
// errors and only main decides how the process ends.
//
// The codes are the documented ones: 0 success, 1 the command ran and found failures,
// 2 usage or configuration error, 130 interrupted.
package cliexit

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Exit codes of every kubectl-gpu command.
const (
	OK          = 0
	Failures    = 1
	Usage       = 2
	Interrupted = 130
)

// Error is an error with the exit code the process should end with.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit code %d", e.Code)
	}
	return e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// WithCode wraps err so that the process exits with code. A nil err stays nil.
func WithCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// Usagef is a usage or configuration error (exit 2).
func Usagef(format string, args ...any) error {
	return &Error{Code: Usage, Err: fmt.Errorf(format, args...)}
}

// Failuresf reports that the command ran and found failures (exit 1).
func Failuresf(format string, args ...any) error {
	return &Error{Code: Failures, Err: fmt.Errorf(format, args...)}
}

// ErrInterrupted is returned when the user interrupted the command.
var ErrInterrupted = &Error{Code: Interrupted, Err: errors.New("interrupted")}

// InterruptedOr is ErrInterrupted when ctx ended (a Ctrl-C is why err happened), else err.
func InterruptedOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ErrInterrupted
	}
	return err
}

// Silent marks an error whose message was already printed (for example a report that
// listed every failure): main exits with its code and prints nothing more. A report that
// was printed keeps its code after a Ctrl-C: the run was complete.
type Silent struct{ Code int }

func (s Silent) Error() string { return fmt.Sprintf("exit code %d", s.Code) }

// Code returns the exit code for err. interrupted tells whether the command's context was
// cancelled by a signal: any error then means 130, whatever it surfaced as, except a Silent
// one (the report was printed whole, so its own code stands: the Ctrl-C contract is
// "before the report is complete: 130 and nothing on stdout; after: the report and its
// code").
func Code(err error, interrupted bool) int {
	if err == nil {
		return OK
	}
	var s Silent
	if errors.As(err, &s) {
		return s.Code
	}
	if interrupted {
		// Whatever the error surfaced as (a request cut short can look like an unreachable
		// cluster), the run ended because the user stopped it.
		return Interrupted
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Failures
}

// IsSilent tells whether err's message was already shown to the user.
func IsSilent(err error) bool {
	var s Silent
	return errors.As(err, &s)
}

// OneLine makes a message one line (errors, logs and events quoted in a one-line error):
// its lines, trimmed, empty ones left out, joined by "; ".
func OneLine(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}

// OneLineCut is OneLine cut at max bytes, with "…" (a pod's message quoted in a table
// cell).
func OneLineCut(s string, max int) string {
	s = OneLine(s)
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
