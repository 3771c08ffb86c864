package hostconfig

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/NVIDIA/go-nvlib/pkg/nvpci"
	"sigs.k8s.io/yaml"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// Required kernel modules and sysctls for Kubernetes networking (both runbooks).
var (
	RequiredModules = []string{"overlay", "br_netfilter"}
	RequiredSysctls = []string{"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables", "net.ipv4.ip_forward"}
)

// Files this tool writes when it persists settings.
const (
	ModulesFile  = "/etc/modules-load.d/kubectl-gpu.conf"
	SysctlFile   = "/etc/sysctl.d/99-kubectl-gpu.conf"
	NouveauFile  = "/etc/modprobe.d/blacklist-nouveau.conf"
	KubeletFile  = "/var/lib/kubelet/config.yaml"
	secureBootEF = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
)

// GPUInfo enriches the report with what NVML says (the agent supplies it; nil: skipped).
type GPUInfo func(r *rep.Report) error

// Check runs every check against the host and fills r.
func Check(ctx context.Context, h *Host, r *rep.Report, nvml GPUInfo) {
	osr := h.OSRelease()
	r.OS = osr["PRETTY_NAME"]
	r.Kernel = h.Kernel()
	r.BootID = h.BootID()
	r.Flavour = h.Flavour()
	st := rep.OK
	if r.OS == "" {
		st = rep.Warn
	}
	r.Add(rep.CheckOS, st, fmt.Sprintf("%s, kernel %s", dash(r.OS), dash(r.Kernel)), "")
	flavourMsg := map[rep.Flavour]string{rep.FlavourKubeadm: "kubeadm (/etc/kubernetes)", rep.FlavourRKE2: "RKE2 (embedded containerd)", rep.FlavourK3s: "K3s (embedded containerd)", rep.FlavourUnknown: "unknown distribution: containerd checks assume /etc/containerd"}[r.Flavour]
	r.Add(rep.CheckFlavour, rep.OK, flavourMsg, "")

	mods := h.LoadedModules()
	checkPCI(h, r)
	hasGPU := len(r.GPUs) > 0
	checkDriver(h, r, mods, hasGPU)
	if nvml != nil && r.DriverVersion != "" {
		if err := nvml(r); err != nil {
			r.Add(rep.CheckNVML, rep.Warn, "NVML: "+err.Error(), "check that libnvidia-ml.so.1 of the running driver is installed on the host")
		}
	} else if r.DriverVersion == "" {
		r.Add(rep.CheckNVML, rep.Skipped, "no NVIDIA driver loaded: NVML not queried", "")
	}
	checkXID(h, r)
	checkFabricManager(h, r)
	checkDriverLibraries(h, r)
	checkDriverKernels(h, r)
	checkNouveau(h, r, mods, hasGPU)
	checkSecureBoot(h, r)
	checkHeaders(h, r)
	checkToolkit(h, r)
	checkDevChar(h, r)
	checkContainerd(ctx, h, r)
	checkCDI(h, r)
	checkKubeletPlugins(h, r)
	checkModules(h, r, mods)
	checkSysctl(h, r)
	checkSwap(h, r)
}

func checkPCI(h *Host, r *rep.Report) {
	var devs []*nvpci.NvidiaPCIDevice
	var err error
	if h.Exists(nvpci.PCIDevicesRoot) {
		devs, err = nvpci.New(nvpci.WithPCIDevicesRoot(h.Path(nvpci.PCIDevicesRoot)), nvpci.WithLogger(quiet{})).GetGPUs()
	}
	if err != nil {
		r.Add(rep.CheckPCI, rep.Warn, "cannot read the PCI bus: "+err.Error(), "")
		return
	}
	slots := h.pciSlots()
	for _, d := range devs {
		r.GPUs = append(r.GPUs, rep.GPU{PCIAddress: d.Address, DeviceID: fmt.Sprintf("10de:%04x", d.Device), Name: d.DeviceName, Driver: d.Driver,
			Slot: slots[strings.TrimSuffix(strings.ToLower(d.Address), ".0")]})
	}
	if len(devs) == 0 {
		r.Add(rep.CheckPCI, rep.Fail, "no NVIDIA GPU on the PCI bus", "this is not a GPU node: leave it out (name nodes or use -l)")
		return
	}
	r.Add(rep.CheckPCI, rep.OK, fmt.Sprintf("%d NVIDIA GPU(s) on the PCI bus", len(devs)), "")
}

