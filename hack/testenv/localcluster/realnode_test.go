package localcluster

import (
	"context"
	"strings"
	"testing"
)

// TestAddRealNodeNeedsRealNodeProcess: a program whose main (or TestMain) does not call
// RealNodeProcess cannot be a real node's init, so AddRealNode refuses before it starts
// anything, and says what to call.
func TestAddRealNodeNeedsRealNodeProcess(t *testing.T) {
	if realNodeProcess {
		t.Fatal("this test binary calls RealNodeProcess: the refusal cannot be seen")
	}
	_, err := (&Cluster{}).AddRealNode(context.Background(), RealNodeOptions{Name: "real-0"})
	if err == nil || !strings.Contains(err.Error(), "localcluster.RealNodeProcess()") {
		t.Fatalf("AddRealNode without RealNodeProcess: %v", err)
	}
}
