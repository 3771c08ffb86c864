// Package remedy is the product's one remediation ladder: what a finding calls for, from the
// least to the most disruptive. NVIDIA's XID catalog (package xid), the GPUs' health as NVML
// reads it (nodereport.Health) and doctor's links all speak it, so that "reset" means the same
// step wherever it is written.
package remedy

import "strings"

// Action is a step of the ladder. Its text form (JSON, node annotations) is a short token
// ("reset"); String is the phrase a table shows ("drain and reset the GPU").
type Action int

// The ladder. Unknown is below it: nothing was read (NVML did not answer).
const (
	Unknown Action = iota - 1
	// None: recorded, nothing to do now.
	None
	// Watch: it works, with a warning to look into (a hardware slowdown: cooling or power).
	Watch
	// Configure: set up what is missing (install, configure, label); no restart helps.
	Configure
	// Restart the application or the component that failed; the GPU is fine.
	Restart
	// ResetGPU: drain the GPU's workloads and reset it (nvidia-smi -r), or reboot.
	ResetGPU
	// Reboot the node.
	Reboot
	// Service the hardware (reseat, replace).
	Service
)

var rungs = []struct{ token, phrase string }{
	None:      {"none", "none"},
	Watch:     {"watch", "watch"},
	Configure: {"configure", "configure"},
	Restart:   {"restart", "restart the component"},
	ResetGPU:  {"reset", "drain and reset the GPU"},
	Reboot:    {"reboot", "reboot"},
	Service:   {"service", "service the hardware"},
}

// older spellings still read: the health annotation's "ok" and "warn" and the phrases earlier
// releases wrote in JSON.
var older = map[string]Action{"ok": None, "warn": Watch, "restart the application": Restart}

// String is the step's phrase ("" unknown).
func (a Action) String() string {
	if a < None || int(a) >= len(rungs) {
		return ""
	}
	return rungs[a].phrase
}

// Token is the step's short name ("" unknown), the text form.
func (a Action) Token() string {
	if a < None || int(a) >= len(rungs) {
		return ""
	}
	return rungs[a].token
}

// MarshalText writes the token.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.Token()), nil }

// UnmarshalText reads a token, a phrase or an older spelling; anything else (a newer
// release's step) is Unknown.
func (a *Action) UnmarshalText(b []byte) error {
	*a = Parse(string(b))
	return nil
}

// Parse reads a step's token, phrase or older spelling; Unknown when it names none.
func Parse(s string) Action {
	s = strings.TrimSpace(s)
	for i, r := range rungs {
		if s == r.token || s == r.phrase {
			return Action(i)
		}
	}
	if a, ok := older[s]; ok {
		return a
	}
	return Unknown
}

// Fix is the one wording of the hardware steps (watch, reset, reboot, service) for the GPU at
// pci ("" all of them) on node ("" when the fix need not name it); "" for the others, whose fix
// names what to configure or restart.
func (a Action) Fix(pci, node string) string {
	switch a {
	case Watch:
		return "check the node's cooling and power"
	case ResetGPU:
		reset := "nvidia-smi -r"
		if pci != "" {
			reset += " -i " + pci
		}
		f := "drain the GPU's workloads and reset it (" + reset + "), or reboot the node"
		if node != "" {
			f += " (kubectl gpu prep " + node + " --apply --reboot)"
		}
		return f
	case Reboot:
		return "drain and reboot the node"
	case Service:
		return "drain the node, reboot it; if the GPU stays missing or the XID comes back, have it serviced"
	}
	return ""
}
