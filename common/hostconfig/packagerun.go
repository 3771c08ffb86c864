package hostconfig

// Carrying out a package plan: the repositories' keys fetched, the files and commands it
// makes, the package manager run under its lock, and the changes it reports.
import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// fetchKeys reads each repository's key: the one given, or the one the repository
// publishes.
func (p *packagePlan) fetchKeys(ctx context.Context, i Install) error {
	for _, rp := range p.repos {
		b := i.Key
		if len(b) == 0 {
			var err error
			if b, err = fetch(ctx, i.HTTP, rp.keyURL); err != nil {
				return fmt.Errorf("the %s's signing key: %w (pass the key with --package-key)", rp.name, err)
			}
		}
		ki, err := keyring(b)
		if err != nil {
			return fmt.Errorf("the %s's signing key from %s: %w", rp.name, rp.keyURL, err)
		}
		p.keys[rp.list] = ki
	}
	return nil
}

func fetch(ctx context.Context, c *http.Client, u string) ([]byte, error) {
	if c == nil {
		c = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s: %s", u, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// fileEdits are the repository files and keyrings to write.
func (p *packagePlan) fileEdits(h *Host) []fileEdit {
	var out []fileEdit
	for _, rp := range p.repos {
		ki := p.keys[rp.list]
		oldKey, _ := h.Read(rp.keyPath)
		if oldKey != string(ki.Binary) {
			out = append(out, fileEdit{check: rp.check, path: rp.keyPath, old: oldKey, content: string(ki.Binary), binary: true,
				note: fmt.Sprintf("%s signing key %s (binary keyring, as gpg --dearmor writes it)", rp.name, strings.Join(ki.Fingerprints, ", "))})
		}
		old, _ := h.Read(rp.list)
		if c := rp.content(rp.keyPath); c != old {
			out = append(out, fileEdit{check: rp.check, path: rp.list, old: old, content: c})
		}
	}
	return out
}

// command is one package manager command of a plan, and what it is for.
type command struct {
	argv []string
	what string
}

// commands are the install commands of the plan's steps.
func (p *packagePlan) commands() []command {
	var cmds []command
	if p.d.Apt {
		cmds = append(cmds, command{[]string{"apt-get", "-q", "update"}, "apt-get update"})
		for _, s := range p.steps {
			argv := []string{"env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y",
				"-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", "install"}
			if s.pin != "" {
				argv = append(argv, "--allow-downgrades") // a pinned version may be older than the installed one
			}
			cmds = append(cmds, command{append(argv, s.packages...), "install " + s.what})
		}
		return cmds
	}
	for _, s := range p.steps {
		if s.module != "" {
			cmds = append(cmds, command{append([]string{"dnf", "-y", "module", "install", s.module}, s.packages...), "install " + s.what})
			continue
		}
		cmds = append(cmds, command{append([]string{"dnf", "-y", "install"}, s.packages...), "install " + s.what})
	}
	return cmds
}

var lockHeld = regexp.MustCompile(`(?m)^E: (Could not get lock .*|Unable to acquire the dpkg frontend lock.*|Unable to lock directory .*)$`)

// dpkgInterrupted is apt's refusal after a dpkg that was stopped mid-way (a crash, a power
// loss, a package manager killed): dpkg's journal has changes it did not finish.
var dpkgInterrupted = regexp.MustCompile(`(?m)^E: dpkg was interrupted, you must manually run '([^']+)'`)

// DpkgConfigure finishes what an interrupted dpkg left half done, as apt asks.
var DpkgConfigure = []string{"env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "--configure", "-a", "--force-confdef", "--force-confold"}

// runLocked runs a package manager command, waiting while another process holds its lock
// (up to timeout); then the lock's holder is named. Once started, a command is not stopped by
// ctx (Ctrl-C, the agent's pod deleted): a package manager killed mid-way leaves dpkg's work
// half done, so it finishes (the apply pod's grace period, pkginstall.InstallGrace, leaves it the time)
// and the caller stops after it.
func runLocked(ctx context.Context, run Runner, timeout time.Duration, argv []string) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		out, err := run.Run(context.WithoutCancel(ctx), argv...)
		m := lockHeld.FindStringSubmatch(out)
		if err == nil || m == nil {
			return out, err
		}
		if time.Now().After(deadline) {
			return out, fmt.Errorf("the package manager is held by another process for more than %s: %s (nothing was installed by this step; run again when it is done)", timeout, m[1])
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// runManager runs a package manager command under its lock (runLocked). When apt refuses it
// because an earlier dpkg was stopped mid-way (this tool's or another's), dpkg's work is
// finished first as apt asks (DpkgConfigure, returned as a change, with its error when it
// failed) and the command runs once more.
func runManager(ctx context.Context, run Runner, lock time.Duration, argv []string, apt bool) (string, *rep.Change, error) {
	out, err := runLocked(ctx, run, lock, argv)
	m := dpkgInterrupted.FindStringSubmatch(out)
	if err == nil || m == nil || !apt {
		return out, nil, err
	}
	fix := &rep.Change{Check: rep.CheckToolkit, Command: DpkgConfigure, Note: "dpkg was interrupted by an earlier run: finish its work (" + m[1] + ")"}
	if fout, ferr := runLocked(ctx, run, lock, DpkgConfigure); ferr != nil {
		fix.Error = managerProblem(fout, ferr)
		return out, fix, err
	}
	fix.Done = true
	out, err = runLocked(ctx, run, lock, argv)
	return out, fix, err
}

// installChanges describes the plan's steps as report changes.
func (p *packagePlan) installChanges(res map[string][]resolved) []rep.Change {
	var out []rep.Change
	for _, s := range p.steps {
		c := rep.Change{Check: s.check, Note: "install " + s.what, Packages: res[s.check]}
		sort.Slice(c.Packages, func(i, j int) bool { return c.Packages[i].Name < c.Packages[j].Name })
		if s.note != "" {
			c.Note += "; " + s.note
		}
		if s.reboot {
			c.Note += "; a reboot is needed before it loads (--reboot rolls the nodes)"
		}
		out = append(out, c)
	}
	return out
}

// planDir makes the plan's private package-manager state under the host's /run (with the
// subdirectories dirs), so that a dry run leaves the host's own state untouched; done
// removes it.
func planDir(h *Host, dirs ...string) (tmp string, done func(), err error) {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp = "/run/kubectl-gpu-plan-" + hex.EncodeToString(rnd[:])
	done = func() { os.RemoveAll(h.Path(tmp)) }
	for _, d := range append([]string{""}, dirs...) {
		if err := os.MkdirAll(h.Path(path.Join(tmp, d)), 0o755); err != nil {
			done()
			return "", nil, fmt.Errorf("plan: %w", err)
		}
	}
	return tmp, done, nil
}
