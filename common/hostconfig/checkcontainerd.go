package hostconfig

// The containerd check: the config as the host's containerd loads it (LoadContainerd), the
// nvidia runtime, the cgroup driver, drop-ins that override or cannot be read.
import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

func checkContainerd(ctx context.Context, h *Host, r *rep.Report) {
	paths := ContainerdFor(r.Flavour, 2)
	content, ok := h.Read(paths.Config)
	if !ok {
		if r.Flavour == rep.FlavourRKE2 || r.Flavour == rep.FlavourK3s {
			r.Add(rep.CheckContainerd, rep.Fail, "rendered containerd config "+paths.Config+" not found", "start "+string(r.Flavour)+" once so it renders its containerd config")
		} else {
			r.Add(rep.CheckContainerd, rep.Fail, "no containerd config at "+paths.Config+": containerd runs on defaults (SystemdCgroup off)", "kubectl gpu prep --apply writes one")
		}
		r.Add(rep.CheckSystemdCgroup, rep.Skipped, "no containerd config", "")
		r.Add(rep.CheckNvidiaRuntime, rep.Skipped, "no containerd config", "")
		return
	}
	root, err := ParseContainerd(content)
	if err != nil {
		r.Add(rep.CheckContainerd, rep.Fail, paths.Config+": "+err.Error(), "fix the file by hand: kubectl gpu prep never writes over a config it cannot parse")
		return
	}
	r.ContainerdConfigVersion = int(root.Version)
	paths = ContainerdFor(r.Flavour, int(root.Version))
	// What containerd runs with: its own loader's answer where it can be run, else the
	// model of the installed release's loader.
	load, info := h.LoadContainerd(ctx, r.Flavour, paths.Config, int(root.Version))
	r.Containerd = info
	drops := load.dropIns(paths.Config)
	if !load.Loads() {
		checkUnloadable(h, r, paths, root, load, info)
		return
	}
	r.DefaultRuntime, r.CDI = load.DefaultRuntime(), load.CDIEnabled()
	msg := fmt.Sprintf("%s (config version %d), default runtime %s", paths.Config, root.Version, load.DefaultRuntime())
	if imps := root.Imports(); len(imps) > 0 {
		msg += ", imports " + strings.Join(imps, " ")
		if len(drops) > 0 {
			names := make([]string, len(drops))
			for i, d := range drops {
				names[i] = d.path
			}
			msg += " (" + strings.Join(names, ", ") + ")"
		}
	}
	status, fix := rep.OK, ""
	if m := mismatched(root, drops, load.Release); len(m) > 0 {
		// It loads, but a drop-in written for another schema is read differently than its
		// author meant (1.7.16 and older ignore a version 3 file's CRI section; 2.0 to 2.2
		// read an older root's sections only when the last version named is older).
		status = rep.Warn
		msg += "; " + m[0].describe(root)
		fix = m[0].fix(root)
	}
	if paths.Template != "" {
		if h.Exists(paths.Template) {
			msg += ", template " + paths.Template
			// RKE2/K3s render the config from the template when they start: a template
			// edited since is not what containerd runs with.
			if newer(h.Path(paths.Template), h.Path(paths.Config)) {
				status = rep.Warn
				msg += " edited after " + string(r.Flavour) + " last rendered " + paths.Config + ": containerd runs without the edit until " + string(r.Flavour) + " restarts"
				fix = "restart " + string(r.Flavour) + " (kubectl gpu prep --apply --restart-runtime restarts it with the next change), at a time its pods may restart"
			}
		} else {
			msg += ", no template (rendered by " + string(r.Flavour) + ")"
		}
	}
	r.Add(rep.CheckContainerd, status, msg+"; "+judgeSays(info), fix)

	// SystemdCgroup on runc must agree with the kubelet's cgroup driver.
	sc := load.SystemdCgroup()
	kubelet := h.kubeletCgroupDriver()
	// A drop-in that takes runc's SystemdCgroup away from what the root config says.
	rsc, _ := root.SystemdCgroup()
	overriddenBy := ""
	if rsc != sc {
		overriddenBy = overriding(drops, func(c *ContainerdConfig) bool {
			v, ok := c.SystemdCgroup()
			return ok && v == sc || load.Release.Major < 2 && c.tree.HasPath([]string{"plugins", c.criPlugin()})
		})
	}
	switch {
	case r.Flavour == rep.FlavourRKE2 || r.Flavour == rep.FlavourK3s:
		r.Add(rep.CheckSystemdCgroup, rep.OK, fmt.Sprintf("SystemdCgroup=%v, set by %s together with its kubelet", sc, r.Flavour), "")
	case kubelet == "systemd" && !sc:
		r.Add(rep.CheckSystemdCgroup, rep.Fail, "kubelet uses the systemd cgroup driver but containerd's runc has SystemdCgroup="+fmt.Sprint(sc), "kubectl gpu prep --apply sets SystemdCgroup = true (then restart containerd)")
	case kubelet == "cgroupfs" && sc:
		r.Add(rep.CheckSystemdCgroup, rep.Fail, "kubelet uses cgroupfs but containerd's runc has SystemdCgroup=true", "set cgroupDriver: systemd in "+KubeletFile+" (kubeadm's default) or SystemdCgroup = false")
	case kubelet == "cgroupfs":
		// Both use cgroupfs: consistent (hosts without systemd as init, such as this
		// project's real test node); apply changes nothing here.
		r.Add(rep.CheckSystemdCgroup, rep.OK, "SystemdCgroup = false, kubelet cgroupDriver cgroupfs (consistent)", "")
	case !sc:
		r.Add(rep.CheckSystemdCgroup, rep.Fail, "containerd's runc does not use the systemd cgroup driver (kubeadm's kubelet default)", "kubectl gpu prep --apply sets SystemdCgroup = true (then restart containerd)")
	default:
		r.Add(rep.CheckSystemdCgroup, rep.OK, "SystemdCgroup = true, kubelet cgroupDriver "+dash(kubelet), "")
	}
	if c := r.Last(rep.CheckSystemdCgroup); c != nil && c.Status == rep.Fail && overriddenBy != "" {
		c.Message += fmt.Sprintf(" (%s says SystemdCgroup = %v, but %s overrides it", paths.Config, rsc, overriddenBy)
		if load.Release.Major < 2 {
			c.Message += ": containerd " + load.Release.String() + " (1.x) replaces a plugin's whole section with an imported file's"
		}
		c.Message += ")"
		c.Remediation = "set SystemdCgroup = true in " + overriddenBy + " too, or remove its CRI section (then restart containerd)"
	} else if c != nil && c.Status == rep.Fail && rsc && !sc {
		c.Message += fmt.Sprintf(" (%s says SystemdCgroup = true, but containerd %s does not read it there: %s)", paths.Config, load.Release, whyNotRead(root, load))
	}
	bin, has := load.RuntimeBinary("nvidia")
	r.NvidiaRuntime = has
	orphan := ""
	if !has && r.Flavour != rep.FlavourRKE2 && r.Flavour != rep.FlavourK3s {
		orphan = h.orphanNvidiaDropIn(paths.Config, drops)
	}
	if has {
		if _, inRoot := root.RuntimeBinary("nvidia"); !inRoot {
			for _, d := range drops {
				if _, ok := d.cfg.RuntimeBinary("nvidia"); ok {
					bin += ", from " + d.path
				}
			}
		}
	}
	lost := ""
	if !has {
		for _, d := range drops {
			if _, ok := d.cfg.RuntimeBinary("nvidia"); ok {
				lost = d.path
			}
		}
		if _, ok := root.RuntimeBinary("nvidia"); ok {
			lost = paths.Config
		}
	}
	switch {
	case has && bin != "" && !h.Exists(strings.SplitN(bin, ",", 2)[0]):
		r.NvidiaRuntime = false
		r.Add(rep.CheckNvidiaRuntime, rep.Fail, "runtime nvidia points at "+strings.SplitN(bin, ",", 2)[0]+", which does not exist", "install the NVIDIA Container Toolkit on the host")
	case has && staticTemplateWithout(h, paths.Template, "nvidia"):
		// A template of its own (not built on the distribution's base, which adds the
		// runtimes it detects) without the runtime: the next start renders it away.
		r.Add(rep.CheckNvidiaRuntime, rep.Warn, "runtime nvidia configured ("+dash(bin)+"), but the template "+paths.Template+` does not build on {{ template "base" . }} and has no nvidia runtime: the next restart of `+string(r.Flavour)+" renders config.toml without it",
			`add the nvidia runtime to the template, or start it with {{ template "base" . }} so `+string(r.Flavour)+" adds the runtimes it detects")
	case has:
		r.Add(rep.CheckNvidiaRuntime, rep.OK, "runtime nvidia configured ("+dash(bin)+")", "")
	case lost != "" && h.Exists(NvidiaRuntimeBinary):
		r.Add(rep.CheckNvidiaRuntime, rep.Fail, "containerd "+load.Release.String()+" has no nvidia runtime although "+lost+" configures one: "+whyNotRead(root, load),
			"kubectl gpu prep --apply adds it where containerd "+load.Release.String()+" reads it (then restart containerd)")
	case h.Exists(NvidiaRuntimeBinary) && (r.Flavour == rep.FlavourRKE2 || r.Flavour == rep.FlavourK3s):
		r.Add(rep.CheckNvidiaRuntime, rep.Fail, "toolkit installed but the rendered config has no nvidia runtime", "restart "+string(r.Flavour)+" so it detects the toolkit (kubectl gpu prep --apply --restart-runtime)")
	case h.Exists(NvidiaRuntimeBinary) && orphan != "":
		r.Add(rep.CheckNvidiaRuntime, rep.Fail, "containerd has no nvidia runtime: "+orphan+" has it, but "+paths.Config+" does not import it (replaced by a containerd upgrade?)",
			"add imports = [\""+filepath.Dir(orphan)+"/*.toml\"] to "+paths.Config+", or kubectl gpu prep --apply adds the runtime to it (then restart containerd)")
	case h.Exists(NvidiaRuntimeBinary):
		r.Add(rep.CheckNvidiaRuntime, rep.Fail, "toolkit installed but containerd has no nvidia runtime", "kubectl gpu prep --apply adds it (then restart containerd)")
	default:
		r.Add(rep.CheckNvidiaRuntime, rep.Warn, "no nvidia runtime in containerd", "install the toolkit on the host, or let the GPU Operator configure containerd")
	}
}

