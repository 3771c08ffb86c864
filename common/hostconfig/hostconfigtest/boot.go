package hostconfigtest

import (
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/util/uuid"
)

// Boot simulates a reboot of a fake host root: a new boot ID, and the kernel state a boot
// makes from the host's persisted configuration — the modules of /etc/modules-load.d
// loaded and the blacklisted ones (/etc/modprobe.d) not, only the swap that /etc/fstab still
// enables, the sysctls of /etc/sysctl.d and /etc/sysctl.conf. It returns the new boot ID.
// No driver is loaded that was not already: that is the GPU boundary.
func Boot(root string) (string, error) {
	blacklisted := map[string]bool{}
	for _, f := range glob(root, "etc/modprobe.d/*.conf") {
		for _, l := range lines(root, f) {
			if fs := strings.Fields(l); len(fs) == 2 && fs[0] == "blacklist" {
				blacklisted[fs[1]] = true
			}
		}
	}
	var load []string
	for _, f := range glob(root, "etc/modules-load.d/*.conf") {
		load = append(load, lines(root, f)...)
	}
	if err := loadModules(root, load, blacklisted); err != nil {
		return "", err
	}
	active := map[string]bool{}
	for _, l := range lines(root, "etc/fstab") {
		if fs := strings.Fields(l); len(fs) >= 3 && fs[2] == "swap" {
			active[fs[0]] = true
		}
	}
	if err := keepSwaps(root, active); err != nil {
		return "", err
	}
	if err := applySysctls(root); err != nil {
		return "", err
	}
	id := string(uuid.NewUUID())
	return id, writeFile(filepath.Join(root, "proc/sys/kernel/random/boot_id"), id+"\n")
}
