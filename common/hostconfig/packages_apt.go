package hostconfig

import (
	"context"
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// What apt says of a plan: the packages a dry run installs, what the repositories hold,
// and apt's own words when it refuses.

// resolved is a package the package manager would install.
type resolved = rep.Package

var aptInst = regexp.MustCompile(`(?m)^Inst (\S+) (?:\[(\S+)\] )?\((\S+) `)

// resolve asks the host's package manager, without changing its state, which packages and
// versions the plan's steps would install: apt-get -s against a private copy of the
// host's sources plus the new repositories, in a directory under the host's /run that is
// removed afterwards. An unknown package or version, a repository that cannot be read and
// a bad signature are errors here, before anything is installed.
func (p *packagePlan) resolve(ctx context.Context, h *Host, run Runner) (map[string][]resolved, error) {
	out := map[string][]resolved{}
	if len(p.steps) == 0 {
		return out, nil
	}
	if !p.d.Apt {
		return p.resolveDnf(ctx, h, run)
	}
	tmp, done, err := planDir(h, "sources.list.d", "lists/partial", "cache/archives/partial", "keys")
	if err != nil {
		return nil, err
	}
	defer done()
	replaced := map[string]bool{}
	for i, rp := range p.repos {
		replaced[rp.list] = true
		kp := fmt.Sprintf("%s/keys/%d.gpg", tmp, i)
		if err := os.WriteFile(h.Path(kp), p.keys[rp.list].Binary, 0o644); err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
		if err := os.WriteFile(h.Path(path.Join(tmp, "sources.list.d", path.Base(rp.list))), []byte(rp.content(kp)), 0o644); err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
	}
	for _, f := range append(h.Glob("/etc/apt/sources.list.d/*.list"), h.Glob("/etc/apt/sources.list.d/*.sources")...) {
		if replaced[f] {
			continue
		}
		if b, ok := h.Read(f); ok {
			if err := os.WriteFile(h.Path(path.Join(tmp, "sources.list.d", path.Base(f))), []byte(b), 0o644); err != nil {
				return nil, fmt.Errorf("plan: %w", err)
			}
		}
	}
	opts := []string{"-o", "Dir::Etc::SourceParts=" + tmp + "/sources.list.d", "-o", "Dir::State::Lists=" + tmp + "/lists",
		"-o", "Dir::Cache=" + tmp + "/cache", "-o", "Debug::NoLocking=1"}
	if o, err := run.Run(ctx, append(append([]string{"apt-get", "-q"}, opts...), "update")...); err != nil || aptUpdateFailed(o) {
		return nil, fmt.Errorf("the package repositories cannot be read: %s", managerProblem(o, err))
	}
	if err := p.settle(ctx, run, opts); err != nil {
		return nil, err
	}
	for _, s := range p.steps {
		o, err := run.Run(ctx, append(append(append([]string{"apt-get", "-s", "-q"}, opts...), "install"), s.packages...)...)
		if err != nil {
			return nil, fmt.Errorf("%s: %s", s.what, managerProblem(o, err))
		}
		for _, m := range aptInst.FindAllStringSubmatch(o, -1) {
			out[s.check] = append(out[s.check], resolved{Name: m[1], Version: m[3], Replaces: m[2]})
		}
	}
	return out, nil
}

// settle decides what depends on the repositories' contents, after apt-get update (aptOpts
// are the plan's private apt state, none on apply): a step whose needed package is missing
// takes its fallback (or is refused); a tracking metapackage is added when the repositories
// have it, else the plan says what a kernel upgrade will need.
func (p *packagePlan) settle(ctx context.Context, run Runner, aptOpts []string) error {
	if !p.d.Apt {
		return nil
	}
	// apt-cache show fails (exit 100, "No packages found") for a package the repositories
	// do not have.
	has := func(pkg string) bool {
		_, err := run.Run(ctx, append(append([]string{"apt-cache"}, aptOpts...), "show", "--no-all-versions", pkg)...)
		return err == nil
	}
	for i := range p.steps {
		s := &p.steps[i]
		if s.needs != "" && !has(s.needs) {
			if s.refuse != "" {
				return fmt.Errorf("%s", s.refuse)
			}
			*s = *s.fallback
		}
		s.needs = ""
		if s.pin != "" {
			if err := s.pinVersions(ctx, run, aptOpts); err != nil {
				return err
			}
		}
		if s.track == "" {
			continue
		}
		if has(s.track) {
			s.packages = append(s.packages, s.track)
		} else {
			s.note = "the repositories have no " + s.track + ": after a kernel upgrade, install the modules package for the new kernel (or run prep --install-driver again) before rebooting into it"
		}
		s.track = ""
	}
	return nil
}

// pinVersions asks apt for the step's packages at the pinned driver version: each package
// of the driver (not a kernel's modules, versioned by the kernel) as name=version, the
// repositories' version whose upstream part is the pin; none is a refusal naming what the
// repositories have.
func (s *pkgStep) pinVersions(ctx context.Context, run Runner, aptOpts []string) error {
	for i, pkg := range s.packages {
		if strings.HasPrefix(pkg, "linux-") || strings.Contains(pkg, "=") {
			continue
		}
		o, err := run.Run(ctx, append(append([]string{"apt-cache"}, aptOpts...), "madison", pkg)...)
		if err != nil {
			return fmt.Errorf("%s: %s", s.what, managerProblem(o, err))
		}
		var have []string
		chosen := ""
		for _, l := range strings.Split(o, "\n") {
			f := strings.Split(l, "|")
			if len(f) < 2 {
				continue
			}
			v := strings.TrimSpace(f[1])
			have = append(have, v)
			if up := v[strings.Index(v, ":")+1:]; chosen == "" && (up == s.pin || strings.HasPrefix(up, s.pin+"-")) {
				chosen = v
			}
		}
		if chosen == "" {
			if len(have) == 0 {
				have = []string{"none"}
			}
			return fmt.Errorf("%s: the repositories have no %s of version %s (they have: %s); ask for one of them, or for the branch", s.what, pkg, s.pin, strings.Join(have, ", "))
		}
		s.packages[i] = pkg + "=" + chosen
	}
	return nil
}

// aptUpdateFailed tells whether apt-get update could not read a source: it exits 0 when
// an index could not be fetched (older apt has no --error-on=any).
func aptUpdateFailed(out string) bool {
	return strings.Contains(out, "W: Failed to fetch") || strings.Contains(out, "W: GPG error") ||
		strings.Contains(out, "is not signed") || strings.Contains(out, "\nE: ")
}

// managerProblem is the package manager's own words (apt's or dnf's): apt's unmet dependencies (each with its
// package) and dnf's problems, which say why, then the E:, W: and Error: lines, else its
// last lines.
func managerProblem(out string, err error) string {
	var why, lines []string
	unmet, problem, pkg := false, false, ""
	for _, raw := range strings.Split(out, "\n") {
		l := strings.TrimSpace(raw)
		switch {
		case l == "The following packages have unmet dependencies:":
			unmet = true
			continue
		case unmet && strings.HasPrefix(raw, " ") && l != "":
			if name, dep, ok := strings.Cut(l, " : "); ok {
				pkg, l = name, name+" : "+dep
			} else if pkg != "" {
				l = pkg + " : " + l
			}
			why = append(why, l)
			continue
		case strings.Contains(l, "is not available, but is referred to by another package"):
			// apt's word for a package no source has at all (a missing repository).
			why = append(why, l)
			continue
		case strings.HasPrefix(l, "Problem"):
			problem = true
			why = append(why, l)
			continue
		case problem && strings.HasPrefix(l, "- "):
			why = append(why, l)
			continue
		}
		unmet, problem = false, false
		if strings.HasPrefix(l, "E: ") || strings.HasPrefix(l, "W: ") || strings.HasPrefix(l, "Error: ") {
			lines = append(lines, l)
		}
	}
	lines = append(why, lines...)
	if len(lines) == 0 {
		lines = lastLines(out, 5)
	}
	if len(lines) == 0 && err != nil {
		return err.Error()
	}
	return strings.Join(lines, " | ")
}

func lastLines(s string, n int) []string {
	all := strings.Split(strings.TrimSpace(s), "\n")
	if len(all) == 1 && all[0] == "" {
		return nil
	}
	if len(all) > n {
		all = all[len(all)-n:]
	}
	for i := range all {
		all[i] = strings.TrimSpace(all[i])
	}
	return all
}
