package localcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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

// TestKeepLogs: a failed start keeps the cluster's directory after Stop and gives the tail
// of each log (before, Stop removed the logs the error named).
func TestKeepLogs(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "c", "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for i := 0; i < 30; i++ {
		lines = append(lines, fmt.Sprintf("line %d", i))
	}
	if err := os.WriteFile(filepath.Join(dir, "c", "logs", "kwok.log"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Dir: filepath.Join(dir, "c"), tempDir: true}
	tail := c.KeepLogs(5)
	if !strings.Contains(tail, "kwok.log (last 5 lines)") || !strings.Contains(tail, "line 29") || strings.Contains(tail, "line 24\n") {
		t.Errorf("tail:\n%s", tail)
	}
	c.Stop()
	if _, err := os.Stat(filepath.Join(dir, "c", "logs", "kwok.log")); err != nil {
		t.Errorf("the logs were removed: %v", err)
	}
}