// pciSlots maps a bus address (domain:bus:device) to the name of the physical slot it sits
// in (/sys/bus/pci/slots/NAME/address).
func (h *Host) pciSlots() map[string]string {
	out := map[string]string{}
	for _, p := range h.Glob("/sys/bus/pci/slots/*/address") {
		if a, ok := h.Read(p); ok {
			out[strings.ToLower(strings.TrimSpace(a))] = filepath.Base(filepath.Dir(p))
		}
	}
	return out
}

type quiet struct{}

func (quiet) Debugf(string, ...any)   {}
func (quiet) Infof(string, ...any)    {}
func (quiet) Warningf(string, ...any) {}
func (quiet) Errorf(string, ...any)   {}
func (quiet) Tracef(string, ...any)   {}

var driverVersion = regexp.MustCompile(`Kernel Module(?: for [a-z0-9_]+)?\s+([0-9]+\.[0-9]+(?:\.[0-9]+)?)`)

func checkDriver(h *Host, r *rep.Report, mods map[string]bool, hasGPU bool) {
	if s, ok := h.Read("/proc/driver/nvidia/version"); ok {
		if m := driverVersion.FindStringSubmatch(s); m != nil {
			r.DriverVersion = m[1]
		}
	}
	if r.DriverVersion == "" {
		if s, ok := h.Read("/sys/module/nvidia/version"); ok {
			r.DriverVersion = strings.TrimSpace(s)
		}
	}
	r.DriverPackage = h.driverPackage()
	switch {
	case r.DriverVersion != "":
		r.Add(rep.CheckDriver, rep.OK, "NVIDIA driver "+r.DriverVersion+" loaded", "")
	case mods["nvidia"]:
		r.Add(rep.CheckDriver, rep.Warn, "nvidia module loaded but its version is unreadable", "")
	case hasGPU && r.DriverPackage != "":
		r.Add(rep.CheckDriver, rep.Warn, "no NVIDIA driver loaded, though driver "+r.DriverPackage+" is installed: its kernel module did not load",
			"reboot the node if it has not been since the install; if it has, its kernel log says why (journalctl -k | grep -i -e nvidia -e nvrm): a module Secure Boot refuses, or one built for another kernel")
	case hasGPU:
		r.Add(rep.CheckDriver, rep.Warn, "no NVIDIA driver loaded on the host", "install the driver on the host, or let the GPU Operator's driver container install it (kubectl gpu operator install)")
	default:
		r.Add(rep.CheckDriver, rep.Skipped, "no NVIDIA GPU: no driver needed", "")
	}
}

func checkNouveau(h *Host, r *rep.Report, mods map[string]bool, hasGPU bool) {
	blacklisted := false
	for _, f := range h.Glob("/etc/modprobe.d/*.conf") {
		for _, l := range h.Lines(f) {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "blacklist" && f[1] == "nouveau" {
				blacklisted = true
			}
		}
	}
	switch {
	case mods["nouveau"] && hasGPU:
		r.Add(rep.CheckNouveau, rep.Fail, "nouveau is loaded: the NVIDIA driver cannot take the GPUs", "blacklist nouveau and rebuild the initramfs (kubectl gpu prep --apply), then reboot")
	case !blacklisted && hasGPU && r.DriverVersion == "":
		r.Add(rep.CheckNouveau, rep.Warn, "nouveau is not blacklisted: it may take the GPUs at the next boot", "kubectl gpu prep --apply blacklists it")
	default:
		r.Add(rep.CheckNouveau, rep.OK, "nouveau not loaded", "")
	}
}

