package simnodes

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/buildinfo"
	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig"
	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/pkginstall"
)

// PackageHosts are nodes whose host packages are installed for real in the simulation: each
// has a Debian root (hack/testenv/debian-root.sh) with the files of a fake host root on top, its
// GPUs on the fake PCI bus and no NVIDIA driver or toolkit; its apt sources hold a stand-in
// Ubuntu archive served on Addr, which also serves a mirror of NVIDIA's toolkit repository
// under /nvidia (stand-in packages under NVIDIA's names that install small scripts, signed
// with a key made here). The node agent runs in process for these nodes: the package
// manager's commands (apt-get, dpkg) run in the root under chroot, every other host
// command is recorded; a reboot boots the root (hostconfigtest.Boot), RKE2/K3s render their
// containerd config again as they do when they start (with the nvidia runtime once the
// toolkit is there), and when a stand-in driver package is installed its version goes where
// the kernel tells a loaded driver's — the simulated host's kernel state, no GPU is driven.
type PackageHosts struct {
	// Addr is where the repositories are served (a fixed loopback port keeps the samples'
	// command lines the same from run to run).
	Addr string
	// Nodes maps a node to the fake host root laid over its Debian root.
	Nodes map[string]string

	repo    *hostconfigtest.AptRepo
	roots   map[string]string
	refuse  map[string]string        // node → the driver branch its kernel refuses to load
	archive []hostconfigtest.StandIn // the stand-in Ubuntu archive as published
	mu      sync.Mutex
}

// driverPackages are a driver version's packages of the stand-in archive; a branch
// conflicts with the other branches, as Ubuntu's do (apt removes them).
func driverPackages(branch, version string) []hostconfigtest.StandIn {
	var conflicts []string
	for b := range standInDrivers {
		if b != branch {
			conflicts = append(conflicts, b)
		}
	}
	sort.Strings(conflicts)
	with := func(name string) string {
		var cs []string
		for _, b := range conflicts {
			cs = append(cs, strings.ReplaceAll(name, "BRANCH", b))
		}
		return strings.Join(cs, ", ")
	}
	say := "#!/bin/sh\necho 'stand-in nvidia-smi " + version + " (kubectl-gpu simulation)'\n"
	return []hostconfigtest.StandIn{
		{Name: "nvidia-headless-no-dkms-" + branch + "-server", Version: version + "-0ubuntu0.22.04.1", Conflicts: with("nvidia-headless-no-dkms-BRANCH-server")},
		{Name: "nvidia-utils-" + branch + "-server", Version: version + "-0ubuntu0.22.04.1", Conflicts: with("nvidia-utils-BRANCH-server"), Files: map[string]string{"/usr/bin/nvidia-smi": say}},
	}
}

// PublishDriver adds a driver version to the stand-in archive, as the Ubuntu archive moves
// on: a branch's newer version, which an unpinned install would take.
func (p *PackageHosts) PublishDriver(branch, version string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.archive = append(p.archive, driverPackages(branch, version)...)
	return p.repo.Publish("ubuntu", "", p.archive...)
}

// RefuseDriver makes the node's simulated kernel refuse the branch's module from its next
// boot on, as Secure Boot refuses a module it cannot verify: the boot loads no driver. ""
// lets the node load every branch again.
func (p *PackageHosts) RefuseDriver(node, branch string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refuse == nil {
		p.refuse = map[string]string{}
	}
	p.refuse[node] = branch
}

// Mirror is the URL of the toolkit mirror (NVIDIA's paths kept) for --package-repo.
func (p *PackageHosts) Mirror() string { return "http://" + p.Addr + "/nvidia" }

// Close stops the repositories.
func (p *PackageHosts) Close() {
	if p.repo != nil {
		p.repo.Close()
	}
}

// standInDrivers are the driver branches the stand-in archive has, with their versions:
// the day-two tests move a host from one to the other.
var standInDrivers = map[string]string{"570": "570.195.03", "580": "580.95.05"}

