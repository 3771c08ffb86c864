package hostconfig

import (
	"context"
	"fmt"
	"strings"
	"time"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// Modes of the node agent (the report schema's).
const (
	ModeCheck = rep.ModeCheck
	ModePlan  = rep.ModePlan
	ModeApply = rep.ModeApply
)

// Options of one agent run.
type Options struct {
	Mode         rep.Mode
	AgentVersion string
	Node         string
	// Arch is the node's architecture (the agent's own).
	Arch    string
	Apply   ApplyOptions
	Install Install
	NVML    GPUInfo
	// BootID, in reboot mode, is the boot the reboot is for: a host that has booted since
	// is not rebooted again.
	BootID string
	// Runner runs host commands: in apply mode, and in plan mode when packages are to be
	// installed (the package manager's dry-run resolution).
	Runner Runner
}

// Run checks the host and, in plan or apply mode, plans or applies the fixes (package
// installs first). In apply mode the returned report is a fresh check after the changes,
// with the checks that went from fail to ok marked fixed. A refusal or a failure is also
// in the report's Error.
func Run(ctx context.Context, h *Host, o Options) (*rep.Report, error) {
	r, err := run(ctx, h, o)
	if err != nil && r != nil {
		r.Error = err.Error()
	}
	return r, err
}

func run(ctx context.Context, h *Host, o Options) (*rep.Report, error) {
	if rr, ok := o.Runner.(ReaderRunner); ok && h.Exec == nil {
		h.Exec = rr.Reader(h.Root)
	}
	if o.Apply.Now.IsZero() {
		o.Apply.Now = time.Now()
	}
	check := func() *rep.Report {
		r := rep.New(o.AgentVersion, o.Mode)
		r.Node, r.Arch = o.Node, o.Arch
		Check(ctx, h, r, o.NVML)
		return r
	}
	r := check()
	switch o.Mode {
	case ModeCheck:
		return r, nil
	case ModePlan:
		pc, toolkit, reboot, err := installPackages(ctx, h, r, o, true)
		r.Changes = pc
		if err != nil {
			return r, err
		}
		o.Apply.ToolkitPlanned = toolkit
		changes, err := Apply(ctx, h, r, nil, o.Apply, true)
		r.Changes = append(r.Changes, changes...)
		r.Reboot = rebootReason(reboot, changes, r)
		return r, err
	case ModeApply:
		pc, _, reboot, err := installPackages(ctx, h, r, o, false)
		if err != nil {
			after := check()
			after.Changes, after.Reboot = pc, rebootReason(reboot, nil, after)
			return after, err
		}
		mid := r
		if len(pc) > 0 {
			mid = check() // the containerd step sees the toolkit just installed
		}
		changes, err := Apply(ctx, h, mid, o.Runner, o.Apply, false)
		after := check()
		after.Changes = append(pc, changes...)
		after.Reboot = rebootReason(reboot, changes, r)
		didNotTake(after, changes)
		for i, c := range after.Checks {
			if before, ok := r.Get(c.ID); ok && before.Status == rep.Fail && c.Status == rep.OK {
				after.Checks[i].Status = rep.Fixed
			}
		}
		return after, err
	case rep.ModeReboot:
		return r, requestReboot(ctx, r, o)
	}
	return nil, fmt.Errorf("unknown mode %q: want check, plan, apply or reboot", o.Mode)
}

// rebootReason says why the host needs a reboot: a driver install, a nouveau blacklist the
// changes write, or nouveau still loaded though blacklisted already (r's check: no file to
// write, the reboot still to do); either nouveau reason with the initramfs rebuild the
// changes hold (NouveauReboot).
func rebootReason(driver string, changes []rep.Change, r *rep.Report) string {
	if driver != "" {
		return driver
	}
	var rebuild *rep.Change
	writing, written := false, false
	for i, c := range changes {
		switch {
		case c.Check != rep.CheckNouveau:
		case c.File != "":
			writing, written = true, written || c.Error == ""
		case len(c.Command) > 0:
			rebuild = &changes[i]
		}
	}
	switch {
	case written:
		return NouveauReboot(false, rebuild)
	case writing:
		return "" // the blacklist was not written: the change's error says so
	}
	if c, ok := r.Get(rep.CheckNouveau); ok && c.Status == rep.Fail {
		return NouveauReboot(true, rebuild)
	}
	return ""
}

// NouveauReboot is the reboot reason of a nouveau blacklist: just written, or written
// earlier with nouveau still loaded; rebuild is the initramfs rebuild among the changes
// (nil: the host has no tool for it).
func NouveauReboot(stillLoaded bool, rebuild *rep.Change) string {
	what := "nouveau blacklisted"
	if stillLoaded {
		what = "nouveau is blacklisted but still loaded"
	}
	const why = "reboot for the NVIDIA driver to take the GPUs"
	switch {
	case rebuild == nil:
		return what + ": rebuild the initramfs by hand (the host has no update-initramfs or dracut) and " + why
	case rebuild.Error != "":
		return what + ": " + strings.Join(rebuild.Command, " ") + " failed; rebuild the initramfs and " + why
	}
	return what + ", the initramfs rebuilt (" + strings.Join(rebuild.Command, " ") + "): " + why
}

// installPackages plans (dryRun) or carries out the package installs o.Install asks for:
// repository files and keyrings written like every other host file, then the package
// manager. It returns the changes, whether a toolkit install is among them and why a
// reboot is needed.
func installPackages(ctx context.Context, h *Host, r *rep.Report, o Options, dryRun bool) (changes []rep.Change, toolkit bool, reboot string, err error) {
	if !o.Install.Any() {
		return nil, false, "", nil
	}
	p, err := planPackages(h, r, o.Install, o.Arch)
	if err != nil {
		return nil, false, "", err
	}
	if p.refused != "" {
		return nil, false, "", fmt.Errorf("%s", p.refused)
	}
	if len(p.steps) == 0 {
		return nil, false, "", nil
	}
	for _, s := range p.steps {
		toolkit = toolkit || s.check == rep.CheckToolkit
		if s.reboot {
			reboot = "driver " + o.Install.DriverBranch + " installed: reboot to load it"
		}
	}
	if err := p.fetchKeys(ctx, o.Install); err != nil {
		return nil, false, "", err
	}
	edits := p.fileEdits(h)
	for _, e := range edits {
		changes = append(changes, e.change())
	}
	if dryRun {
		res, err := p.resolve(ctx, h, o.Runner)
		if err != nil {
			return changes, false, "", err
		}
		changes = append(changes, p.installChanges(res)...)
		return changes, toolkit, reboot, nil
	}
	if err := commitEdits(h, edits, changes, o.Apply.Now); err != nil {
		return changes, false, "", err
	}
	lock := o.Install.LockTimeout
	if lock <= 0 {
		lock = 5 * time.Minute
	}
	cmds := p.commands()
	for i := 0; i < len(cmds); i++ {
		cmd := cmds[i]
		c := rep.Change{Check: rep.CheckToolkit, Command: cmd.argv}
		out, recovered, err := runManager(ctx, o.Runner, lock, cmd.argv, p.d.Apt)
		if recovered != nil {
			changes = append(changes, *recovered)
			if recovered.Error != "" {
				return changes, false, "", fmt.Errorf("%s: %s: %s%s", cmd.what, recovered.Note, recovered.Error, leftFiles(edits, o.Apply.Now))
			}
		}
		if err != nil {
			c.Error = managerProblem(out, err)
			if lockHeld.MatchString(out) {
				c.Error = err.Error()
			}
			changes = append(changes, c)
			return changes, false, "", fmt.Errorf("%s: %s%s", cmd.what, c.Error, leftFiles(edits, o.Apply.Now))
		}
		c.Done, c.Note = true, o.Runner.Note()
		changes = append(changes, c)
		if ctx.Err() != nil && i < len(cmds)-1 {
			// Interrupted while the command ran: it finished; the next does not start.
			return changes, false, "", fmt.Errorf("interrupted after %s, before %s: run the same command again to go on", cmd.what, cmds[i+1].what)
		}
		if i == 0 && p.d.Apt {
			// apt-get update has run: the tracking metapackages the repositories have join
			// the install commands, as in the plan.
			if err := p.settle(ctx, o.Runner, nil); err != nil {
				return changes, false, "", err
			}
			cmds = p.commands()
		}
	}
	inst := p.installChanges(nil)
	for i, s := range p.steps {
		for _, pk := range s.packages {
			name := pkgName(pk)
			inst[i].Packages = append(inst[i].Packages, rep.Package{Name: name, Version: h.installedVersion(name, p.d.Apt)})
		}
		inst[i].Done = true
	}
	return append(changes, inst...), toolkit, reboot, nil
}

// pkgName is a package spec's name (name=version on apt).
func pkgName(spec string) string {
	n, _, _ := strings.Cut(spec, "=")
	return n
}

// RebootCommand asks the host's systemd for a reboot in a few seconds, as a transient
// timer: the agent's report is printed and read before the host goes down.
var RebootCommand = []string{"systemd-run", "--on-active=5", "--unit=kubectl-gpu-reboot", "--description=reboot asked by kubectl gpu prep --reboot", "systemctl", "reboot"}

func requestReboot(ctx context.Context, r *rep.Report, o Options) error {
	c := rep.Change{Check: "reboot", Command: RebootCommand}
	switch {
	case o.BootID == "":
		return fmt.Errorf("reboot mode needs the boot ID to reboot (--boot-id)")
	case r.BootID != o.BootID:
		c.Note = "not run: the host has booted since (boot " + r.BootID + ", asked for " + o.BootID + ")"
	default:
		out, err := o.Runner.Run(ctx, RebootCommand...)
		if err != nil && strings.Contains(out, "already exists") {
			// The timer of an earlier request is still pending: the reboot is on its way.
			c.Done, c.Note = true, "a reboot was already asked for"
			break
		}
		if err != nil {
			c.Error = err.Error()
			r.Changes = []rep.Change{c}
			return fmt.Errorf("ask the host to reboot: %w", err)
		}
		c.Done, c.Note = true, o.Runner.Note()
	}
	r.Changes = []rep.Change{c}
	return nil
}

// leftFiles says which repository files and keyrings a failed install leaves on the host
// (written before the package manager ran): they stay, so that the host's package manager
// can finish or undo what it began (apt-get -f install, dpkg --configure -a), and are named
// with what was there before.
func leftFiles(edits []fileEdit, now time.Time) string {
	if len(edits) == 0 {
		return ""
	}
	var left []string
	for _, e := range edits {
		if e.old == "" {
			left = append(left, e.path+" (new)")
		} else {
			left = append(left, e.path+" (the previous one is "+BackupPath(e.path, now)+")")
		}
	}
	return "; left on the host for its package manager: " + strings.Join(left, ", ") +
		": fix the cause and run again, or remove them (restore the backups) to return the host to its sources before"
}

// notTaken is what to look at when a check still fails after its fix ran: the same
// advice again would send the admin round in a loop.
var notTaken = map[string]string{
	rep.CheckModules: "the module did not load: is it built for this kernel (ls /lib/modules/$(uname -r)/kernel/net)? dmesg says why modprobe failed",
	rep.CheckSysctl:  "the value did not stay: another file under /etc/sysctl.d, /run/sysctl.d or /usr/lib/sysctl.d may set it later (sysctl --system prints the order), and the bridge keys need br_netfilter loaded",
	rep.CheckSwap:    "swap came back or stayed on: a swap unit or zram device turns it on (systemctl list-units --type swap; zramctl); disable it",
}

// didNotTake rewrites a check that still fails after the command that fixes it ran: it
// says what ran and that it did not take, and what to look at instead of running it again.
func didNotTake(r *rep.Report, changes []rep.Change) {
	for i, c := range r.Checks {
		if c.Status != rep.Fail {
			continue
		}
		for _, ch := range changes {
			if ch.Check != c.ID || len(ch.Command) == 0 || !ch.Done || ch.Error != "" {
				continue
			}
			r.Checks[i].Message = fmt.Sprintf("%s (`%s` ran, and it did not take)", c.Message, strings.Join(ch.Command, " "))
			if hint, ok := notTaken[c.ID]; ok {
				r.Checks[i].Remediation = hint
			} else {
				r.Checks[i].Remediation = "running it again will not help: look at the host"
			}
			break
		}
	}
}
