package hostconfigtest

import (
	"context"

	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ContainerdBin is where the local test environment keeps the containerd built at version
// (hack/testenv/build-tools.sh containerd), "" when it is not built.
func ContainerdBin(version string) string {
	dir := os.Getenv("KGPU_CACHE_DIR")
	if dir == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		dir = filepath.Join(base, "kubectl-gpu")
	}
	p := filepath.Join(dir, "bin", "containerd-"+version, "containerd")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// InstallContainerd puts the containerd binary at host path dst in the fake root (a hard
// link where the file systems allow, else a copy): the host's own containerd.
func InstallContainerd(root, bin, dst string) error {
	target := filepath.Join(root, dst)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	_ = os.Remove(target)
	if err := os.Link(bin, target); err == nil {
		return nil
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	return os.WriteFile(target, b, 0o755)
}

// ContainerdRunner runs the fake host's containerd for real, chrooted into the root (the
// binary is static), as the agent runs the host's containerd in the host's namespaces; every
// other command is recorded and not run (nothing touches this machine's kernel or services).
type ContainerdRunner struct {
	Root string
	mu   sync.Mutex
	// Recorded are the commands recorded, not run.
	Recorded [][]string
}

// Run runs argv.
func (c *ContainerdRunner) Run(ctx context.Context, argv ...string) (string, error) {
	if len(argv) > 0 && filepath.Base(argv[0]) == "containerd" {
		cmd := exec.CommandContext(ctx, "chroot", append([]string{c.Root}, argv...)...)
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("%v: %w: %s", argv, err, strings.TrimSpace(string(out)))
		}
		return string(out), nil
	}
	c.mu.Lock()
	c.Recorded = append(c.Recorded, argv)
	c.mu.Unlock()
	return "", nil
}

// Note is "": the judge's commands really run (the others are only recorded, which the
// tests that use this runner say).
func (c *ContainerdRunner) Note() string { return "" }

// StartDaemon starts the fake host's containerd daemon on config, chrooted, with a root,
// state directory and socket of its own under the root's /tmp, for what the loader alone
// cannot tell (2.x's `config dump` skips an import that is not there; its daemon refuses
// it). It returns the daemon's output when it exits within a few seconds (refused), and
// started true when it was still running then (it is killed at once, and its directories
// removed).
func (c *ContainerdRunner) StartDaemon(ctx context.Context, bin, config string) (out string, started bool) {
	if err := os.MkdirAll(filepath.Join(c.Root, "tmp"), 0o1777); err != nil {
		return err.Error(), false
	}
	dir, err := os.MkdirTemp(filepath.Join(c.Root, "tmp"), "containerd-")
	if err != nil {
		return err.Error(), false
	}
	defer os.RemoveAll(dir)
	in := "/tmp/" + filepath.Base(dir)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chroot", c.Root, bin, "--config", config, "--root", in+"/root", "--state", in+"/state", "--address", in+"/containerd.sock")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	b, _ := cmd.CombinedOutput()
	return string(b), ctx.Err() != nil
}
