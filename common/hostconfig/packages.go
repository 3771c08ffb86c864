package hostconfig

import (
	"fmt"
	"strconv"
	"strings"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/pkginstall"
)

// Install is what --install-driver / --install-toolkit ask for (see package pkginstall,
// which the plugin shares).
type Install = pkginstall.Install

// Names the agent and the tests share with the plugin.
const (
	DefaultDriverBranch = pkginstall.DefaultDriverBranch
	ToolkitLatest       = pkginstall.ToolkitLatest
	UnsupportedOS       = pkginstall.UnsupportedOS
	SupportedOS         = pkginstall.SupportedOS
)

// ValidateInstall checks an Install's branch, version, mirror URL and key.
var ValidateInstall = pkginstall.Validate

// NVIDIA's package hosts, and the paths a mirror keeps.
const (
	NVIDIAToolkitHost = "https://nvidia.github.io"
	NVIDIACUDAHost    = "https://developer.download.nvidia.com"
)

// Host files package installs write.
const (
	ToolkitAptList    = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
	ToolkitAptKeyring = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
	CUDAAptKeyring    = "/usr/share/keyrings/cuda-archive-keyring.gpg"
	ToolkitYumRepo    = "/etc/yum.repos.d/nvidia-container-toolkit.repo"
	CUDAKeyringRPM    = "/etc/pki/rpm-gpg/RPM-GPG-KEY-NVIDIA-CUDA"
	ToolkitKeyringRPM = "/etc/pki/rpm-gpg/RPM-GPG-KEY-nvidia-container-toolkit"
)

func keyring(b []byte) (pkginstall.Key, error) { return pkginstall.ReadKey(b) }

// distro is what package installs need to know of the host's system.
type distro struct {
	ID, Version string // ubuntu 22.04, debian 12, rhel 9
	Apt         bool
	// CUDA is the CUDA repository's directory (ubuntu2204/x86_64, debian12/x86_64, rhel9/sbsa).
	CUDA string
}

func (h *Host) distro(arch string) (distro, error) {
	osr := h.OSRelease()
	id, ver := osr["ID"], osr["VERSION_ID"]
	like := " " + osr["ID_LIKE"] + " "
	cudaArch := map[string]string{"amd64": "x86_64", "arm64": "sbsa"}[arch]
	if cudaArch == "" {
		return distro{}, fmt.Errorf("architecture %s is not supported for package installs (amd64, arm64)", arch)
	}
	major, _, _ := strings.Cut(ver, ".")
	name := osr["PRETTY_NAME"]
	if name == "" {
		name = strings.TrimSpace(id + " " + ver)
	}
	switch {
	case id == "ubuntu" && (ver == "20.04" || ver == "22.04" || ver == "24.04"):
		return distro{ID: id, Version: ver, Apt: true, CUDA: "ubuntu" + strings.ReplaceAll(ver, ".", "") + "/" + cudaArch}, nil
	case id == "debian" && (major == "11" || major == "12"):
		return distro{ID: id, Version: major, Apt: true, CUDA: "debian" + major + "/" + cudaArch}, nil
	case (id == "rhel" || strings.Contains(like, " rhel ") || strings.Contains(like, " centos ")) && (major == "8" || major == "9"):
		return distro{ID: "rhel", Version: major, CUDA: "rhel" + major + "/" + cudaArch}, nil
	}
	return distro{}, fmt.Errorf("%s %s (supported: %s)", name, UnsupportedOS, SupportedOS)
}

// repo is a package repository prep adds: its source file and its signing key.
type repo struct {
	check   string
	name    string // what it is, for the plan
	list    string // host path of the source file
	keyPath string // host path of the keyring
	keyURL  string
	// content renders the source file for a keyring path (the plan's resolution uses a
	// private copy of the keyring).
	content func(keyPath string) string
}

// pkgStep is one package install planned on a host.
type pkgStep struct {
	check    string
	what     string // "NVIDIA driver 580", "NVIDIA Container Toolkit 1.17.8"
	packages []string
	reboot   bool
	module   string // dnf module stream instead of packages ("nvidia-driver:580-dkms")
	// track is a metapackage added when the repositories have it: on Ubuntu the modules
	// package that follows the kernel metapackage, so a kernel upgrade brings its modules.
	track string
	note  string // what the plan says of track
	// needs is a package the step needs from the repositories; without it the fallback
	// step is taken instead, or, when refuse is set, the install is refused with it. On
	// Ubuntu: the running kernel's precompiled modules, else DKMS as ubuntu-drivers does.
	needs    string
	fallback *pkgStep
	refuse   string
	// pin is the exact driver version asked for: its packages (not the kernel's modules,
	// versioned by the kernel) are installed at the repositories' version of it.
	pin string
}

