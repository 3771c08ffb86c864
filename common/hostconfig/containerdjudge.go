package hostconfig

// The host's own containerd as the judge of a config: its binary and release, its
// 'config dump', and LoadContainerd, which asks it and falls back on the loader model.
import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/NVIDIA/nvidia-container-toolkit/pkg/config/toml"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// ContainerdBinaries are where each flavour keeps the containerd it runs.
func containerdBinaries(f rep.Flavour) []string {
	switch f {
	case rep.FlavourRKE2:
		return []string{"/var/lib/rancher/rke2/bin/containerd"}
	case rep.FlavourK3s:
		return []string{"/var/lib/rancher/k3s/data/current/bin/containerd"}
	}
	return []string{"/usr/bin/containerd", "/usr/local/bin/containerd", "/usr/sbin/containerd", "/bin/containerd", "/opt/bin/containerd"}
}

// containerdBinary is the host's containerd ("" none).
func (h *Host) containerdBinary(f rep.Flavour) string {
	for _, b := range containerdBinaries(f) {
		if h.Exists(b) {
			return b
		}
	}
	return ""
}

// release is the installed containerd's version: the binary's own answer where it can be
// run, else the host's packages, else what the root config's version implies (guessed
// reports true).
func (h *Host) release(ctx context.Context, f rep.Flavour, rootVersion int) (rel ContainerdRelease, guessed bool) {
	if v, ok := h.runnableRelease(ctx, f); ok {
		return v, false
	}
	for _, p := range []string{"containerd.io", "containerd"} {
		if v, ok := ParseContainerdRelease(h.installedVersion(p, true)); ok {
			return v, false
		}
	}
	switch {
	case rootVersion >= 4:
		return ContainerdRelease{2, 3, 0}, true
	case rootVersion == 3:
		return ContainerdRelease{2, 0, 0}, true
	}
	return ContainerdRelease{1, 7, 17}, true
}

// canRun tells whether host commands really run (not a recorder).
func (h *Host) canRun() bool { return h.Exec != nil && h.Exec.Note() == "" }

// runnableRelease runs the host's containerd for its version: ok only when it ran and said
// one (a runner that cannot run it, such as a pod without CAP_SYS_CHROOT, is not
// containerd's refusal of anything). The answer is kept for the run.
func (h *Host) runnableRelease(ctx context.Context, f rep.Flavour) (ContainerdRelease, bool) {
	bin := h.containerdBinary(f)
	if bin == "" || !h.canRun() {
		return ContainerdRelease{}, false
	}
	if h.ran == nil {
		h.ran = map[string]runResult{}
	}
	r, seen := h.ran[bin]
	if !seen {
		out, err := h.Exec.Run(ctx, bin, "--version")
		r.rel, r.ok = ParseContainerdRelease(out)
		r.ok = r.ok && err == nil
		if !r.ok {
			r.err = oneLine(out)
			if err != nil {
				r.err = oneLine(err.Error())
			}
		}
		h.ran[bin] = r
	}
	return r.rel, r.ok
}

type runResult struct {
	rel ContainerdRelease
	ok  bool
	err string
}

// JudgeLoad has the host's own containerd load the configuration at path (`containerd
// --config path config dump`, in the host's namespaces). ok is false where no containerd
// can be run (no binary, or commands that do not really run): the model must answer.
func (h *Host) JudgeLoad(ctx context.Context, f rep.Flavour, path string, rel ContainerdRelease) (*ContainerdLoad, bool) {
	bin := h.containerdBinary(f)
	if _, ok := h.runnableRelease(ctx, f); !ok {
		return nil, false
	}
	l := &ContainerdLoad{Release: rel}
	out, err := h.Exec.Run(ctx, bin, "--config", path, "config", "dump")
	var body, logs []string
	for _, line := range strings.Split(out, "\n") {
		if logLine.MatchString(line) {
			logs = append(logs, line)
			continue
		}
		body = append(body, line)
	}
	if err != nil {
		msg := strings.TrimSpace(strings.Join(body, "\n"))
		for _, line := range logs {
			if m := logMsg.FindStringSubmatch(line); msg == "" && m != nil && (strings.Contains(line, "level=fatal") || strings.Contains(line, "level=error")) {
				msg = m[1]
			}
		}
		if msg == "" {
			msg = err.Error()
		}
		l.Err = fmt.Errorf("%s", oneLine(msg))
		l.ErrFile = fileIn(msg)
		return l, true
	}
	t, perr := toml.Load(strings.Join(body, "\n"))
	if perr != nil {
		l.Err = fmt.Errorf("containerd's dump does not parse: %w", perr)
		return l, true
	}
	if v, ok := t.Get("version").(int64); ok {
		l.Version = int(v)
	}
	plugins, _ := t.ToMap()["plugins"].(map[string]any)
	l.CRI, _ = plugins[rel.criPlugin(l.Version)].(map[string]any)
	return l, true
}

// LoadContainerd is what containerd makes of the configuration at path: its own loader's
// answer where it can be run (judge "containerd"), else the model's (judge "model").
func (h *Host) LoadContainerd(ctx context.Context, f rep.Flavour, path string, rootVersion int) (*ContainerdLoad, *rep.ContainerdLoad) {
	rel, guessed := h.release(ctx, f, rootVersion)
	model := h.ModelLoad(path, rel)
	info := &rep.ContainerdLoad{Judge: rep.JudgeModel, Release: rel.String(), ReleaseGuessed: guessed}
	if bin := h.containerdBinary(f); bin != "" && h.canRun() {
		if r := h.ran[bin]; !r.ok && r.err != "" {
			info.NotRun = "could not run " + bin + ": " + r.err
		}
	}
	l := model
	if real, ok := h.JudgeLoad(ctx, f, path, rel); ok {
		info.Judge, info.Binary = rep.JudgeContainerd, h.containerdBinary(f)
		real.Files, real.PerFile = model.Files, model.PerFile
		if real.ErrFile == "" && !real.Loads() {
			real.ErrFile = model.ErrFile
		}
		if real.Loads() && model.missing != "" {
			// 2.x's `config dump` skips an import that is not there (it ignores a
			// not-exist error); its daemon refuses to start (tested with the real daemon).
			real.Err, real.ErrFile = fmt.Errorf("imports %s, which is not there: containerd %s does not start (its daemon refuses the file; `config dump` skips it)", model.missing, rel), model.missing
		}
		l = real
	}
	info.Files, info.Loads, info.Version = l.Files, l.Loads(), l.Version
	if l.Err != nil {
		info.Error = l.Err.Error()
	}
	return l, info
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

var tomlPath = regexp.MustCompile(`/[^\s:"']+\.toml`)

// fileIn is the last config file a message names ("" none).
func fileIn(msg string) string {
	m := tomlPath.FindAllString(msg, -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1]
}
