package hostconfig

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	udiff "github.com/aymanbagabas/go-udiff"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// Runner runs a command in the host's namespaces. The agent's runner enters PID 1's
// namespaces with nsenter; tests use a Recorder.
type Runner interface {
	Run(ctx context.Context, argv ...string) (string, error)
	// Note is what the report says of every command this runner ran ("" when it really
	// ran them).
	Note() string
}

// ReaderRunner is a Runner that can also give a runner for the host's own programs that
// only read (containerd's config loader), run chrooted into the host root: that needs only
// CAP_SYS_CHROOT, which the read-only check pod has, not the host's namespaces.
type ReaderRunner interface {
	Runner
	Reader(root string) Runner
}

// Recorder is a Runner that records the commands and runs nothing.
type Recorder struct{ Commands [][]string }

// Run records argv.
func (r *Recorder) Run(_ context.Context, argv ...string) (string, error) {
	r.Commands = append(r.Commands, argv)
	return "", nil
}

// Note says that the commands were recorded.
func (r *Recorder) Note() string { return "recorded, not run" }

// ApplyOptions choose what apply may do beyond files and the live kernel settings.
type ApplyOptions struct {
	// RestartRuntime restarts containerd (or rke2/k3s) after its config changed.
	RestartRuntime bool
	// ToolkitPlanned: a toolkit install precedes these changes (the plan shows the nvidia
	// runtime it will allow).
	ToolkitPlanned bool
	Now            time.Time
}

// fileEdit is a planned file change.
type fileEdit struct {
	check   string
	path    string
	old     string
	content string
	note    string
	binary  bool // shown by its note, not a diff
}

// Plan computes the changes that would fix the report's failed checks: file edits with
// their diffs, and the commands to run. It reads the host and writes nothing.
func Plan(h *Host, r *rep.Report, o ApplyOptions) ([]fileEdit, []rep.Change, error) {
	var edits []fileEdit
	var cmds []rep.Change
	failed := func(id string) bool { c, ok := r.Get(id); return ok && c.Status == rep.Fail }

	if failed(rep.CheckModules) {
		loaded, persisted := h.LoadedModules(), h.persistedModules()
		var toLoad []string
		for _, m := range RequiredModules {
			if !loaded[m] {
				toLoad = append(toLoad, m)
			}
		}
		if needs(RequiredModules, persisted) {
			old, _ := h.Read(ModulesFile)
			edits = append(edits, fileEdit{check: rep.CheckModules, path: ModulesFile, old: old,
				content: ensureLines(old, RequiredModules, "# Kernel modules for Kubernetes networking (kubectl gpu prep)")})
		}
		if len(toLoad) > 0 {
			cmds = append(cmds, rep.Change{Check: rep.CheckModules, Command: append([]string{"modprobe", "-a"}, toLoad...)})
		}
	}
	if failed(rep.CheckSysctl) {
		persisted := h.persistedSysctls()
		var lines []string
		for _, k := range RequiredSysctls {
			lines = append(lines, k+" = 1")
		}
		missing := false
		for _, k := range RequiredSysctls {
			if persisted[k] != "1" {
				missing = true
			}
		}
		if missing {
			old, _ := h.Read(SysctlFile)
			edits = append(edits, fileEdit{check: rep.CheckSysctl, path: SysctlFile, old: old,
				content: ensureLines(old, lines, "# Kubernetes networking (kubectl gpu prep)")})
		}
		cmds = append(cmds, rep.Change{Check: rep.CheckSysctl, Command: []string{"sysctl", "--system"}})
	}
	if failed(rep.CheckSwap) {
		active, fstab := h.swapLines()
		if len(fstab) > 0 {
			old, _ := h.Read("/etc/fstab")
			edits = append(edits, fileEdit{check: rep.CheckSwap, path: "/etc/fstab", old: old, content: commentSwap(old)})
		}
		if len(active) > 0 {
			cmds = append(cmds, rep.Change{Check: rep.CheckSwap, Command: []string{"swapoff", "-a"}})
		}
	}
	if c, ok := r.Get(rep.CheckNouveau); ok && c.Status != rep.OK {
		old, _ := h.Read(NouveauFile)
		content := ensureLines(old, []string{"blacklist nouveau", "options nouveau modeset=0"}, "# The NVIDIA driver needs the GPUs (kubectl gpu prep)")
		rebuild := h.initramfsRebuild()
		if content != old {
			note := "the initramfs is rebuilt after it; reboot for the blacklist to take effect"
			if len(rebuild.Command) == 0 {
				note = "rebuild the initramfs by hand and reboot for the blacklist to take effect"
			}
			edits = append(edits, fileEdit{check: rep.CheckNouveau, path: NouveauFile, old: old, content: content, note: note})
		}
		if content != old || c.Status == rep.Fail {
			cmds = append(cmds, rebuild)
		}
	}
	de, dc := planDevChar(h, r, o)
	edits, cmds = append(edits, de...), append(cmds, dc...)
	ce, cc, err := planContainerd(h, r, o)
	if err != nil {
		return nil, nil, err
	}
	return append(edits, ce...), append(cmds, cc...), nil
}