func checkSecureBoot(h *Host, r *rep.Report) {
	s, ok := h.Read(secureBootEF)
	switch {
	case !ok:
		r.Add(rep.CheckSecureBoot, rep.OK, "Secure Boot off or not UEFI", "")
	case len(s) >= 5 && s[4] == 1:
		st := rep.Warn
		if r.DriverVersion != "" {
			st = rep.OK
		}
		r.Add(rep.CheckSecureBoot, st, "Secure Boot is on: only signed kernel modules load", "sign the NVIDIA module (DKMS with an enrolled MOK key) or use signed precompiled drivers")
	default:
		r.Add(rep.CheckSecureBoot, rep.OK, "Secure Boot off", "")
	}
}

func checkHeaders(h *Host, r *rep.Report) {
	k := r.Kernel
	if k == "" {
		r.Add(rep.CheckHeaders, rep.Skipped, "kernel release unknown", "")
		return
	}
	if h.Exists("/lib/modules/"+k+"/build") || h.Exists("/usr/src/linux-headers-"+k) || h.Exists("/usr/src/kernels/"+k) {
		r.Add(rep.CheckHeaders, rep.OK, "kernel headers for "+k+" present", "")
		return
	}
	st := rep.Warn
	if r.DriverVersion != "" {
		st = rep.OK
	}
	r.Add(rep.CheckHeaders, st, "no kernel headers for "+k, "the operator's driver container builds against them: install linux-headers-"+k+" (or kernel-devel on RHEL)")
}

func checkToolkit(h *Host, r *rep.Report) {
	rt, ctk := h.Exists(NvidiaRuntimeBinary), h.Exists("/usr/bin/nvidia-ctk")
	r.ToolkitVersion = h.installedVersion("nvidia-container-toolkit", true)
	switch {
	case rt && ctk:
		v := r.ToolkitVersion
		if v == "" {
			v = "(version unknown)"
		}
		r.Add(rep.CheckToolkit, rep.OK, "NVIDIA Container Toolkit "+v+" installed", "")
	case rt || ctk:
		r.Add(rep.CheckToolkit, rep.Warn, "NVIDIA Container Toolkit partly installed", "reinstall the nvidia-container-toolkit package")
	default:
		r.Add(rep.CheckToolkit, rep.Warn, "NVIDIA Container Toolkit not installed on the host", "install it on the host, or let the GPU Operator's toolkit container do it")
	}
}

func (h *Host) kubeletCgroupDriver() string {
	s, ok := h.Read(KubeletFile)
	if !ok {
		return ""
	}
	var cfg struct {
		CgroupDriver string `json:"cgroupDriver"`
	}
	if err := yaml.Unmarshal([]byte(s), &cfg); err != nil {
		return ""
	}
	return cfg.CgroupDriver
}

// persistedModules returns the modules listed in modules-load.d files (and /etc/modules).
func (h *Host) persistedModules() map[string]bool {
	m := map[string]bool{}
	files := append(h.Glob("/etc/modules-load.d/*.conf"), "/etc/modules")
	for _, f := range files {
		for _, l := range h.Lines(f) {
			m[strings.Fields(l)[0]] = true
		}
	}
	return m
}

// distributionPersists tells whether the distribution itself loads the modules and sets
// the sysctls every time it starts: RKE2 and K3s do (their shared agent code,
// pkg/agent/syssetup, loads overlay and br_netfilter and sets forwarding and
// bridge-nf-call-iptables), so on them the live values are what matters.
func distributionPersists(f rep.Flavour) bool { return f == rep.FlavourRKE2 || f == rep.FlavourK3s }

func checkModules(h *Host, r *rep.Report, loaded map[string]bool) {
	persisted := h.persistedModules()
	own := distributionPersists(r.Flavour)
	var missing []string
	for _, m := range RequiredModules {
		switch {
		case !loaded[m] && !persisted[m] && !own:
			missing = append(missing, m+" (not loaded, not persisted)")
		case !loaded[m]:
			missing = append(missing, m+" (not loaded)")
		case !persisted[m] && !own:
			missing = append(missing, m+" (not persisted)")
		}
	}
	if len(missing) > 0 {
		r.Add(rep.CheckModules, rep.Fail, "kernel modules: "+strings.Join(missing, ", "), "kubectl gpu prep --apply loads them and lists them in "+ModulesFile)
		return
	}
	if own {
		r.Add(rep.CheckModules, rep.OK, "overlay and br_netfilter loaded ("+string(r.Flavour)+" loads them every time it starts)", "")
		return
	}
	r.Add(rep.CheckModules, rep.OK, "overlay and br_netfilter loaded and persisted", "")
}

