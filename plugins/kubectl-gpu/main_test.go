package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// TestInterrupts: the first Ctrl-C cancels the run and says it cleans up; the second
// aborts with exit 130 and says what may be left and how to go on (before, it exited
// without a word, after lines that promised a cleanup).
func TestInterrupts(t *testing.T) {
	sig := make(chan os.Signal, 2)
	var w strings.Builder // read only after a channel says the writes before it are done
	cancelled := make(chan struct{})
	exited := make(chan int, 1)
	go interrupts(sig, &w, func() { close(cancelled) }, func(code int) { exited <- code })
	sig <- os.Interrupt
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the first interrupt did not cancel the run")
	}
	if !strings.Contains(w.String(), "cleaning up (press Ctrl-C again to abort)") {
		t.Errorf("first interrupt said %q", w.String())
	}
	select {
	case code := <-exited:
		t.Fatalf("exited %d after one interrupt", code)
	case <-time.After(100 * time.Millisecond):
	}
	sig <- os.Interrupt
	select {
	case code := <-exited:
		if code != cliexit.Interrupted {
			t.Errorf("exit %d, want %d", code, cliexit.Interrupted)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the second interrupt did not abort")
	}
	for _, want := range []string{"aborted before the cleanup finished", "stay cordoned", "run the same command again"} {
		if !strings.Contains(w.String(), want) {
			t.Errorf("the abort does not say %q:\n%s", want, w.String())
		}
	}
}
