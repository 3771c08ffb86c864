// Package pkgflags binds the host-package flags that prep and up share: the driver branch
// and toolkit version to install, a mirror of NVIDIA's repositories and its signing key.
// No command package imports another; they import this.
package pkgflags

import (
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/pkginstall"
)

// InstallTimeout is the time of each of prep's phases when packages are installed, unless
// the user set it: a DKMS build alone can take minutes.
const InstallTimeout = 20 * time.Minute

// Packages are the flags' values.
type Packages struct {
	Driver, Toolkit, Repo, KeyFile string

	driverFlag, toolkitFlag string
}

// Names are a command's names and words for the flags.
type Names struct {
	Driver, Toolkit         string // the flags' names (install-driver, host-driver…)
	DriverHelp, ToolkitHelp string
	RepoHelp, KeyHelp       string
}

// Bind binds the flags onto p. The driver and toolkit flags may be given without a value:
// the default branch, the repository's latest version.
func (p *Packages) Bind(fl *pflag.FlagSet, n Names) {
	p.driverFlag, p.toolkitFlag = n.Driver, n.Toolkit
	fl.StringVar(&p.Driver, n.Driver, "", n.DriverHelp)
	fl.Lookup(n.Driver).NoOptDefVal = pkginstall.DefaultDriverBranch
	fl.StringVar(&p.Toolkit, n.Toolkit, "", n.ToolkitHelp)
	fl.Lookup(n.Toolkit).NoOptDefVal = pkginstall.ToolkitLatest
	fl.StringVar(&p.Repo, "package-repo", "", n.RepoHelp)
	fl.StringVar(&p.KeyFile, "package-key", "", n.KeyHelp)
}

// Install is what the flags ask for, checked (the key file read), and the time of each of
// prep's phases: timeout, or InstallTimeout when packages are installed and the user did not
// set it. The packages' lock waits a quarter of it. Errors are usage errors.
func (p Packages) Install(timeout time.Duration, timeoutSet bool) (pkginstall.Install, time.Duration, error) {
	inst := pkginstall.Install{DriverBranch: p.Driver, ToolkitVersion: p.Toolkit, Repo: p.Repo}
	if (p.Repo != "" || p.KeyFile != "") && !inst.Any() {
		return inst, timeout, cliexit.Usagef("--package-repo and --package-key only go with --%s or --%s", p.driverFlag, p.toolkitFlag)
	}
	if p.KeyFile != "" {
		b, err := os.ReadFile(p.KeyFile)
		if err != nil {
			return inst, timeout, cliexit.Usagef("--package-key: %v", err)
		}
		inst.Key = b
	}
	if err := pkginstall.Validate(inst); err != nil {
		return inst, timeout, cliexit.Usagef("%v", err)
	}
	if inst.Any() && !timeoutSet {
		timeout = InstallTimeout
	}
	inst.LockTimeout = timeout / 4
	return inst, timeout, nil
}
