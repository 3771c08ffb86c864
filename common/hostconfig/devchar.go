package hostconfig

import (
	"fmt"
	"os"
	"path"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// DevCharRule is the udev rule the NVIDIA Container Toolkit documents for hosts whose
// container runtime uses the systemd cgroup driver: it recreates the /dev/char links of the
// NVIDIA device nodes whenever the driver loads, so they survive a reboot.
const DevCharRule = "/lib/udev/rules.d/71-nvidia-dev-char.rules"

// DevCharCommand creates the links now.
var DevCharCommand = []string{"nvidia-ctk", "system", "create-dev-char-symlinks", "--create-all"}

const devCharRuleContent = `# /dev/char links of the NVIDIA device nodes, needed by containers under the systemd
# cgroup driver (kubectl gpu prep; from the NVIDIA Container Toolkit's documentation)
ACTION=="add", DEVPATH=="/bus/pci/drivers/nvidia", RUN+="/usr/bin/nvidia-ctk system create-dev-char-symlinks --create-all"
`

// missingDevChar lists the NVIDIA device nodes under /dev with no /dev/char/MAJOR:MINOR
// link, and how many device nodes there are.
func (h *Host) missingDevChar() (missing []string, devices int) {
	paths := append(h.Glob("/dev/nvidia*"), h.Glob("/dev/nvidia-caps/*")...)
	for _, p := range paths {
		fi, err := os.Lstat(h.Path(p))
		if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			continue
		}
		devices++
		link := fmt.Sprintf("/dev/char/%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
		if !h.Exists(link) {
			missing = append(missing, path.Base(p))
		}
	}
	return missing, devices
}

// checkDevChar: without /dev/char links to the NVIDIA device nodes, containers under the
// systemd cgroup driver lose their GPUs ("Failed to initialize NVML: Unknown Error") at
// the next systemctl daemon-reload.
func checkDevChar(h *Host, r *rep.Report) {
	missing, devices := h.missingDevChar()
	switch {
	case devices == 0:
		r.Add(rep.CheckDevChar, rep.Skipped, "no NVIDIA device nodes in /dev (no driver loaded)", "")
	case len(missing) > 0:
		r.Add(rep.CheckDevChar, rep.Fail, fmt.Sprintf("no /dev/char link for %s: under the systemd cgroup driver containers lose their GPUs at the next daemon-reload (NVML: Unknown Error)", strings.Join(missing, ", ")),
			"kubectl gpu prep --apply creates them (nvidia-ctk system create-dev-char-symlinks --create-all) and adds the toolkit's udev rule that keeps them across reboots")
	default:
		r.Add(rep.CheckDevChar, rep.OK, fmt.Sprintf("/dev/char links for the %d NVIDIA device nodes", devices), "")
	}
}

// planDevChar: the udev rule, and the links now when nvidia-ctk is there.
func planDevChar(h *Host, r *rep.Report, o ApplyOptions) ([]fileEdit, []rep.Change) {
	c, ok := r.Get(rep.CheckDevChar)
	if !ok || c.Status != rep.Fail {
		return nil, nil
	}
	var edits []fileEdit
	if old, _ := h.Read(DevCharRule); old != devCharRuleContent {
		edits = append(edits, fileEdit{check: rep.CheckDevChar, path: DevCharRule, old: old, content: devCharRuleContent})
	}
	cmd := rep.Change{Check: rep.CheckDevChar, Command: DevCharCommand}
	if !h.Exists("/usr/bin/nvidia-ctk") && !o.ToolkitPlanned {
		cmd.Note = "not run: nvidia-ctk is not installed (install the toolkit: --install-toolkit)"
	}
	return edits, []rep.Change{cmd}
}
