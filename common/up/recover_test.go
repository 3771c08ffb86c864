package up

import (
	"context"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/operator/operatortest"
)

// TestReleaseStates: every state Helm can leave a release in after an interrupted or failed
// operation is planned with what it needs first and then recovered, the way Helm allows,
// ending deployed. Before, only pending-install was recognised: an uninstalling release (a
// second Ctrl-C while Helm rolled back an interrupted install) was planned as an upgrade,
// which Helm refuses with "has no deployed releases" on every run.
func TestReleaseStates(t *testing.T) {
	ch := &chart.Chart{Metadata: &chart.Metadata{APIVersion: "v2", Name: "gpu-operator", Version: "v25.3.0"}}
	const name, ns = "gpu-operator", "gpu-operator"
	rev := func(v int, st release.Status) *release.Release {
		return &release.Release{Name: name, Namespace: ns, Version: v, Chart: ch, Config: map[string]any{}, Info: &release.Info{Status: st}}
	}
	for _, tc := range []struct {
		state   string
		hist    []*release.Release
		action  string
		do      string
		rolback int
	}{
		{"pending-install", []*release.Release{rev(1, release.StatusPendingInstall)}, ActionReinstall, helmrelease.RecoverUninstall, 0},
		{"uninstalling", []*release.Release{rev(1, release.StatusUninstalling)}, ActionReinstall, helmrelease.RecoverUninstall, 0},
		{"uninstalling after deployed revisions", []*release.Release{rev(1, release.StatusSuperseded), rev(2, release.StatusUninstalling)}, ActionReinstall, helmrelease.RecoverUninstall, 0},
		{"pending-upgrade", []*release.Release{rev(1, release.StatusSuperseded), rev(2, release.StatusPendingUpgrade)}, ActionUpgrade, helmrelease.RecoverRollback, 1},
		{"pending-rollback", []*release.Release{rev(1, release.StatusSuperseded), rev(2, release.StatusFailed), rev(3, release.StatusPendingRollback)}, ActionUpgrade, helmrelease.RecoverRollback, 1},
		{"pending-upgrade with nothing deployed before", []*release.Release{rev(1, release.StatusFailed), rev(2, release.StatusPendingUpgrade)}, ActionReinstall, helmrelease.RecoverUninstall, 0},
		{"failed install", []*release.Release{rev(1, release.StatusFailed)}, ActionUpgrade, helmrelease.RecoverUpgrade, 0},
		{"failed upgrade", []*release.Release{rev(1, release.StatusDeployed), rev(2, release.StatusFailed)}, ActionUpgrade, helmrelease.RecoverUpgrade, 0},
		{"superseded only", []*release.Release{rev(1, release.StatusSuperseded), rev(2, release.StatusSuperseded)}, ActionUpgrade, helmrelease.RecoverUpgrade, 0},
	} {
		t.Run(tc.state, func(t *testing.T) {
			store := storage.Init(driver.NewMemory())
			for _, r := range tc.hist {
				if err := store.Create(r); err != nil {
					t.Fatal(err)
				}
			}
			c, err := operatortest.NewClient(store, nil)(clustertest.New(), ns, &strings.Builder{})
			if err != nil {
				t.Fatal(err)
			}
			rp, err := releasePlan(c, name, ch, map[string]any{"a": 1})
			if err != nil {
				t.Fatal(err)
			}
			if rp.Action != tc.action || rp.Recovery == nil || rp.Recovery.Do != tc.do || rp.Recovery.RollbackTo != tc.rolback || rp.Recovery.Reason == "" {
				t.Fatalf("plan: action %s, recovery %+v; want %s, %s to %d", rp.Action, rp.Recovery, tc.action, tc.do, tc.rolback)
			}
			ctx := context.Background()
			if err := c.Recover(ctx, name, rp.Recovery, time.Minute); err != nil {
				t.Fatal(err)
			}
			cur, err := c.Helm.Current(name)
			if err != nil {
				t.Fatal(err)
			}
			rel, err := c.Helm.InstallOrUpgrade(ctx, ch, map[string]any{"a": 1}, helmrelease.InstallRequest{ReleaseName: name, Timeout: time.Minute}, cur)
			if err != nil {
				t.Fatalf("after the recovery: %v", err)
			}
			if rel.Info.Status != release.StatusDeployed {
				t.Errorf("release %s, want deployed", rel.Info.Status)
			}
			hist, _ := c.Helm.History(name)
			if r := helmrelease.RecoveryOf(hist); r != nil {
				t.Errorf("still needs %+v", r)
			}
		})
	}
	t.Run("deployed needs nothing", func(t *testing.T) {
		if r := helmrelease.RecoveryOf([]*release.Release{rev(1, release.StatusSuperseded), rev(2, release.StatusDeployed)}); r != nil {
			t.Errorf("%+v", r)
		}
	})
}

// TestRollbackPlan: values and chart an earlier deployed revision ran are planned as Helm's
// rollback to that revision and rolled back (a new revision, the history kept); other
// values are an upgrade, the current ones unchanged.
func TestRollbackPlan(t *testing.T) {
	ch := &chart.Chart{Metadata: &chart.Metadata{APIVersion: "v2", Name: "gpu-operator", Version: "v25.3.0"}}
	const name, ns = "gpu-operator", "gpu-operator"
	rev := func(v int, st release.Status, vals map[string]any) *release.Release {
		return &release.Release{Name: name, Namespace: ns, Version: v, Chart: ch, Config: vals, Info: &release.Info{Status: st}}
	}
	store := storage.Init(driver.NewMemory())
	for _, r := range []*release.Release{rev(1, release.StatusSuperseded, map[string]any{"v": "570"}), rev(2, release.StatusDeployed, map[string]any{"v": "580"})} {
		if err := store.Create(r); err != nil {
			t.Fatal(err)
		}
	}
	c, err := operatortest.NewClient(store, nil)(clustertest.New(), ns, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		vals   map[string]any
		action string
		to     int
	}{{map[string]any{"v": "570"}, ActionRollback, 1}, {map[string]any{"v": "590"}, ActionUpgrade, 0}, {map[string]any{"v": "580"}, ActionUnchanged, 0}} {
		rp, err := releasePlan(c, name, ch, tc.vals)
		if err != nil {
			t.Fatal(err)
		}
		if rp.Action != tc.action || rp.RollbackTo != tc.to {
			t.Errorf("values %v: %s to %d; want %s to %d", tc.vals, rp.Action, rp.RollbackTo, tc.action, tc.to)
		}
	}
	rel, err := c.Rollback(context.Background(), name, 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	hist, _ := c.Helm.History(name)
	if rel.Version != 3 || rel.Config["v"] != "570" || len(hist) != 3 || rel.Info.Description != "Rollback to 1" {
		t.Errorf("after the rollback: revision %d, values %v, %d revisions, %q", rel.Version, rel.Config, len(hist), rel.Info.Description)
	}
}