func planContainerd(h *Host, r *rep.Report, o ApplyOptions) ([]fileEdit, []rep.Change, error) {
	sc, _ := r.Get(rep.CheckSystemdCgroup)
	nv, _ := r.Get(rep.CheckNvidiaRuntime)
	cc, _ := r.Get(rep.CheckContainerd)
	wantSystemd := sc.Status == rep.Fail && !strings.Contains(sc.Message, "kubelet uses cgroupfs")
	wantNvidia := (nv.Status == rep.Fail || o.ToolkitPlanned && nv.Status == rep.Warn) && (h.Exists(NvidiaRuntimeBinary) || o.ToolkitPlanned)
	if cc.Status == rep.Fail && strings.Contains(cc.Message, "does not parse") {
		return nil, nil, nil // never written: reported, fixed by hand
	}
	if !wantSystemd && !wantNvidia && !(cc.Status != rep.OK && r.Flavour != rep.FlavourRKE2 && r.Flavour != rep.FlavourK3s) {
		return nil, nil, nil
	}
	var edits []fileEdit
	var cmds []rep.Change
	paths := ContainerdFor(r.Flavour, r.ContainerdConfigVersion)
	service := "containerd"
	switch r.Flavour {
	case rep.FlavourRKE2, rep.FlavourK3s:
		// Never the rendered file: RKE2/K3s detect nvidia-container-runtime at start and add
		// the nvidia runtime themselves, so a restart is the fix.
		service = map[rep.Flavour]string{rep.FlavourRKE2: "rke2-server", rep.FlavourK3s: "k3s"}[r.Flavour]
		if h.Exists("/etc/systemd/system/rke2-agent.service") || h.Exists("/usr/local/lib/systemd/system/rke2-agent.service") {
			service = "rke2-agent"
		}
		if h.Exists("/etc/systemd/system/k3s-agent.service") {
			service = "k3s-agent"
		}
		if !wantNvidia {
			return nil, nil, nil
		}
	default:
		old, exists := h.Read(paths.Config)
		rewrites, nvidiaFromDropIn := planDropInRewrites(h, r, paths, old)
		content, changed, err := EditContainerd(old, exists, wantSystemd, wantNvidia && !nvidiaFromDropIn)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", paths.Config, err)
		}
		if changed {
			edits = append(edits, fileEdit{check: rep.CheckContainerd, path: paths.Config, old: old, content: content})
			// A drop-in rewritten in the root's schema copies the root's CRI section as
			// NVIDIA's engine does: from the root as edited.
			rewrites, _ = planDropInRewrites(h, r, paths, content)
		}
		edits = append(edits, rewrites...)
		if len(edits) == 0 {
			return nil, nil, nil
		}
	}
	restart := rep.Change{Check: rep.CheckContainerd, Command: []string{"systemctl", "restart", service}}
	if !o.RestartRuntime {
		restart.Note = "not run: pass --restart-runtime to restart " + service + " (running containers keep running)"
	}
	cmds = append(cmds, restart)
	return edits, cmds, nil
}

// initramfsRebuild is the host's own command that rebuilds its initramfs, so that the next
// boot's early modules follow the blacklist (most distributions put nouveau in the initramfs,
// which loads it before the root's modprobe.d is read): update-initramfs on Debian and
// Ubuntu, dracut on RHEL. A host with neither is told to do it by hand.
func (h *Host) initramfsRebuild() rep.Change {
	for _, t := range []struct{ bins, argv []string }{
		{[]string{"/usr/sbin/update-initramfs", "/sbin/update-initramfs"}, []string{"update-initramfs", "-u"}},
		{[]string{"/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut"}, []string{"dracut", "-f"}},
	} {
		for _, b := range t.bins {
			if h.Exists(b) {
				return rep.Change{Check: rep.CheckNouveau, Command: t.argv}
			}
		}
	}
	return rep.Change{Check: rep.CheckNouveau, Note: "not run: the host has no update-initramfs or dracut; rebuild its initramfs by hand before the reboot"}
}

func needs(want []string, have map[string]bool) bool {
	for _, w := range want {
		if !have[w] {
			return true
		}
	}
	return false
}

