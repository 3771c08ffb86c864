package hostconfig

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// Fault tests of the host edits, on the Ubuntu 22.04 kubeadm fake root (apply writes its
// containerd config, fstab, modules, sysctl and nouveau files). Faults are injected at each
// step of each write (hostconfig's fault hook); the files are real files on disk.

func applyRoot(t *testing.T, root string) ([]rep.Change, error) {
	t.Helper()
	r, err := Run(context.Background(), &Host{Root: root}, Options{Mode: ModeApply, AgentVersion: "test", Runner: &Recorder{}})
	if r == nil {
		return nil, err
	}
	return r.Changes, err
}

// edited returns the files apply writes on a fresh root, with their old and new contents.
func edited(t *testing.T) (paths []string, old, new map[string]string) {
	t.Helper()
	root := fakeRoot(t, "ubuntu2204-kubeadm", 1)
	old, new = map[string]string{}, map[string]string{}
	changes, err := applyRoot(t, root)
	if err != nil {
		t.Fatal(err)
	}
	fresh := fakeRoot(t, "ubuntu2204-kubeadm", 1)
	for _, c := range changes {
		if c.File == "" {
			continue
		}
		paths = append(paths, c.File)
		b, _ := os.ReadFile(filepath.Join(fresh, c.File))
		old[c.File] = string(b)
		b, _ = os.ReadFile(filepath.Join(root, c.File))
		new[c.File] = string(b)
	}
	if len(paths) < 3 {
		t.Fatalf("apply writes only %v: the fault tests need several files", paths)
	}
	return paths, old, new
}

func listFiles(t *testing.T, root string) []string {
	var l []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			l = append(l, strings.TrimPrefix(p, root))
		}
		return nil
	})
	sort.Strings(l)
	return l
}

// TestCrashAtEveryStep: a crash at every step of every write leaves each file whole, old or
// new (checked on disk at the moment of the crash and after), backups hold the old content,
// a crash while staging changes nothing, and a second apply finishes the job.
func TestCrashAtEveryStep(t *testing.T) {
	paths, old, new := edited(t)
	crash := errors.New("simulated crash")
	for _, target := range paths {
		for _, step := range Steps {
			t.Run(strings.TrimPrefix(target, "/")+"@"+step, func(t *testing.T) {
				root := fakeRoot(t, "ubuntu2204-kubeadm", 1)
				whole := func(when string) {
					for _, p := range paths {
						b, err := os.ReadFile(filepath.Join(root, p))
						got := string(b)
						if errors.Is(err, os.ErrNotExist) {
							got = ""
						}
						if got != old[p] && got != new[p] {
							t.Fatalf("%s: %s is neither the old nor the new content:\n%s", when, p, got)
						}
					}
					baks, _ := filepath.Glob(filepath.Join(root, "etc", "**", "*.bak"))
					more, _ := filepath.Glob(filepath.Join(root, "etc", "*.bak"))
					for _, b := range append(baks, more...) {
						p := strings.TrimPrefix(b[:strings.Index(b, ".kubectl-gpu-")], root)
						if c, _ := os.ReadFile(b); string(c) != old[p] && string(c) != "" {
							t.Fatalf("%s: backup %s does not hold the old %s", when, b, p)
						}
					}
				}
				fired := false
				fault = func(s, path string) error {
					if s == step && path == filepath.Join(root, target) {
						fired = true
						whole("at the crash")
						return crash
					}
					return nil
				}
				_, err := applyRoot(t, root)
				fault = nil
				if !fired {
					if step == StepBackup && old[target] == "" {
						return // a new file has no backup step
					}
					t.Fatalf("the %s step of %s never ran", step, target)
				}
				if !errors.Is(err, crash) {
					t.Fatalf("apply: %v, want the crash", err)
				}
				whole("after the crash")
				if staging := step != StepRename && step != StepCommitted; staging {
					for _, p := range paths {
						if b, _ := os.ReadFile(filepath.Join(root, p)); string(b) != old[p] {
							t.Fatalf("a crash while staging %s changed %s", target, p)
						}
					}
				}
				if _, err := applyRoot(t, root); err != nil {
					t.Fatalf("second apply: %v", err)
				}
				for _, p := range paths {
					if b, _ := os.ReadFile(filepath.Join(root, p)); string(b) != new[p] {
						t.Fatalf("after the second apply %s is not the new content:\n%s", p, b)
					}
				}
			})
		}
	}
}

// TestDiskFullAndReadOnly: ENOSPC while writing any file's new content, or EROFS at its
// first write, fails apply with the system's words and changes nothing: every file as it
// was, no backup or temporary file left.
func TestDiskFullAndReadOnly(t *testing.T) {
	paths, _, _ := edited(t)
	cases := []struct {
		name, step string
		err        error
		words      string
	}{
		{"disk full", StepTempWrite, syscall.ENOSPC, "no space left on device"},
		{"disk full at sync", StepTempSync, syscall.ENOSPC, "no space left on device"},
		{"read-only", StepTemp, syscall.EROFS, "read-only file system"},
	}
	for _, tc := range cases {
		for _, target := range paths {
			t.Run(tc.name+"/"+strings.TrimPrefix(target, "/"), func(t *testing.T) {
				root := fakeRoot(t, "ubuntu2204-kubeadm", 1)
				before := listFiles(t, root)
				contents := map[string]string{}
				for _, p := range before {
					b, _ := os.ReadFile(filepath.Join(root, p))
					contents[p] = string(b)
				}
				fault = func(s, path string) error {
					if s == tc.step && path == filepath.Join(root, target) {
						return tc.err
					}
					return nil
				}
				_, err := applyRoot(t, root)
				fault = nil
				if err == nil || !strings.Contains(err.Error(), tc.words) || !strings.Contains(err.Error(), target) || !strings.Contains(err.Error(), "nothing was changed") {
					t.Fatalf("apply: %v", err)
				}
				after := listFiles(t, root)
				if strings.Join(after, "\n") != strings.Join(before, "\n") {
					t.Fatalf("files left or removed:\nbefore %v\nafter  %v", before, after)
				}
				for _, p := range after {
					if b, _ := os.ReadFile(filepath.Join(root, p)); string(b) != contents[p] {
						t.Fatalf("%s changed", p)
					}
				}
			})
		}
	}
}
