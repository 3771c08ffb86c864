package fakehost

import (
	"bufio"
	"os"
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
	read := func(p string) []string {
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
	glob := func(p string) []string {
		m, _ := filepath.Glob(filepath.Join(root, p))
		for i := range m {
			m[i], _ = filepath.Rel(root, m[i])
		}
		return m
	}
	blacklisted := map[string]bool{}
	for _, f := range glob("etc/modprobe.d/*.conf") {
		for _, l := range read(f) {
			if fs := strings.Fields(l); len(fs) == 2 && fs[0] == "blacklist" {
				blacklisted[fs[1]] = true
			}
		}
	}
	var modules []string
	have := map[string]bool{}
	for _, l := range read("proc/modules") {
		fs := strings.Fields(l)
		drop := blacklisted[fs[0]]
		if len(fs) > 3 {
			for _, by := range strings.Split(fs[3], ",") {
				drop = drop || blacklisted[by]
			}
		}
		if !drop {
			modules, have[fs[0]] = append(modules, l), true
		}
	}
	for _, f := range glob("etc/modules-load.d/*.conf") {
		for _, m := range read(f) {
			if !have[m] && !blacklisted[m] {
				modules, have[m] = append(modules, m+" 16384 0 - Live 0x0000000000000000"), true
			}
		}
	}
	if err := writeFile(filepath.Join(root, "proc/modules"), strings.Join(modules, "\n")+"\n"); err != nil {
		return "", err
	}
	active := map[string]bool{}
	for _, l := range read("etc/fstab") {
		if fs := strings.Fields(l); len(fs) >= 3 && fs[2] == "swap" {
			active[fs[0]] = true
		}
	}
	swaps := []string{"Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority"}
	for i, l := range read("proc/swaps") {
		if fs := strings.Fields(l); i > 0 && len(fs) > 0 && active[fs[0]] {
			swaps = append(swaps, l)
		}
	}
	if err := writeFile(filepath.Join(root, "proc/swaps"), strings.Join(swaps, "\n")+"\n"); err != nil {
		return "", err
	}
	for _, f := range append([]string{"etc/sysctl.conf"}, glob("etc/sysctl.d/*.conf")...) {
		for _, l := range read(f) {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				continue
			}
			p := filepath.Join(root, "proc/sys", strings.ReplaceAll(strings.TrimSpace(k), ".", "/"))
			if err := writeFile(p, strings.TrimSpace(v)+"\n"); err != nil {
				return "", err
			}
		}
	}
	id := string(uuid.NewUUID())
	return id, writeFile(filepath.Join(root, "proc/sys/kernel/random/boot_id"), id+"\n")
}
