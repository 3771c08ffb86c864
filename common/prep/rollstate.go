package prep

import (
	"encoding/json"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
)

// RollAnnotation holds where a node stands in a roll (JSON, see RollState): a rerun after
// Ctrl-C, a crash or a failure goes on from there instead of repeating finished steps.
const RollAnnotation = flavour.AnnotationPrefix + "roll"

// Phase is a step of a node's roll ("" not started).
type Phase string

// The steps of a node's roll, in order; the annotation holds the last one finished.
const (
	PhaseCordoned  Phase = "cordoned"
	PhaseDrained   Phase = "drained"
	PhaseInstalled Phase = "installed"
	PhaseRebooting Phase = "rebooting" // the reboot was asked for
	PhaseRebooted  Phase = "rebooted"  // back with a new boot ID, Ready
	PhaseDone      Phase = "done"      // checked ready and uncordoned
)

// Phases are the steps in order.
var Phases = []Phase{PhaseCordoned, PhaseDrained, PhaseInstalled, PhaseRebooting, PhaseRebooted, PhaseDone}

var phases = append([]Phase{""}, Phases...)

func phaseIndex(p Phase) int {
	for i, q := range phases {
		if q == p {
			return i
		}
	}
	return 0
}

// RollState is the roll annotation.
type RollState struct {
	Phase Phase `json:"phase"`
	// WasCordoned: the node was cordoned before the roll began (it stays cordoned after).
	WasCordoned bool `json:"wasCordoned,omitempty"`
	// BootID is the boot the reboot was asked for (the node is back when it differs).
	BootID string `json:"bootID,omitempty"`
	// Requested: the agent said the host accepted the reboot.
	Requested bool   `json:"requested,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// Driver is the host driver version the roll's install put on the node, which the check
	// after the reboot wants loaded; DriverWas the version loaded before it ("" none).
	Driver    string `json:"driver,omitempty"`
	DriverWas string `json:"driverWas,omitempty"`
	Error     string `json:"error,omitempty"`
	Time      string `json:"time"`
}

// ResumeAfter is the step a node's unfinished roll goes on after ("" none): where an
// earlier run stopped, except that a node past its install whose plan has changes to make
// (changed, ChangesToMake: a new target) goes on after its cordon — drained (it stayed
// cordoned: nothing is left to evict), installed and rebooted again for them; a check alone
// would judge the earlier install.
func ResumeAfter(st RollState, changed bool) Phase {
	switch {
	case !st.Unfinished():
		return ""
	case changed && phaseIndex(st.Phase) >= phaseIndex(PhaseInstalled):
		return PhaseCordoned
	}
	return st.Phase
}

// Unfinished tells whether a roll stopped on the node before it was done.
func (s RollState) Unfinished() bool { return s.Phase != "" && s.Phase != PhaseDone }

// ReadRollState reads a node's roll annotation (the zero state when there is none).
func ReadRollState(n *corev1.Node) RollState {
	var s RollState
	if v, ok := n.Annotations[RollAnnotation]; ok {
		_ = json.Unmarshal([]byte(v), &s)
	}
	return s
}
