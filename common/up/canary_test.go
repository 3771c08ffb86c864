package up

import (
	"strings"
	"testing"

	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
)

// TestPlanCanary: the canary is the node an earlier run left part-way, else the first by
// name; nodes are proven one by one only when every release is deployed already (an upgrade
// or unchanged), not on a first install nor where a release must be recovered first; the
// decisions say which, and the canary's size is bounded by the roll.
func TestPlanCanary(t *testing.T) {
	mk := func(action string, recovery bool, resumes string) *Plan {
		p := &Plan{prep: &prep.Plan{Roll: []string{"a", "b", "c"}}, prepRq: prep.Request{Roll: &prep.RollOptions{MaxUnavailable: 2}},
			Nodes:    []NodePlan{{Node: "a"}, {Node: "b", Resumes: resumes}, {Node: "c"}},
			Releases: []ReleasePlan{{Release: "r", Action: action}}}
		if recovery {
			p.Releases[0].Recovery = &helmrelease.Recovery{}
		}
		return p
	}
	req := Request{Canary: 1, Prep: prep.Request{Roll: &prep.RollOptions{MaxUnavailable: 2}}}
	cases := []struct {
		name    string
		plan    *Plan
		canary  int
		want    []string
		prove   bool
		decided string
	}{
		{"day two", mk(ActionUnchanged, false, ""), 1, []string{"a"}, true, "canary: a first; the other 2 nodes only after it is done, 2 at a time"},
		{"upgrade, resumed node first", mk(ActionUpgrade, false, "drained"), 1, []string{"b"}, true, "canary: b first"},
		{"first install", mk(ActionInstall, false, ""), 1, []string{"a"}, false, "verified at the end"},
		{"recovery first", mk(ActionUpgrade, true, ""), 1, []string{"a"}, false, "verified at the end"},
		{"no canary", mk(ActionUnchanged, false, ""), 0, nil, true, "before it is uncordoned"},
		{"canary larger than the roll", mk(ActionUnchanged, false, ""), 5, []string{"a", "b", "c"}, true, "before it is uncordoned"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := req
			r.Canary = c.canary
			c.plan.planCanary(r)
			if strings.Join(c.plan.Canary, ",") != strings.Join(c.want, ",") || c.plan.ProveRolled != c.prove {
				t.Errorf("canary %v prove %v; want %v %v", c.plan.Canary, c.plan.ProveRolled, c.want, c.prove)
			}
			var ds []string
			for _, d := range c.plan.Decisions {
				ds = append(ds, d.Decision)
			}
			if !strings.Contains(strings.Join(ds, "\n"), c.decided) {
				t.Errorf("decisions %q lack %q", ds, c.decided)
			}
			if c.canary > 0 && c.canary < 3 != strings.Contains(strings.Join(ds, "\n"), "canary:") {
				t.Errorf("a canary decision only when some nodes wait for it: %q", ds)
			}
			o := c.plan.rollOptions(Clients{}, r)
			if o.Canary != len(c.want) || (o.Prove != nil) != c.prove || c.plan.prepRq.Roll.Canary != 0 {
				t.Errorf("roll options: canary %d, prove %v (the plan's own options changed: %d)", o.Canary, o.Prove != nil, c.plan.prepRq.Roll.Canary)
			}
		})
	}
}