// ensureLines appends the lines that content lacks (under a comment when it adds any).
func ensureLines(content string, lines []string, comment string) string {
	have := map[string]bool{}
	for _, l := range contentLines(content) {
		have[strings.Join(strings.Fields(l), " ")] = true
	}
	var add []string
	for _, l := range lines {
		if !have[strings.Join(strings.Fields(l), " ")] {
			add = append(add, l)
		}
	}
	if len(add) == 0 {
		return content
	}
	if content != "" && !strings.HasSuffix(content, "\n") {
		content += "\n"
	}
	if content == "" || !strings.Contains(content, comment) {
		content += comment + "\n"
	}
	return content + strings.Join(add, "\n") + "\n"
}

// commentSwap comments out the active swap lines of an fstab.
func commentSwap(fstab string) string {
	lines := strings.SplitAfter(fstab, "\n")
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		if f := strings.Fields(t); len(f) >= 3 && f[2] == "swap" {
			lines[i] = "# disabled by kubectl gpu prep: " + l
		}
	}
	return strings.Join(lines, "")
}

// EditContainerd sets runc's SystemdCgroup and adds the nvidia runtime (as asked) in a
// containerd config (exists false: a new version 2 config), and returns the new content. A
// config that does not parse, or whose edited form would not, or would not hold the change
// where containerd reads it, is refused: nothing is then written.
func EditContainerd(old string, exists, systemd, nvidia bool) (content string, changed bool, err error) {
	cfg, err := ParseContainerd(old)
	if err != nil {
		return "", false, fmt.Errorf("does not parse, not touched: %w", err)
	}
	if !exists {
		cfg, _ = ParseContainerd("version = 2\n")
	}
	if systemd || !exists {
		changed = cfg.SetSystemdCgroup(true) || changed
	}
	if nvidia {
		changed = cfg.AddNvidiaRuntime(NvidiaRuntimeBinary) || changed
	}
	if !changed {
		return old, false, nil
	}
	content = cfg.String()
	again, err := ParseContainerd(content)
	if err != nil {
		return "", false, fmt.Errorf("the edited config would not parse, not written: %w", err)
	}
	// Read back as containerd would: a config whose layout the editor does not expect (such
	// as a plugins key that is not a table) can come out valid but with the change elsewhere.
	if b, ok := again.RuntimeBinary("nvidia"); nvidia && (!ok || b != NvidiaRuntimeBinary) {
		return "", false, fmt.Errorf("the edited config would not hold the nvidia runtime where containerd reads it (unexpected layout), not written")
	}
	if sc, _ := again.SystemdCgroup(); (systemd || !exists) && !sc {
		return "", false, fmt.Errorf("the edited config would not set SystemdCgroup where containerd reads it (unexpected layout), not written")
	}
	return content, true, nil
}

func (e fileEdit) change() rep.Change {
	if e.binary {
		return rep.Change{Check: e.check, File: e.path, Note: e.note}
	}
	return rep.Change{Check: e.check, File: e.path, Diff: Diff(e.path, e.old, e.content), Note: e.note}
}

// Diff is a unified diff of a file change, as patch and git apply read it: a new file
// (old empty) is from /dev/null ("@@ -0,0 +1,N @@"), a last line without a newline is
// marked so.
func Diff(path, old, new string) string {
	from := path
	if old == "" {
		from = "/dev/null"
	}
	d, err := udiff.ToUnified(from, path, old, udiff.Strings(old, new), 2)
	if err != nil {
		return ""
	}
	return d
}

// Apply plans and then carries out the changes: files first (atomic, backed up), then the
// commands. With dryRun it only describes them. The returned changes say what was done.
func Apply(ctx context.Context, h *Host, r *rep.Report, run Runner, o ApplyOptions, dryRun bool) ([]rep.Change, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	edits, cmds, err := Plan(h, r, o)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(edits, func(i, j int) bool { return edits[i].path < edits[j].path })
	var out []rep.Change
	for _, e := range edits {
		out = append(out, e.change())
	}
	if !dryRun {
		if err := commitEdits(h, edits, out, o.Now); err != nil {
			return out, err
		}
	}
	var refused error
	if !dryRun {
		refused = judgeContainerdEdits(ctx, h, r, edits, out, o.Now)
	}
	for _, c := range cmds {
		if refused != nil && c.Check == rep.CheckContainerd {
			c.Error = "not run: containerd refuses the configuration it would restart with"
			out = append(out, c)
			continue
		}
		if !dryRun && c.Note == "" {
			if _, err := run.Run(ctx, c.Command...); err != nil {
				c.Error = err.Error()
			} else {
				c.Done = true
				c.Note = run.Note()
			}
		}
		out = append(out, c)
	}
	return out, refused
}

