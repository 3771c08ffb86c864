package rollflags

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
)

// TestBindCheck: the flags carry prep's defaults, parse into the options, and values no roll
// can run with are refused naming the flag.
func TestBindCheck(t *testing.T) {
	o := prep.DefaultRollOptions()
	fl := pflag.NewFlagSet("x", pflag.ContinueOnError)
	Bind(fl, &o, "with --reboot: ")
	if f := fl.Lookup("drain-timeout"); f == nil || f.DefValue != "10m0s" || !strings.HasPrefix(f.Usage, "with --reboot: ") {
		t.Fatalf("drain-timeout: %+v", f)
	}
	if Changed(fl.Changed) {
		t.Error("changed before any flag was given")
	}
	if err := fl.Parse([]string{"--max-unavailable", "3", "--reboot-timeout", "20m", "--force"}); err != nil {
		t.Fatal(err)
	}
	if o.MaxUnavailable != 3 || o.RebootTimeout != 20*time.Minute || !o.Force || o.DrainTimeout != 10*time.Minute || !Changed(fl.Changed) {
		t.Errorf("parsed %+v", o)
	}
	if err := Check(o); err != nil {
		t.Error(err)
	}
	for flag, bad := range map[string]prep.RollOptions{
		"--max-unavailable": {MaxUnavailable: 0, RebootTimeout: time.Minute},
		"--drain-timeout":   {MaxUnavailable: 1, DrainTimeout: -time.Second, RebootTimeout: time.Minute},
		"--reboot-timeout":  {MaxUnavailable: 1},
	} {
		if err := Check(bad); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%+v: %v; want a refusal naming %s", bad, err, flag)
		}
	}
}