// packagePlan is what an Install will do on a host.
type packagePlan struct {
	d     distro
	repos []repo
	keys  map[string]pkginstall.Key // by repo list path
	steps []pkgStep
	// refused is why nothing may be installed (a plan-time refusal).
	refused string
}

func mirror(i Install, host, p string) string {
	if i.Repo != "" {
		return strings.TrimRight(i.Repo, "/") + p
	}
	return host + p
}

func aptToolkitVersion(v string) string {
	if strings.Contains(v, "-") {
		return v
	}
	return v + "-1"
}

// planPackages decides the repositories and packages an Install needs on this host, from
// its files alone (no command, no network).
func planPackages(h *Host, r *rep.Report, i Install, arch string) (*packagePlan, error) {
	d, err := h.distro(arch)
	if err != nil {
		return nil, err
	}
	p := &packagePlan{d: d, keys: map[string]pkginstall.Key{}}
	sources := h.aptSources()
	if !d.Apt {
		sources = h.yumSources()
	}
	if i.ToolkitVersion != "" {
		base := mirror(i, NVIDIAToolkitHost, "/libnvidia-container")
		names := []string{"nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools", "libnvidia-container1"}
		var specs []string
		for _, n := range names {
			switch {
			case i.ToolkitVersion == ToolkitLatest:
				if h.installedVersion(n, d.Apt) == "" {
					specs = append(specs, n)
				}
			case d.Apt:
				if v := aptToolkitVersion(i.ToolkitVersion); h.installedVersion(n, true) != v {
					specs = append(specs, n+"="+v)
				}
			default:
				if v := aptToolkitVersion(i.ToolkitVersion); h.installedVersion(n, false) != v {
					specs = append(specs, n+"-"+v)
				}
			}
		}
		if len(specs) > 0 {
			if !strings.Contains(sources, "libnvidia-container") {
				if d.Apt {
					p.repos = append(p.repos, repo{check: rep.CheckToolkit, name: "NVIDIA Container Toolkit repository", list: ToolkitAptList,
						keyPath: ToolkitAptKeyring, keyURL: base + "/gpgkey",
						content: func(k string) string {
							return "# NVIDIA Container Toolkit (kubectl gpu prep)\ndeb [signed-by=" + k + "] " + base + "/stable/deb/$(ARCH) /\n"
						}})
				} else {
					p.repos = append(p.repos, repo{check: rep.CheckToolkit, name: "NVIDIA Container Toolkit repository", list: ToolkitYumRepo,
						keyPath: ToolkitKeyringRPM, keyURL: base + "/gpgkey",
						content: func(k string) string {
							return "# NVIDIA Container Toolkit (kubectl gpu prep)\n[nvidia-container-toolkit]\nname=nvidia-container-toolkit\nbaseurl=" + base +
								"/stable/rpm/$basearch\nrepo_gpgcheck=1\ngpgcheck=0\nenabled=1\ngpgkey=file://" + k + "\nsslverify=1\n"
						}})
				}
			}
			what := "NVIDIA Container Toolkit " + i.ToolkitVersion
			p.steps = append(p.steps, pkgStep{check: rep.CheckToolkit, what: what, packages: specs})
		}
	}
	if i.DriverBranch != "" {
		if err := p.planDriver(h, r, i, sources); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *packagePlan) planDriver(h *Host, r *rep.Report, i Install, sources string) error {
	b, pin, k, d := i.Branch(), i.DriverVersion(), r.Kernel, p.d
	if k == "" {
		return fmt.Errorf("the running kernel's release is unknown: cannot choose driver packages")
	}
	switch {
	case pin != "" && r.DriverVersion == pin:
		return nil // that version is loaded
	case pin == "" && r.DriverVersion != "" && strings.HasPrefix(r.DriverVersion, b+"."):
		return nil // that branch is loaded
	case pin != "" && !d.Apt:
		p.refused = fmt.Sprintf("driver version %s: an exact version is installed on apt hosts (Ubuntu, Debian); on %s %s ask for its branch (%s)", pin, d.ID, d.Version, b)
		return nil
	}
	secure := false
	if c, ok := r.Get(rep.CheckSecureBoot); ok && strings.Contains(c.Message, "is on") {
		secure = true
	}
	cudaBase := mirror(i, NVIDIACUDAHost, "/compute/cuda/repos/"+d.CUDA)
	addCUDA := func() {
		if strings.Contains(sources, "compute/cuda/repos") {
			return
		}
		if d.Apt {
			p.repos = append(p.repos, repo{check: rep.CheckDriver, name: "NVIDIA CUDA repository", list: "/etc/apt/sources.list.d/cuda-" + strings.ReplaceAll(d.CUDA, "/", "-") + ".list",
				keyPath: CUDAAptKeyring, keyURL: cudaBase + "/3bf863cc.pub",
				content: func(kp string) string {
					return "# NVIDIA CUDA repository, as its cuda-keyring package writes it (kubectl gpu prep)\ndeb [signed-by=" + kp + "] " + cudaBase + "/ /\n"
				}})
			return
		}
		p.repos = append(p.repos, repo{check: rep.CheckDriver, name: "NVIDIA CUDA repository", list: "/etc/yum.repos.d/cuda-" + strings.ReplaceAll(d.CUDA, "/", "-") + ".repo",
			keyPath: CUDAKeyringRPM, keyURL: cudaBase + "/D42D0685.pub",
			content: func(kp string) string {
				return "# NVIDIA CUDA repository (kubectl gpu prep)\n[cuda]\nname=cuda\nbaseurl=" + cudaBase + "\nenabled=1\ngpgcheck=1\ngpgkey=file://" + kp + "\n"
			}})
	}
	name := "NVIDIA driver " + b
	if pin != "" {
		name = "NVIDIA driver " + pin
	}
	step := pkgStep{check: rep.CheckDriver, what: name, reboot: true, pin: pin}
	switch {
	case d.ID == "ubuntu":
		// What ubuntu-drivers --gpgpu installs: the -server branch with its precompiled
		// modules, signed by Canonical (they load with Secure Boot on), from the host's own
		// Ubuntu archive.
		step.what += " (Ubuntu's signed precompiled -server modules)"
		step.packages = []string{"linux-modules-nvidia-" + b + "-server-" + k, "nvidia-headless-no-dkms-" + b + "-server", "nvidia-utils-" + b + "-server"}
		if h.installedVersion(step.packages[0], true) == "" {
			step.needs = step.packages[0]
			step.fallback = &pkgStep{check: rep.CheckDriver, reboot: true, pin: pin, what: name + " (Ubuntu's -server branch, DKMS)",
				packages: []string{"linux-headers-" + k, "nvidia-headless-" + b + "-server", "nvidia-utils-" + b + "-server"},
				note: "the repositories have no precompiled modules for kernel " + k + " (" + step.needs + "): DKMS builds them from nvidia-dkms-" + b +
					"-server with the kernel's headers; later kernels need their headers installed (linux-headers-<flavour>) for DKMS to build them"}
			if secure {
				step.refuse = "Secure Boot is on and the repositories have no signed precompiled NVIDIA modules for kernel " + k + " (" + step.needs +
					"): a DKMS-built module would not load. Boot a kernel the archive has them for (apt-cache search linux-modules-nvidia-" + b + "-server), enrol a MOK key for DKMS, or use the GPU Operator's precompiled driver containers"
			}
		}
		if meta := h.kernelMeta(k); meta != "" {
			step.track = "linux-modules-nvidia-" + b + "-server-" + strings.TrimPrefix(meta, "linux-image-")
			step.note = "kernel upgrades bring their modules: " + step.track + " follows " + meta
		} else {
			step.note = "no kernel metapackage (linux-image-<flavour>) depends on a " + kernelFlavour(k) + " kernel: after a kernel upgrade, install linux-modules-nvidia-" + b +
				"-server-<new kernel> (or run prep --install-driver again) before rebooting into it"
		}
	case secure:
		p.refused = fmt.Sprintf("Secure Boot is on and %s %s has no signed precompiled NVIDIA modules: a DKMS-built module would not load. "+
			"Enrol a MOK key and sign the module by hand, use Ubuntu's signed -server branches, or the GPU Operator's precompiled driver containers", d.ID, d.Version)
		return nil
	case d.Apt:
		addCUDA()
		step.what += " (NVIDIA's CUDA repository, DKMS)"
		step.packages = []string{"linux-headers-" + k, "cuda-drivers-" + b}
	default:
		addCUDA()
		step.what += " (NVIDIA's CUDA repository, DKMS module stream)"
		step.packages = []string{"kernel-devel-" + k, "kernel-headers-" + k}
		step.module = "nvidia-driver:" + b + "-dkms"
	}
	var missing []string
	for _, pk := range step.packages {
		v := h.installedVersion(pk, d.Apt)
		if v == "" || pin != "" && !strings.HasPrefix(pk, "linux-") && !strings.HasPrefix(v, pin+"-") && v != pin {
			missing = append(missing, pk)
		}
	}
	if len(missing) == 0 && step.module == "" {
		return nil
	}
	step.packages = missing
	if step.track != "" && h.installedVersion(step.track, d.Apt) != "" {
		step.track = ""
	}
	p.steps = append(p.steps, step)
	return nil
}

// installedVersion is a package's installed version ("" when not installed). dpkg's status
// file is read directly; rpm's database needs rpm, so on dnf hosts only the plan's
// resolution tells.
func (h *Host) installedVersion(pkg string, apt bool) string {
	if !apt {
		return ""
	}
	return h.dpkgInstalled()[pkg]["Version"]
}

// dpkgInstalled is dpkg's status file: the installed packages' fields by package name.
func (h *Host) dpkgInstalled() map[string]map[string]string {
	s, _ := h.Read("/var/lib/dpkg/status")
	out := map[string]map[string]string{}
	for _, stanza := range strings.Split(s, "\n\n") {
		f := map[string]string{}
		key := ""
		for _, l := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(l, " ") && key != "" {
				f[key] += "\n" + l
				continue
			}
			if k, v, ok := strings.Cut(l, ":"); ok {
				key, f[k] = k, strings.TrimSpace(v)
			}
		}
		if f["Package"] != "" && f["Status"] == "install ok installed" {
			out[f["Package"]] = f
		}
	}
	return out
}

