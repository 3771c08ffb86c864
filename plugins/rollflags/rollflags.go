// Package rollflags binds the roll's flags that prep (with --reboot) and up share: nodes out
// at once, the drain's and the reboot's time, and kubectl drain's two consents. One
// declaration, one check, the defaults of prep.DefaultRollOptions.
package rollflags

import (
	"github.com/spf13/pflag"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
)

// Names are the roll's flags, as a usage error lists them.
var Names = []string{"max-unavailable", "drain-timeout", "reboot-timeout", "delete-emptydir-data", "force"}

// Bind binds the flags onto o (whose values are the defaults shown); when prefixes each
// help ("with --reboot: " where the roll is asked for by another flag).
func Bind(fl *pflag.FlagSet, o *prep.RollOptions, when string) {
	fl.IntVar(&o.MaxUnavailable, "max-unavailable", o.MaxUnavailable, when+"nodes cordoned, drained and rebooted at once")
	fl.DurationVar(&o.DrainTimeout, "drain-timeout", o.DrainTimeout, when+"time to drain one node (0: no limit)")
	fl.DurationVar(&o.RebootTimeout, "reboot-timeout", o.RebootTimeout, when+"time for a node to come back with a new boot ID and Ready")
	fl.BoolVar(&o.DeleteEmptyDirData, "delete-emptydir-data", o.DeleteEmptyDirData, when+"drain pods with emptyDir data (the data is lost)")
	fl.BoolVar(&o.Force, "force", o.Force, when+"drain pods that no controller recreates")
}

// Check refuses values no roll can run with (usage errors).
func Check(o prep.RollOptions) error {
	switch {
	case o.MaxUnavailable < 1:
		return cliexit.Usagef("--max-unavailable must be at least 1")
	case o.DrainTimeout < 0:
		return cliexit.Usagef("--drain-timeout must not be negative")
	case o.RebootTimeout <= 0:
		return cliexit.Usagef("--reboot-timeout must be positive")
	}
	return nil
}

// Changed tells whether any of the roll's flags was set (changed: the command's test of a
// flag's name).
func Changed(changed func(string) bool) bool {
	for _, n := range Names {
		if changed(n) {
			return true
		}
	}
	return false
}
