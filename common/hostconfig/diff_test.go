package hostconfig

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gitApplyCheck checks patch against the files under root with git apply, as an admin
// would apply the plan by hand (paths are the host's: /etc/… is etc/… under root).
func gitApplyCheck(t *testing.T, root, patch string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git on this machine")
	}
	p := filepath.Join(t.TempDir(), "plan.patch")
	if err := os.WriteFile(p, []byte(patch), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("git", "apply", "--check", "-p1", p)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git apply --check: %v\n%s\npatch:\n%s", err, out, patch)
	}
}

// TestPlanDiffsApply: the agent's real plan on a kubeadm host (new files, changed files) is a
// patch git apply takes against the host's files, and a new file's diff is from /dev/null.
func TestPlanDiffsApply(t *testing.T) {
	root := fakeRoot(t, "ubuntu2204-kubeadm", 1)
	r, err := Run(context.Background(), &Host{Root: root}, Options{Mode: ModePlan, AgentVersion: "test", Runner: &Recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	var patch strings.Builder
	news, changed := 0, 0
	for _, c := range r.Changes {
		if c.Diff == "" {
			continue
		}
		patch.WriteString(c.Diff)
		if strings.HasPrefix(c.Diff, "--- /dev/null\n") {
			news++
			if !strings.Contains(c.Diff, "\n@@ -0,0 +1,") {
				t.Errorf("new file %s: %q", c.File, c.Diff)
			}
		} else {
			changed++
		}
	}
	if news == 0 || changed == 0 {
		t.Fatalf("the plan has %d new and %d changed files; the test wants both:\n%s", news, changed, patch.String())
	}
	gitApplyCheck(t, root, patch.String())
}

// TestDiffForms: new, changed, emptied, and a last line without a newline.
func TestDiffForms(t *testing.T) {
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"new", "", "a\nb\nc\n", "--- /dev/null\n+++ /etc/x.conf\n@@ -0,0 +1,3 @@\n+a\n+b\n+c\n"},
		{"changed", "a\nb\nc\nd\ne\nf\n", "a\nb\nc\nD\ne\nf\n", "--- /etc/x.conf\n+++ /etc/x.conf\n@@ -2,5 +2,5 @@\n b\n c\n-d\n+D\n e\n f\n"},
		{"emptied", "a\nb\n", "", "--- /etc/x.conf\n+++ /etc/x.conf\n@@ -1,2 +0,0 @@\n-a\n-b\n"},
		{"no newline", "a\nb", "a\nb\nc\n", "--- /etc/x.conf\n+++ /etc/x.conf\n@@ -1,2 +1,3 @@\n a\n-b\n\\ No newline at end of file\n+b\n+c\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Diff("/etc/x.conf", tc.old, tc.new)
			if d != tc.want {
				t.Fatalf("diff\n%q\nwant\n%q", d, tc.want)
			}
			root := t.TempDir()
			if tc.old != "" {
				if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(root, "etc", "x.conf"), []byte(tc.old), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			gitApplyCheck(t, root, d)
		})
	}
}

// TestFixThatDidNotTake: a host where the fixing commands run but change nothing (the
// recorder runs nothing): the re-check says what ran and that it did not take, and what to
// look at, never the same "--apply fixes it" again.
func TestFixThatDidNotTake(t *testing.T) {
	root := fakeRoot(t, "ubuntu2204-kubeadm", 1)
	r, err := Run(context.Background(), &Host{Root: root}, Options{Mode: ModeApply, AgentVersion: "test", Runner: &Recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, id := range []string{"kernel.modules", "sysctl", "swap"} {
		c, ok := r.Get(id)
		if !ok || c.Status != "fail" {
			continue
		}
		seen++
		if !strings.Contains(c.Message, "ran, and it did not take") || strings.Contains(c.Remediation, "--apply") {
			t.Errorf("%s: %q → %q; want what ran and that it did not take, without --apply again", id, c.Message, c.Remediation)
		}
	}
	if seen == 0 {
		t.Fatalf("no module, sysctl or swap check failed after the recorded fix: %+v", r.Checks)
	}
}