// checkUnloadable reports a configuration containerd refuses: it does not start with it.
func checkUnloadable(h *Host, r *rep.Report, paths ContainerdPaths, root *ContainerdConfig, load *ContainerdLoad, info *rep.ContainerdLoad) {
	msg := fmt.Sprintf("containerd %s does not start with %s and its imports: %s", load.Release, paths.Config, load.Err)
	fix := "fix " + dash(load.ErrFile) + " by hand; do not restart containerd before it loads (`containerd --config " + paths.Config + " config dump` says)"
	if m := mismatched(root, load.dropIns(paths.Config), load.Release); len(m) > 0 {
		msg += "; " + m[0].describe(root)
		fix = m[0].fix(root) + "; do not restart containerd before"
	}
	msg += " [" + judgeSays(info) + "]"
	r.Add(rep.CheckContainerd, rep.Fail, msg, fix)
	r.Add(rep.CheckSystemdCgroup, rep.Skipped, "containerd does not load its configuration (containerd.config)", "")
	r.Add(rep.CheckNvidiaRuntime, rep.Fail, "containerd does not load its configuration (containerd.config): the next restart leaves the node without containerd", fix)
}

// judgeSays says who answered.
func judgeSays(info *rep.ContainerdLoad) string {
	if info.Judge == rep.JudgeContainerd {
		return "loaded by containerd " + info.Release + " (" + info.Binary + ")"
	}
	why := "no containerd binary to run"
	if info.NotRun != "" {
		why = info.NotRun
	}
	if info.ReleaseGuessed {
		return "the model's answer for containerd " + info.Release + " or later, guessed from the config's version (" + why + ")"
	}
	return "the model's answer for containerd " + info.Release + " (" + why + ")"
}

