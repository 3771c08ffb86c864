package cliexit

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestCode(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		interrupted bool
		want        int
	}{
		{"nil", nil, false, OK},
		{"plain error is a failure", errors.New("x"), false, Failures},
		{"usage", Usagef("bad"), false, Usage},
		{"wrapped usage", fmt.Errorf("ctx: %w", Usagef("bad")), false, Usage},
		{"failures", Failuresf("2 nodes failed"), false, Failures},
		{"silent", Silent{Code: Failures}, false, Failures},
		{"cancelled by a signal", fmt.Errorf("list: %w", context.Canceled), true, Interrupted},
		{"any error after a signal", errors.New("x"), true, Interrupted},
		{"a usage error after a signal (a request cut short looks unreachable)", Usagef("cannot list pods: the cluster is unreachable (context canceled)"), true, Interrupted},
		{"a report printed whole keeps its code after a signal", Silent{Code: Failures}, true, Failures},
		{"cancel without signal", context.Canceled, false, Failures},
	}
	for _, tt := range tests {
		if got := Code(tt.err, tt.interrupted); got != tt.want {
			t.Errorf("%s: Code = %d, want %d", tt.name, got, tt.want)
		}
	}
	if WithCode(Usage, nil) != nil {
		t.Error("WithCode(nil) must stay nil")
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{"": "", "a": "a", " a \n\n b\n": "a; b", "Error: x\n  caused by y\n": "Error: x; caused by y"} {
		if got := OneLine(in); got != want {
			t.Errorf("OneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInterruptedOr(t *testing.T) {
	err := errors.New("watch pods: connection refused")
	ctx, cancel := context.WithCancel(context.Background())
	if got := InterruptedOr(ctx, err); got != err {
		t.Fatalf("live context: %v", got)
	}
	cancel()
	if got := InterruptedOr(ctx, err); got != ErrInterrupted {
		t.Fatalf("after Ctrl-C: %v; want ErrInterrupted", got)
	}
}
