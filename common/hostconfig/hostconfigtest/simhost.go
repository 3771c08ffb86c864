package hostconfigtest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// SimHost is a Runner for a fake host root that is not a node of its own: it records every
// command and gives those the agent's fixes run their effect on the root's kernel state, as
// Boot gives a reboot its effect — modprobe loads the modules (/proc/modules), sysctl
// --system applies /etc/sysctl.conf and /etc/sysctl.d (/proc/sys), swapoff -a turns every
// swap off (/proc/swaps). Anything else (a runtime restart, a reboot request, a package
// manager) is only recorded — except that restarting rke2 or k3s renders their containerd
// config as they do at start when the host has no template of its own: the nvidia runtime
// added where the toolkit's nvidia-container-runtime is on the host. No driver is ever
// loaded: that is the GPU boundary.
type SimHost struct {
	Root string
	mu   sync.Mutex
	Ran  [][]string
}

// Note says how the commands were run.
func (s *SimHost) Note() string {
	return "simulated host: recorded, with its effect on the host's kernel state"
}

// Run records argv and takes its effect.
func (s *SimHost) Run(_ context.Context, argv ...string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Ran = append(s.Ran, argv)
	if len(argv) == 0 {
		return "", nil
	}
	switch filepath.Base(argv[0]) {
	case "modprobe":
		var mods []string
		for _, a := range argv[1:] {
			if !strings.HasPrefix(a, "-") {
				mods = append(mods, a)
			}
		}
		return "", loadModules(s.Root, mods, nil)
	case "sysctl":
		if len(argv) > 1 && argv[1] == "--system" {
			return "", applySysctls(s.Root)
		}
	case "swapoff":
		if len(argv) > 1 && argv[1] == "-a" {
			return "", keepSwaps(s.Root, map[string]bool{})
		}
	case "systemctl":
		if len(argv) == 3 && argv[1] == "restart" {
			for _, d := range []string{"rke2", "k3s"} {
				if argv[2] == d+"-server" || argv[2] == d+"-agent" || argv[2] == d {
					return "", renderK3s(s.Root, d)
				}
			}
		}
	}
	return "", nil
}

// renderK3s renders rke2's or k3s's containerd config (distro) at start, as their agent
// does when no config.toml.tmpl is there: the runtimes it finds on the host are added
// (k3s's pkg/agent/containerd findNvidiaContainerRuntimes: nvidia-container-runtime in
// /usr/bin or /usr/local/nvidia/toolkit). With a template of the host's own nothing is
// rendered here (the simulation does not evaluate Go templates).
func renderK3s(root, distro string) error {
	dir := filepath.Join(root, "var/lib/rancher", distro, "agent/etc/containerd")
	for _, t := range []string{"config.toml.tmpl", "config-v3.toml.tmpl"} {
		if _, err := os.Stat(filepath.Join(dir, t)); err == nil {
			return nil
		}
	}
	cfg := filepath.Join(dir, "config.toml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		return nil // not this host's distribution
	}
	bin := ""
	for _, p := range []string{"/usr/bin/nvidia-container-runtime", "/usr/local/nvidia/toolkit/nvidia-container-runtime"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			bin = p
			break
		}
	}
	if bin == "" || strings.Contains(string(b), `runtimes."nvidia"]`) || strings.Contains(string(b), "runtimes.nvidia]") {
		return nil
	}
	plugin := `io.containerd.grpc.v1.cri".containerd`
	if strings.Contains(string(b), "io.containerd.cri.v1.runtime") {
		plugin = `io.containerd.cri.v1.runtime".containerd`
	}
	table := `plugins."` + plugin + `.runtimes."nvidia"`
	block := fmt.Sprintf("\n[%s]\n  runtime_type = \"io.containerd.runc.v2\"\n\n[%s.options]\n  BinaryName = %q\n  SystemdCgroup = true\n", table, table, bin)
	return writeFile(cfg, string(b)+block)
}

// lines are a host file's lines that are not empty or comments.
func lines(root, p string) []string {
	f, err := os.Open(filepath.Join(root, p))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l != "" && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, ";") {
			out = append(out, l)
		}
	}
	return out
}

func glob(root, p string) []string {
	m, _ := filepath.Glob(filepath.Join(root, p))
	for i := range m {
		m[i], _ = filepath.Rel(root, m[i])
	}
	return m
}

// loadModules adds mods to /proc/modules (those not there), dropping first the loaded
// modules drop says (a boot's blacklist).
func loadModules(root string, mods []string, drop map[string]bool) error {
	var modules []string
	have := map[string]bool{}
	for _, l := range lines(root, "proc/modules") {
		fs := strings.Fields(l)
		gone := drop[fs[0]]
		if len(fs) > 3 {
			for _, by := range strings.Split(fs[3], ",") {
				gone = gone || drop[by]
			}
		}
		if !gone {
			modules, have[fs[0]] = append(modules, l), true
		}
	}
	for _, m := range mods {
		if !have[m] && !drop[m] {
			modules, have[m] = append(modules, m+" 16384 0 - Live 0x0000000000000000"), true
		}
	}
	return writeFile(filepath.Join(root, "proc/modules"), strings.Join(modules, "\n")+"\n")
}

// applySysctls sets /proc/sys from /etc/sysctl.conf and /etc/sysctl.d, as sysctl --system.
func applySysctls(root string) error {
	for _, f := range append([]string{"etc/sysctl.conf"}, glob(root, "etc/sysctl.d/*.conf")...) {
		for _, l := range lines(root, f) {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				continue
			}
			p := filepath.Join(root, "proc/sys", strings.ReplaceAll(strings.TrimSpace(k), ".", "/"))
			if err := writeFile(p, strings.TrimSpace(v)+"\n"); err != nil {
				return err
			}
		}
	}
	return nil
}

// keepSwaps leaves on only the swaps of active.
func keepSwaps(root string, active map[string]bool) error {
	swaps := []string{"Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority"}
	for i, l := range lines(root, "proc/swaps") {
		if fs := strings.Fields(l); i > 0 && len(fs) > 0 && active[fs[0]] {
			swaps = append(swaps, l)
		}
	}
	return writeFile(filepath.Join(root, "proc/swaps"), strings.Join(swaps, "\n")+"\n")
}