// dropIns are the files containerd read after the root, as parsed.
func (l *ContainerdLoad) dropIns(rootPath string) []dropIn {
	var out []dropIn
	for _, f := range l.Files {
		if f == rootPath {
			continue
		}
		if c := l.PerFile[f]; c != nil {
			out = append(out, dropIn{path: f, cfg: c})
		}
	}
	return out
}

// versionMismatch is a drop-in written in another schema than the root's.
type versionMismatch struct {
	dropIn
	release ContainerdRelease
}

// mismatched lists the drop-ins whose config version is not the root's, where that changes
// what containerd reads: every 1.x and 2.0 to 2.2 (2.3 migrates each file on its own, so an
// older drop-in is read as meant; a newer one than it reads is refused and named anyway).
func mismatched(root *ContainerdConfig, drops []dropIn, rel ContainerdRelease) []versionMismatch {
	var out []versionMismatch
	for _, d := range drops {
		v := d.cfg.Version
		if len(d.cfg.tree.Keys()) == 0 || d.cfg.tree.Get("version") == nil && !d.cfg.tree.HasPath([]string{"plugins"}) {
			continue
		}
		if v == root.Version || rel.atLeast(2, 3, 0) && int(v) <= rel.ConfigVersion() {
			continue
		}
		out = append(out, versionMismatch{dropIn: d, release: rel})
	}
	return out
}

