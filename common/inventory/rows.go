package inventory

// The inventory as table rows, and the forms its columns take.
import (
	"fmt"
	"strconv"
	"strings"
)

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func joinVersion(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p == "" {
			break
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return ""
	}
	return strings.Join(out, ".")
}

// Rows prints the inventory as kubectl prints a list.
func (inv *Inventory) Rows(wide bool) ([]string, [][]string) {
	header := []string{"NAME", "READY", "GPUS", "USED", "SOURCE", "PRODUCT", "MEMORY", "DRIVER", "CUDA", "SHARING", "MIG", "FLAVOUR"}
	if wide {
		header = append(header, "RUNTIME", "KUBELET", "KERNEL", "OS-IMAGE")
	}
	rows := make([][]string, 0, len(inv.Items))
	for _, n := range inv.Items {
		ready := "False"
		if n.Ready {
			ready = "True"
		}
		mem := "-"
		if n.MemoryMiB > 0 {
			mem = fmt.Sprintf("%dMiB", n.MemoryMiB)
		}
		row := []string{n.Name, ready, strconv.FormatInt(n.GPUs, 10), strconv.FormatInt(n.Used, 10), dash(n.Source),
			dash(n.Product), mem, dash(n.Driver), dash(n.CUDA), dash(n.Sharing), n.migColumn(), string(n.Flavour)}
		if wide {
			row = append(row, dash(n.ContainerRuntime), dash(n.KubeletVersion), dash(n.KernelVersion), dash(n.OSImage))
		}
		rows = append(rows, row)
	}
	return header, rows
}

// migColumn is the MIG strategy and the MIG devices, such as "mixed 1g.10gb:7,3g.40gb:2".
func (n Node) migColumn() string {
	var devs []string
	for _, r := range n.Resources {
		if strings.HasPrefix(r.Name, MIGResourcePrefix) {
			devs = append(devs, fmt.Sprintf("%s:%d", strings.TrimPrefix(r.Name, MIGResourcePrefix), r.Allocatable))
		}
	}
	s := n.MIGStrategy
	if len(devs) > 0 {
		s = strings.TrimSpace(s + " " + strings.Join(devs, ","))
	}
	if n.MIGConfig != "" {
		s = strings.TrimSpace(s + " " + n.MIGConfig)
	}
	return dash(s)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// DriverForm writes a driver version the way NVIDIA and nvidia-smi do, from the semantic
// version the DRA driver publishes (580.82.7 is 580.82.07: the last part has two digits).
func DriverForm(semver string) string {
	parts := strings.Split(semver, ".")
	if len(parts) != 3 || len(parts[2]) != 1 {
		return semver
	}
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err != nil {
			return semver
		}
	}
	return parts[0] + "." + parts[1] + ".0" + parts[2]
}

// majorMinor is the CUDA version as nvidia-smi shows it (13.0 for 13.0.0).
func majorMinor(semver string) string {
	parts := strings.Split(semver, ".")
	if len(parts) < 2 {
		return semver
	}
	return parts[0] + "." + parts[1]
}
