package hostconfig

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// interrupting runs the fixture's commands and cancels the run (as Ctrl-C or the agent's pod
// deleted does: SIGTERM to the agent) while the first command that contains at runs.
type interrupting struct {
	*hostconfigtest.Chroot
	at     string
	cancel context.CancelFunc
	once   sync.Once
}

func (i *interrupting) Run(ctx context.Context, argv ...string) (string, error) {
	if strings.Contains(strings.Join(argv, " "), i.at) {
		i.once.Do(func() { time.AfterFunc(20*time.Millisecond, i.cancel) })
	}
	return i.Chroot.Run(ctx, argv...)
}

func (f *aptFixture) interrupted(t *testing.T, at string) (*rep.Report, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := &interrupting{Chroot: f.run, at: at, cancel: cancel}
	return Run(ctx, f.host, Options{Mode: ModeApply, Node: "n1", Arch: "amd64", Install: Install{ToolkitVersion: "1.17.8", Repo: f.repo.URL()}, Runner: run})
}

// dpkgClean fails the test when dpkg has work left half done: a journal entry, or a package
// not fully installed.
func (f *aptFixture) dpkgClean(t *testing.T) {
	t.Helper()
	if left, _ := filepath.Glob(filepath.Join(f.root, "var/lib/dpkg/updates/[0-9]*")); len(left) > 0 {
		t.Errorf("dpkg's journal has unfinished entries: %v", left)
	}
	if out, err := f.run.Run(context.Background(), "dpkg", "--audit"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("dpkg --audit: %v\n%s", err, out)
	}
}

// TestInstallInterrupted: an agent told to stop while the package manager runs lets it finish
// (killed mid-way, it would leave dpkg's work half done) and starts nothing after it, saying
// where it stopped; stopped during apt-get update, it installs nothing.
func TestInstallInterrupted(t *testing.T) {
	t.Run("during the install", func(t *testing.T) {
		f := newAptFixture(t)
		r, _ := f.interrupted(t, "install nvidia-container-toolkit")
		for _, n := range []string{"nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container1"} {
			if v := f.host.installedVersion(n, true); v != "1.17.8-1" {
				t.Errorf("%s installed %q, want 1.17.8-1: the install the agent started did not finish", n, v)
			}
		}
		if c, ok := installChange(r, rep.CheckToolkit); !ok || !c.Done {
			t.Errorf("the report does not say the install was done: %+v", r.Changes)
		}
		f.dpkgClean(t)
	})
	t.Run("during apt-get update", func(t *testing.T) {
		f := newAptFixture(t)
		_, err := f.interrupted(t, "update")
		if err == nil || !strings.Contains(err.Error(), "interrupted after apt-get update, before install NVIDIA Container Toolkit") {
			t.Errorf("error %v, want it to say where the run stopped", err)
		}
		if ranApt(f.run, "install") {
			t.Errorf("the install started after the interrupt: %v", f.run.Ran)
		}
		if v := f.host.installedVersion("nvidia-container-toolkit", true); v != "" {
			t.Errorf("toolkit %s installed after the interrupt", v)
		}
		f.dpkgClean(t)
	})
}

// TestInstallAfterDpkgInterrupted: a host whose dpkg was stopped mid-way (a crash, a power
// loss, an earlier package manager killed: its journal has a package half configured) is
// finished first, as apt asks (dpkg --configure -a), said in the report, then installed.
func TestInstallAfterDpkgInterrupted(t *testing.T) {
	f := newAptFixture(t)
	ctx := context.Background()
	// A package whose configuration was cut short: installed, then dpkg's journal says it
	// is half configured, as dpkg writes it before running the package's postinst.
	if err := hostconfigtest.DpkgInstall(ctx, f.root, hostconfigtest.StandIn{Name: "kgpu-test-halfdone", Version: "1.0"}); err != nil {
		t.Fatal(err)
	}
	status, err := f.run.Run(ctx, "dpkg-query", "-s", "kgpu-test-halfdone")
	if err != nil {
		t.Fatal(err)
	}
	journal := strings.Replace(status, "Status: install ok installed", "Status: install ok half-configured", 1)
	if err := os.WriteFile(filepath.Join(f.root, "var/lib/dpkg/updates/0001"), []byte(strings.TrimSpace(journal)+"\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := f.run.Run(ctx, "apt-get", "-q", "-y", "install", "kgpu-test-halfdone"); err == nil || !dpkgInterrupted.MatchString(out) {
		t.Fatalf("the fixture is not what apt calls interrupted: %v\n%s", err, out)
	}

	r, err := f.agent(t, ModeApply, Install{ToolkitVersion: "1.17.8"})
	if err != nil {
		t.Fatalf("apply: %v\n%+v", err, r.Changes)
	}
	var fixed bool
	for _, c := range r.Changes {
		fixed = fixed || strings.Join(c.Command, " ") == strings.Join(DpkgConfigure, " ") && c.Done && strings.Contains(c.Note, "dpkg was interrupted by an earlier run")
	}
	if !fixed {
		t.Errorf("the report does not say dpkg's work was finished first: %+v", r.Changes)
	}
	if v := f.host.installedVersion("nvidia-container-toolkit", true); v != "1.17.8-1" {
		t.Errorf("toolkit installed %q, want 1.17.8-1", v)
	}
	if v := f.host.installedVersion("kgpu-test-halfdone", true); v != "1.0" {
		t.Errorf("the half-configured package is %q after the run, want 1.0 configured", v)
	}
	f.dpkgClean(t)
}