func (m versionMismatch) describe(root *ContainerdConfig) string {
	s := fmt.Sprintf("%s is a version %d drop-in under a version %d root", m.path, m.cfg.Version, root.Version)
	switch {
	case m.cfg.Version > int64(m.release.ConfigVersion()):
		s += fmt.Sprintf(" (written for a newer containerd, as nvidia-ctk writes its drop-in against a version %d root; containerd %s reads version %d at most)", m.cfg.Version, m.release, m.release.ConfigVersion())
	case m.release.Major < 2:
		s += fmt.Sprintf(" (its version replaces the root's for the whole configuration; containerd %s reads the CRI plugin at %s)", m.release, m.release.criPlugin(2))
	default:
		s += fmt.Sprintf(" (containerd %s migrates the merged configuration only when the last version named is older than %d)", m.release, m.release.ConfigVersion())
	}
	return s
}

func (m versionMismatch) fix(root *ContainerdConfig) string {
	if _, err := rewriteDropIn(root, m.cfg); err == nil {
		return fmt.Sprintf("kubectl gpu prep --apply rewrites %s in the root's schema (version %d), shown as a diff first and backed up", m.path, root.Version)
	} else {
		return fmt.Sprintf("rewrite %s as a version %d file by hand (%v)", m.path, root.Version, err)
	}
}

// whyNotRead says why containerd's loaded configuration lacks what a file sets.
func whyNotRead(root *ContainerdConfig, load *ContainerdLoad) string {
	for _, m := range mismatched(root, load.dropIns(""), load.Release) {
		return m.describe(root)
	}
	if load.Release.Major < 2 {
		return "containerd " + load.Release.String() + " (1.x) replaces a plugin's whole section with an imported file's"
	}
	return "a later file replaces it"
}

// overriding names the last imported file that sets what the merged config says (by tells
// whether a file does), "" none.
func overriding(drops []dropIn, by func(*ContainerdConfig) bool) string {
	name := ""
	for _, d := range drops {
		if by(d.cfg) {
			name = d.path
		}
	}
	return name
}

// orphanNvidiaDropIn is a drop-in next to the config (conf.d, as the toolkit writes its
// own) with the nvidia runtime that the config does not import: the runtime containerd lost
// when an upgrade replaced its config.
func (h *Host) orphanNvidiaDropIn(config string, imported []dropIn) string {
	in := map[string]bool{}
	for _, d := range imported {
		in[d.path] = true
	}
	for _, p := range h.Glob(filepath.Join(filepath.Dir(config), "conf.d", "*.toml")) {
		if in[p] {
			continue
		}
		s, _ := h.Read(p)
		if c, err := ParseContainerd(s); err == nil {
			if _, ok := c.RuntimeBinary("nvidia"); ok {
				return p
			}
		}
	}
	return ""
}

// newer tells whether file a was modified after file b.
func newer(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && fa.ModTime().After(fb.ModTime())
}

// staticTemplateWithout tells whether an RKE2/K3s containerd template exists, is not built on
// the distribution's base template, and does not mention runtime.
func staticTemplateWithout(h *Host, template, runtime string) bool {
	if template == "" {
		return false
	}
	t, ok := h.Read(template)
	return ok && !strings.Contains(t, `template "base"`) && !strings.Contains(t, runtime)
}