// planDropInRewrites plans the rewrite of each drop-in written in another schema than the
// root (content) in the root's: what NVIDIA's engine writes against that root. It also
// tells whether a rewrite carries the nvidia runtime.
func planDropInRewrites(h *Host, r *rep.Report, paths ContainerdPaths, content string) (edits []fileEdit, nvidia bool) {
	root, err := ParseContainerd(content)
	if err != nil || r.Containerd == nil {
		return nil, false
	}
	rel, ok := ParseContainerdRelease(r.Containerd.Release)
	if !ok {
		return nil, false
	}
	load := h.ModelLoad(paths.Config, rel)
	for _, m := range mismatched(root, load.dropIns(paths.Config), rel) {
		newContent, err := rewriteDropIn(root, m.cfg)
		if err != nil {
			continue // named by the check, to fix by hand
		}
		old, _ := h.Read(m.path)
		edits = append(edits, fileEdit{check: rep.CheckContainerd, path: m.path, old: old, content: newContent,
			note: fmt.Sprintf("a version %d drop-in under a version %d root: rewritten in the root's schema, as NVIDIA's engine writes it", m.cfg.Version, root.Version)})
		if _, ok := m.cfg.RuntimeBinary("nvidia"); ok {
			nvidia = true
		}
	}
	return edits, nvidia
}

// judgeContainerdEdits has containerd load its configuration after the edits to it are in
// place (before any restart): if it refuses them, each is put back from its backup and the
// refusal, in containerd's words, is returned. RKE2/K3s render their config at start; their
// files are not edited here.
func judgeContainerdEdits(ctx context.Context, h *Host, r *rep.Report, edits []fileEdit, changes []rep.Change, now time.Time) error {
	var touched []int
	for i, e := range edits {
		if e.check == rep.CheckContainerd && changes[i].Done {
			touched = append(touched, i)
		}
	}
	if len(touched) == 0 || r.Flavour == rep.FlavourRKE2 || r.Flavour == rep.FlavourK3s {
		return nil
	}
	paths := ContainerdFor(r.Flavour, r.ContainerdConfigVersion)
	rootVersion := r.ContainerdConfigVersion
	if c, ok := h.Read(paths.Config); ok {
		if root, err := ParseContainerd(c); err == nil {
			rootVersion = int(root.Version)
		}
	}
	load, info := h.LoadContainerd(ctx, r.Flavour, paths.Config, rootVersion)
	if load.Loads() {
		return nil
	}
	var put []string
	for _, i := range touched {
		e := edits[i]
		var err error
		if e.old == "" && !changes[i].Done {
			continue
		}
		if e.old == "" {
			err = os.Remove(h.Path(e.path))
		} else {
			_, err = WriteAtomic(h.Path(e.path), []byte(e.old), now.Add(time.Second))
		}
		if err != nil {
			changes[i].Error = "containerd refuses the new configuration, and putting it back failed: " + err.Error()
			continue
		}
		changes[i].Done = false
		changes[i].Error = "put back: containerd refuses the new configuration"
		put = append(put, e.path)
	}
	file := load.ErrFile
	if file == "" {
		file = paths.Config
	}
	return fmt.Errorf("containerd %s refuses the configuration it would restart with (%s): %s; %s put back from the backup and containerd not restarted: fix %s by hand, then run the same command again",
		info.Release, judgeSays(info), load.Err, strings.Join(put, ", "), file)
}

// commitEdits writes the edits: every file is staged (backed up, new content synced beside
// it) before any is replaced, so a full disk, a read-only file system or a crash while
// staging changes nothing; then each is renamed into place. changes[i] (edit i's change)
// is marked done or given the error.
func commitEdits(h *Host, edits []fileEdit, changes []rep.Change, now time.Time) error {
	staged := make([]*Staged, 0, len(edits))
	abort := func() {
		for _, st := range staged {
			st.Abort()
		}
	}
	for i, e := range edits {
		st, err := Stage(h.Path(e.path), []byte(e.content), now)
		if err != nil {
			abort()
			changes[i].Error = err.Error()
			return fmt.Errorf("%s: %w (nothing was changed)", e.path, err)
		}
		staged = append(staged, st)
	}
	for i, st := range staged {
		if err := st.Commit(); err != nil {
			abort()
			changes[i].Error = err.Error()
			return fmt.Errorf("%s: %w", edits[i].path, err)
		}
		changes[i].Done = true
	}
	return nil
}