// kernelMeta is the installed kernel metapackage that brings this host's kernel upgrades,
// as ubuntu-drivers finds it: a linux-image-* package without a version in its name that
// depends on a kernel image of the running kernel's flavour (linux-image-generic-hwe-22.04
// → linux-image-6.8.0-45-generic for 6.8.0-45-generic); with several, the one bringing the
// newest kernel. "" when there is none (a kernel installed by hand).
func (h *Host) kernelMeta(kernel string) string {
	flavour := kernelFlavour(kernel)
	if flavour == "" {
		return ""
	}
	best, bestKernel := "", ""
	for name, f := range h.dpkgInstalled() {
		meta, ok := strings.CutPrefix(name, "linux-image-")
		if !ok || meta == "" || meta[0] >= '0' && meta[0] <= '9' {
			continue
		}
		for _, dep := range strings.Split(f["Depends"], ",") {
			dep, _, _ = strings.Cut(strings.TrimSpace(dep), " ")
			k, ok := strings.CutPrefix(dep, "linux-image-")
			if !ok || k == "" || k[0] < '0' || k[0] > '9' || kernelFlavour(k) != flavour {
				continue
			}
			if best == "" || kernelNewer(k, bestKernel) || k == bestKernel && name < best {
				best, bestKernel = name, k
			}
		}
	}
	return best
}

