package localcluster

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// MachineState is what a real node could change on the machine and must leave as it found
// it: network interfaces and namespaces, mounts, top-level cgroups, the sysctls the kubelet
// and CNI touch, iptables, and the fixed directories the node hides behind its own.
type MachineState map[string]string

// ReadMachineState reads it.
func ReadMachineState() MachineState {
	s := MachineState{}
	out, _ := exec.Command("ip", "-o", "link").Output()
	var links []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			links = append(links, strings.TrimSuffix(f[1], ":"))
		}
	}
	s["links"] = joinSorted(links)
	out, _ = exec.Command("ip", "netns", "list").Output()
	s["netns"] = joinSorted(strings.Fields(string(out)))
	out, _ = exec.Command("ip", "-4", "addr").Output()
	s["addresses"] = string(out)
	out, _ = exec.Command("ip", "route", "show", "table", "all").Output()
	s["routes"] = string(out)
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		var mounts []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fl := strings.Fields(sc.Text()); len(fl) > 4 {
				mounts = append(mounts, fl[4])
			}
		}
		f.Close()
		s["mounts"] = joinSorted(mounts)
	}
	hs, _ := filepath.Glob("/sys/fs/cgroup/*/*")
	var cg []string
	for _, h := range hs {
		if fi, err := os.Stat(h); err == nil && fi.IsDir() {
			cg = append(cg, h)
		}
	}
	s["cgroups"] = joinSorted(cg)
	sysctls := []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv4/conf/all/forwarding", "/proc/sys/net/bridge/bridge-nf-call-iptables"}
	for p := range kubeletSysctls {
		sysctls = append(sysctls, p)
	}
	for _, p := range sysctls {
		b, err := os.ReadFile(p)
		if err == nil {
			s["sysctl "+p] = strings.TrimSpace(string(b))
		}
	}
	if save, err := exec.LookPath("iptables-save"); err == nil {
		out, _ := exec.Command(save).Output()
		var rules []string
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "#") { // the generation-time comments
				rules = append(rules, l)
			}
		}
		s["iptables"] = strings.Join(rules, "\n")
	}
	b, _ := os.ReadFile("/proc/net/ip_tables_names")
	s["iptables tables"] = string(b)
	for _, d := range []string{"/var/lib/kubelet", "/var/lib/cni", "/run/containerd", "/var/log/pods", "/var/log/containers", "/etc/containerd", "/etc/cni", "/opt/containerd"} {
		_, err := os.Stat(d)
		s["exists "+d] = fmt.Sprint(err == nil)
	}
	return s
}

func joinSorted(l []string) string {
	sort.Strings(l)
	return strings.Join(l, "\n")
}

// Diff lists what differs from before, one line per item.
func (s MachineState) Diff(before MachineState) []string {
	var keys []string
	for k := range before {
		keys = append(keys, k)
	}
	for k := range s {
		if _, ok := before[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var d []string
	for _, k := range keys {
		if before[k] != s[k] {
			d = append(d, fmt.Sprintf("%s: before %q, after %q", k, before[k], s[k]))
		}
	}
	return d
}
