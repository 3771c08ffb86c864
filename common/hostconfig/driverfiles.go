package hostconfig

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// libNVML are where a host driver installs NVML (libnvidia-ml.so.VERSION): Debian/Ubuntu's
// multiarch directories, RHEL's lib64, the .run installer's /usr/lib.
var libNVML = []string{"/usr/lib/*/libnvidia-ml.so.*.*", "/usr/lib64/libnvidia-ml.so.*.*", "/usr/lib/libnvidia-ml.so.*.*"}

// nvmlLibraryVersions are the versions of the NVML libraries installed on the host.
func (h *Host) nvmlLibraryVersions() []string {
	seen := map[string]bool{}
	var out []string
	for _, g := range libNVML {
		for _, p := range h.Glob(g) {
			v := strings.TrimPrefix(filepath.Base(p), "libnvidia-ml.so.")
			if strings.Count(v, ".") >= 1 && !seen[v] {
				seen[v] = true
				out = append(out, v)
			}
		}
	}
	return out
}

// checkDriverLibraries: the loaded kernel module and the host's user-space libraries must be
// the same version, or NVML fails ("Driver/library version mismatch"): the packages were
// upgraded and the node not rebooted.
func checkDriverLibraries(h *Host, r *rep.Report) {
	libs := h.nvmlLibraryVersions()
	switch {
	case r.DriverVersion == "":
		r.Add(rep.CheckDriverLibraries, rep.Skipped, "no NVIDIA driver loaded", "")
	case len(libs) == 0:
		r.Add(rep.CheckDriverLibraries, rep.Skipped, "no NVML library on the host (the GPU Operator's driver container brings its own)", "")
	case len(libs) == 1 && libs[0] == r.DriverVersion:
		r.Add(rep.CheckDriverLibraries, rep.OK, "the loaded module and the host's libraries are both "+r.DriverVersion, "")
	default:
		for _, v := range libs {
			if v == r.DriverVersion {
				r.Add(rep.CheckDriverLibraries, rep.Warn, fmt.Sprintf("libraries of several drivers on the host (%s); the loaded module is %s", strings.Join(libs, ", "), r.DriverVersion), "remove the old driver's packages")
				return
			}
		}
		r.Add(rep.CheckDriverLibraries, rep.Fail, fmt.Sprintf("driver/library version mismatch: module %s loaded, libraries %s installed (the driver was upgraded and the node not rebooted): NVML fails", r.DriverVersion, strings.Join(libs, ", ")),
			"drain and reboot the node so the installed driver loads")
	}
}

// nvidiaModule tells whether a kernel's module tree has the NVIDIA module (DKMS's updates/dkms,
// Ubuntu's precompiled kernel/nvidia-*, the .run installer's kernel/drivers/video, RHEL's
// extra).
func (h *Host) nvidiaModule(kernel string) bool {
	found := false
	root := h.Path("/lib/modules/" + kernel)
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (d.Name() == "build" || d.Name() == "source") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (d.Name() == "nvidia.ko" || strings.HasPrefix(d.Name(), "nvidia.ko.")) {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

// checkDriverKernels: a kernel installed after the running one boots next; if the running
// kernel has the host's NVIDIA module and that one does not, the node comes back from its
// next reboot without a driver.
func checkDriverKernels(h *Host, r *rep.Report) {
	if r.Kernel == "" || r.DriverVersion == "" || !h.nvidiaModule(r.Kernel) {
		r.Add(rep.CheckDriverKernels, rep.Skipped, "no host driver module for the running kernel", "")
		return
	}
	var without []string
	for _, d := range h.Glob("/lib/modules/*") {
		k := filepath.Base(d)
		if compareVersions(k, r.Kernel) > 0 && !h.nvidiaModule(k) {
			without = append(without, k)
		}
	}
	if len(without) == 0 {
		r.Add(rep.CheckDriverKernels, rep.OK, "no newer kernel installed without the NVIDIA module", "")
		return
	}
	r.Add(rep.CheckDriverKernels, rep.Warn, fmt.Sprintf("kernel %s is installed without the NVIDIA module: the node boots it next and comes up without a driver", strings.Join(without, ", ")),
		"install the module for it (Ubuntu: linux-modules-nvidia-BRANCH-server-"+without[len(without)-1]+"; DKMS: its headers), or kubectl gpu prep NODE --apply --install-driver")
}

// compareVersions compares kernel releases number by number ("6.8.0-51-generic" <
// "6.8.0-100-generic").
func compareVersions(a, b string) int {
	fa, fb := versionFields(a), versionFields(b)
	for i := 0; i < len(fa) && i < len(fb); i++ {
		na, ea := strconv.Atoi(fa[i])
		nb, eb := strconv.Atoi(fb[i])
		switch {
		case ea == nil && eb == nil && na != nb:
			if na < nb {
				return -1
			}
			return 1
		case (ea != nil || eb != nil) && fa[i] != fb[i]:
			return strings.Compare(fa[i], fb[i])
		}
	}
	return len(fa) - len(fb)
}

func versionFields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' || r == '_' || r == '+' || r == '~' })
}