// kernelFlavour is what follows a kernel release's ABI number (6.8.0-45-generic → generic).
func kernelFlavour(k string) string {
	parts := strings.SplitN(k, "-", 3)
	if len(parts) < 3 {
		return ""
	}
	return parts[2]
}

// kernelNewer compares kernel releases number by number (6.8.0-100 is newer than 6.8.0-99).
func kernelNewer(a, b string) bool {
	num := func(s string) []int {
		var out []int
		for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' }) {
			n, err := strconv.Atoi(f)
			if err != nil {
				break
			}
			out = append(out, n)
		}
		return out
	}
	x, y := num(a), num(b)
	for i := range min(len(x), len(y)) {
		if x[i] != y[i] {
			return x[i] > y[i]
		}
	}
	return len(x) > len(y)
}

func (h *Host) aptSources() string {
	var b strings.Builder
	for _, f := range append([]string{"/etc/apt/sources.list"}, append(h.Glob("/etc/apt/sources.list.d/*.list"), h.Glob("/etc/apt/sources.list.d/*.sources")...)...) {
		for _, l := range h.Lines(f) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func (h *Host) yumSources() string {
	var b strings.Builder
	for _, f := range h.Glob("/etc/yum.repos.d/*.repo") {
		for _, l := range h.Lines(f) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