// persistedSysctls parses the sysctl.d files in systemd-sysctl's order (later wins).
func (h *Host) persistedSysctls() map[string]string {
	m := map[string]string{}
	var files []string
	for _, d := range []string{"/usr/lib/sysctl.d", "/run/sysctl.d", "/etc/sysctl.d"} {
		files = append(files, h.Glob(d+"/*.conf")...)
	}
	files = append(files, "/etc/sysctl.conf")
	for _, f := range files {
		for _, l := range h.Lines(f) {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				continue
			}
			k = strings.ReplaceAll(strings.TrimPrefix(strings.TrimSpace(k), "-"), "/", ".")
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func (h *Host) liveSysctl(key string) (string, bool) {
	s, ok := h.Read("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
	return strings.TrimSpace(s), ok
}

func checkSysctl(h *Host, r *rep.Report) {
	persisted := h.persistedSysctls()
	own := distributionPersists(r.Flavour)
	var bad []string
	for _, k := range RequiredSysctls {
		live, ok := h.liveSysctl(k)
		switch {
		case !ok:
			bad = append(bad, k+" absent (br_netfilter not loaded?)")
		case live != "1":
			bad = append(bad, k+"="+live)
		}
		if persisted[k] != "1" && !own {
			bad = append(bad, k+" not persisted")
		}
	}
	if len(bad) > 0 {
		r.Add(rep.CheckSysctl, rep.Fail, "sysctl: "+strings.Join(bad, ", "), "kubectl gpu prep --apply writes "+SysctlFile+" and applies it")
		return
	}
	if own {
		r.Add(rep.CheckSysctl, rep.OK, "bridge-nf-call-iptables/ip6tables and ip_forward = 1 ("+string(r.Flavour)+" sets them every time it starts)", "")
		return
	}
	r.Add(rep.CheckSysctl, rep.OK, "bridge-nf-call-iptables/ip6tables and ip_forward = 1, persisted", "")
}

// swapLines returns the active swap devices and the fstab lines that enable swap.
func (h *Host) swapLines() (active []string, fstab []string) {
	for i, l := range h.Lines("/proc/swaps") {
		if i == 0 && strings.HasPrefix(l, "Filename") {
			continue
		}
		active = append(active, strings.Fields(l)[0])
	}
	for _, l := range h.Lines("/etc/fstab") {
		if f := strings.Fields(l); len(f) >= 3 && f[2] == "swap" {
			fstab = append(fstab, l)
		}
	}
	return active, fstab
}

func checkSwap(h *Host, r *rep.Report) {
	active, fstab := h.swapLines()
	switch {
	case len(active) > 0 || len(fstab) > 0:
		var parts []string
		if len(active) > 0 {
			parts = append(parts, "active: "+strings.Join(active, " "))
		}
		if len(fstab) > 0 {
			parts = append(parts, fmt.Sprintf("%d swap line(s) in /etc/fstab", len(fstab)))
		}
		r.Add(rep.CheckSwap, rep.Fail, "swap is on ("+strings.Join(parts, "; ")+")", "kubectl gpu prep --apply runs swapoff -a and comments out the fstab lines")
	default:
		r.Add(rep.CheckSwap, rep.OK, "swap off", "")
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// driverPackage is the host driver version dpkg has installed ("" none, or an rpm host):
// the version of Ubuntu's nvidia-headless or NVIDIA's nvidia-driver / cuda-drivers package.
func (h *Host) driverPackage() string {
	installed := h.dpkgInstalled()
	names := make([]string, 0, len(installed))
	for name := range installed {
		if strings.HasPrefix(name, "nvidia-headless-") || strings.HasPrefix(name, "nvidia-driver-") || strings.HasPrefix(name, "cuda-drivers") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		if v := rep.UpstreamVersion(installed[name]["Version"]); v != "" {
			return v
		}
	}
	return ""
}