func (p *PackageHosts) setUp(dir string, gpus func(node string) int) error {
	tarball := hostconfigtest.DebianRootTar()
	if tarball == "" {
		return fmt.Errorf("no Debian root for the package hosts: run hack/testenv/debian-root.sh (make tools)")
	}
	var err error
	if p.repo, err = hostconfigtest.NewAptRepoAt(filepath.Join(dir, "repos"), p.Addr); err != nil {
		return err
	}
	p.roots = map[string]string{}
	var kernels []string
	for node, name := range p.Nodes {
		root := filepath.Join(dir, node)
		if err := os.MkdirAll(root, 0o755); err != nil {
			return err
		}
		b, err := os.ReadFile(filepath.Join(hostconfigtest.Dir(), name, "proc/sys/kernel/osrelease"))
		if err != nil {
			return err
		}
		kernel := strings.TrimSpace(string(b))
		kernels = append(kernels, kernel)
		if err := hostconfigtest.UnpackDebianRoot(tarball, root, kernel); err != nil {
			return err
		}
		if err := hostconfigtest.DpkgInstall(context.Background(), root, hostconfigtest.UbuntuKernel(kernel, "linux-image-generic")...); err != nil {
			return err
		}
		if err := hostconfigtest.Overlay(name, root, gpus(node), "proc/driver", "usr/bin/nvidia-container-runtime", "usr/bin/nvidia-ctk", "var/lib/dpkg/status"); err != nil {
			return err
		}
		key, err := pkginstall.ReadKey(p.repo.PublicKey())
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(root, "usr/share/keyrings/stand-in-ubuntu-archive.gpg"), key.Binary, 0o644); err != nil {
			return err
		}
		src := "# stand-in Ubuntu archive (kubectl-gpu simulation)\ndeb [signed-by=/usr/share/keyrings/stand-in-ubuntu-archive.gpg] http://" + p.Addr + "/ubuntu /\n"
		if err := os.WriteFile(filepath.Join(root, "etc/apt/sources.list"), []byte(src), 0o644); err != nil {
			return err
		}
		p.roots[node] = root
	}
	say := func(what string) string { return "#!/bin/sh\necho 'stand-in " + what + " (kubectl-gpu simulation)'\n" }
	var archive []hostconfigtest.StandIn
	sort.Strings(kernels)
	for branch, version := range standInDrivers {
		for _, k := range kernels {
			archive = append(archive, hostconfigtest.StandIn{Name: "linux-modules-nvidia-" + branch + "-server-" + k, Version: k + ".1",
				Files: map[string]string{"/lib/modules/" + k + "/kernel/nvidia-" + branch + "srv/nvidia.ko.stand-in": "stand-in, not a kernel module\n"}})
		}
		// The modules metapackage that follows the hosts' kernel metapackage
		// (linux-image-generic in their dpkg status), as the Ubuntu archive has it.
		archive = append(archive, hostconfigtest.StandIn{Name: "linux-modules-nvidia-" + branch + "-server-generic", Version: kernels[len(kernels)-1] + ".1",
			Depends: "linux-modules-nvidia-" + branch + "-server-" + kernels[len(kernels)-1]})
		archive = append(archive, driverPackages(branch, version)...)
	}
	p.archive = archive
	if err := p.repo.Publish("ubuntu", "", archive...); err != nil {
		return err
	}
	v := "1.17.8-1"
	toolkit := []hostconfigtest.StandIn{
		{Name: "libnvidia-container1", Version: v},
		{Name: "libnvidia-container-tools", Version: v, Depends: "libnvidia-container1 (= " + v + ")", Files: map[string]string{"/usr/bin/nvidia-container-cli": say("nvidia-container-cli")}},
		{Name: "nvidia-container-toolkit-base", Version: v, Files: map[string]string{"/usr/bin/nvidia-ctk": say("nvidia-ctk"), "/usr/bin/nvidia-container-runtime": say("nvidia-container-runtime")}},
		{Name: "nvidia-container-toolkit", Version: v, Depends: "nvidia-container-toolkit-base (= " + v + "), libnvidia-container-tools (= " + v + ")",
			Files: map[string]string{"/usr/bin/nvidia-container-runtime-hook": say("nvidia-container-runtime-hook")}},
	}
	return p.repo.Publish("nvidia/libnvidia-container/stable/deb/amd64", "nvidia/libnvidia-container/gpgkey", toolkit...)
}

