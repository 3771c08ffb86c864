// Package xid reads NVIDIA driver error events (XIDs) from a kernel log and classes each by
// NVIDIA's published XID catalog ("XID Errors", NVIDIA GPU deployment and management
// documentation): what it means and the step of the product's one remediation ladder
// (package remedy) it calls for. A GPU that fell off the bus is caught without an XID too.
package xid

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
)

// Info is the catalog's entry for an XID.
type Info struct {
	Meaning string
	Action  remedy.Action
}

// Catalog is NVIDIA's XID catalog for the XIDs that matter to a node serving GPUs.
var Catalog = map[int]Info{
	13:  {"graphics engine exception: usually the application (an out-of-range access)", remedy.Restart},
	31:  {"GPU memory page fault: the application accessed an illegal address", remedy.Restart},
	43:  {"GPU stopped processing: the application hit a software fault; the GPU is healthy", remedy.Restart},
	45:  {"preemptive cleanup after an earlier error (the application was stopped)", remedy.None},
	48:  {"double-bit ECC error (uncorrectable)", remedy.ResetGPU},
	61:  {"internal micro-controller breakpoint/warning", remedy.ResetGPU},
	62:  {"internal micro-controller halt", remedy.ResetGPU},
	63:  {"ECC page retirement or row remapping recorded: applied at the next GPU reset", remedy.None},
	64:  {"ECC page retirement or row remapping failed", remedy.Service},
	68:  {"video processor exception", remedy.ResetGPU},
	74:  {"NVLink error", remedy.ResetGPU},
	79:  {"GPU has fallen off the bus", remedy.Service},
	92:  {"high single-bit ECC error rate", remedy.ResetGPU},
	94:  {"contained ECC error: the affected application was stopped", remedy.Restart},
	95:  {"uncontained ECC error: every application on the GPU is affected", remedy.ResetGPU},
	119: {"GSP RPC timeout: the GPU's system processor did not answer", remedy.ResetGPU},
	120: {"GSP error", remedy.ResetGPU},
}

// Event is one XID (or a GPU fallen off the bus without one) from the kernel log.
type Event struct {
	// XID is the code, 0 for a fallen-off-the-bus line without one.
	XID int    `json:"xid"`
	PCI string `json:"pci"`
	// Process is the process that ran on the GPU ("" unknown), as the driver names it.
	Process string        `json:"process,omitempty"`
	Message string        `json:"message"`
	Meaning string        `json:"meaning"`
	Action  remedy.Action `json:"action"`
}

var (
	xidLine  = regexp.MustCompile(`NVRM: Xid \(PCI:([0-9a-fA-F:.]+)\): (\d+), (.*)$`)
	procPart = regexp.MustCompile(`^pid=([^,]*), name=([^,]*), (.*)$`)
	// pidPart: the driver's prefix with a pid and no name ("pid=0, GPU has fallen off the bus.").
	pidPart = regexp.MustCompile(`^pid=([^,]*), (.*)$`)
	busLine = regexp.MustCompile(`NVRM: GPU at PCI:([0-9a-fA-F:.]+): (.*fallen off the bus.*)$`)
	// probeLine: the driver's probe-time line for a GPU that fell off the bus, with no XID
	// ("NVRM: The NVIDIA GPU 0000:3b:00.0 (PCI ID: 10de:20b2) installed in this system has
	// fallen off the bus and is not responding to commands.").
	probeLine = regexp.MustCompile(`NVRM: The NVIDIA GPU ([0-9a-fA-F]{4}:[0-9a-fA-F:.]+)\b.*?(has fallen off the bus.*)$`)
)

// Parse reads the XIDs of a kernel log (dmesg, kern.log, journalctl -k), in order.
func Parse(log string) []Event {
	var out []Event
	for _, l := range strings.Split(log, "\n") {
		if m := xidLine.FindStringSubmatch(l); m != nil {
			code, _ := strconv.Atoi(m[2])
			info, ok := Catalog[code]
			if !ok {
				info = Info{Meaning: "not in the catalog this tool knows: see NVIDIA's XID documentation", Action: remedy.ResetGPU}
			}
			e := Event{XID: code, PCI: strings.ToLower(m[1]), Message: strings.TrimSpace(m[3]), Meaning: info.Meaning, Action: info.Action}
			if p := procPart.FindStringSubmatch(e.Message); p != nil {
				e.Message = p[3]
				if name := strings.Trim(p[2], "'<>"); name != "unknown" {
					e.Process = name + " (pid " + strings.Trim(p[1], "'") + ")"
				}
			} else if p := pidPart.FindStringSubmatch(e.Message); p != nil {
				e.Message = p[2]
			}
			out = append(out, e)
			continue
		}
		if m := busLine.FindStringSubmatch(l); m != nil {
			out = append(out, Event{PCI: strings.ToLower(m[1]), Message: strings.TrimSpace(m[2]), Meaning: Catalog[79].Meaning, Action: remedy.Service})
			continue
		}
		if m := probeLine.FindStringSubmatch(l); m != nil {
			out = append(out, Event{PCI: strings.ToLower(m[1]), Message: strings.TrimSpace(m[2]), Meaning: Catalog[79].Meaning, Action: remedy.Service})
		}
	}
	return out
}

// SameGPU tells whether two PCI addresses name one GPU: the kernel log writes a bus id
// without the function ("0000:3b:00") where sysfs and NVML add it ("0000:3b:00.0").
func SameGPU(a, b string) bool {
	norm := func(s string) string {
		s = strings.ToLower(s)
		if i := strings.LastIndex(s, "."); i > strings.LastIndex(s, ":") {
			s = s[:i]
		}
		f := strings.Split(s, ":")
		if len(f) == 2 {
			f = append([]string{"0000"}, f...)
		}
		if d := f[0]; len(d) > 4 {
			f[0] = d[len(d)-4:] // NVML's 8-digit domain
		}
		return strings.Join(f, ":")
	}
	return a != "" && b != "" && norm(a) == norm(b)
}

// Worst is the most disruptive action the events call for, with the event that calls for it
// (the latest of them); ok false when there is none.
func Worst(events []Event) (Event, bool) {
	if len(events) == 0 {
		return Event{}, false
	}
	best := events[0]
	for _, e := range events {
		if e.Action >= best.Action {
			best = e
		}
	}
	return best, true
}

var pluginLine = regexp.MustCompile(`XidCriticalError: Xid=(\d+) on Device=([^;,\s]+)`)

// FromDevicePlugin reads the XIDs NVIDIA's device plugin logged when it marked a GPU
// unhealthy ("XidCriticalError: Xid=79 on Device=GPU-…; marking device as unhealthy."), in
// order; PCI holds the device's ID (a UUID) there.
func FromDevicePlugin(log string) []Event {
	var out []Event
	for _, l := range strings.Split(log, "\n") {
		m := pluginLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		code, _ := strconv.Atoi(m[1])
		info, ok := Catalog[code]
		if !ok {
			info = Info{Meaning: "not in the catalog this tool knows: see NVIDIA's XID documentation", Action: remedy.ResetGPU}
		}
		out = append(out, Event{XID: code, PCI: m[2], Message: strings.TrimSpace(l[strings.Index(l, "XidCriticalError"):]), Meaning: info.Meaning, Action: info.Action})
	}
	return out
}