// packageRunner runs the package manager's commands in the root under chroot and records
// the others.
type packageRunner struct{ chroot *hostconfigtest.Chroot }

func (r packageRunner) Run(ctx context.Context, argv ...string) (string, error) {
	switch argv[0] {
	case "apt-get", "apt-cache", "env", "dpkg":
		return r.chroot.Run(ctx, argv...)
	}
	return "", nil
}

func (r packageRunner) Note() string {
	return "recorded, not run (simulated host: only the package manager runs, in its root)"
}

// report runs the agent in process for a pod on a package host.
func (p *PackageHosts) report(ctx context.Context, pod *corev1.Pod, reboot func(node string, boot func() (string, error))) string {
	node := pod.Spec.NodeName
	root := p.roots[node]
	args := pod.Spec.Containers[0].Args
	o := hostconfig.Options{Mode: rep.Mode(args[0]), AgentVersion: buildinfo.Version, Node: node, Arch: "amd64",
		Runner: packageRunner{chroot: &hostconfigtest.Chroot{Root: root}}, Install: pkginstall.Install{LockTimeout: 0, HTTP: http.DefaultClient}}
	for i := 1; i+1 < len(args); i++ {
		switch args[i] {
		case "--install-driver":
			o.Install.DriverBranch = args[i+1]
		case "--install-toolkit":
			o.Install.ToolkitVersion = args[i+1]
		case "--package-repo":
			o.Install.Repo = args[i+1]
		case "--boot-id":
			o.BootID = args[i+1]
		}
	}
	for _, a := range args {
		o.Apply.RestartRuntime = o.Apply.RestartRuntime || a == "--restart-runtime"
	}
	p.mu.Lock()
	r, _ := hostconfig.Run(ctx, &hostconfig.Host{Root: root}, o)
	p.mu.Unlock()
	if o.Mode == rep.ModeReboot && r != nil && len(r.Changes) == 1 && r.Changes[0].Done {
		go reboot(node, func() (string, error) { return p.boot(node) })
	}
	b, _ := json.Marshal(r)
	return string(b) + "\n"
}

// boot boots the node's root, and "loads" an installed stand-in driver (unless the node
// refuses its branch): its version goes where the kernel tells a loaded driver's.
func (p *PackageHosts) boot(node string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	root := p.roots[node]
	id, err := hostconfigtest.Boot(root)
	if err != nil {
		return "", err
	}
	h := &hostconfig.Host{Root: root}
	// RKE2 and K3s start at boot and render containerd's config again, with the nvidia
	// runtime when they find the toolkit (what their agent does; simulated here).
	if f := h.Flavour(); (f == rep.FlavourRKE2 || f == rep.FlavourK3s) && h.Exists(hostconfig.NvidiaRuntimeBinary) {
		cfg := hostconfig.ContainerdFor(f, 2).Config
		if old, ok := h.Read(cfg); ok {
			if content, changed, err := hostconfig.EditContainerd(old, true, false, true); err == nil && changed {
				if err := os.WriteFile(h.Path(cfg), []byte(content), 0o644); err != nil {
					return "", err
				}
			}
		}
	}
	st, _ := h.Read("/var/lib/dpkg/status")
	loaded := ""
	for _, stanza := range strings.Split(st, "\n\n") {
		if strings.HasPrefix(stanza, "Package: nvidia-headless-no-dkms-") && strings.Contains(stanza, "\nStatus: install ok installed\n") {
			for _, l := range strings.Split(stanza, "\n") {
				if v, ok := strings.CutPrefix(l, "Version: "); ok {
					loaded, _, _ = strings.Cut(v, "-")
				}
			}
		}
	}
	if b := p.refuse[node]; b != "" && strings.HasPrefix(loaded, b+".") {
		loaded = ""
	}
	if loaded == "" {
		_ = os.RemoveAll(h.Path("/proc/driver/nvidia"))
		return id, nil
	}
	version := "NVRM version: NVIDIA UNIX x86_64 Kernel Module  " + loaded + "  (stand-in loaded by the simulated boot)\n"
	if err := os.MkdirAll(h.Path("/proc/driver/nvidia"), 0o755); err != nil {
		return "", err
	}
	return id, os.WriteFile(h.Path("/proc/driver/nvidia/version"), []byte(version), 0o644)
}
