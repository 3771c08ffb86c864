package helmrelease

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
)

// What a stuck release needs before it can be installed or upgraded.
const (
	// RecoverUninstall: finish removing it, then install afresh (nothing of it was ever
	// deployed, or its uninstall was interrupted).
	RecoverUninstall = "uninstall"
	// RecoverRollback: roll back to the last revision that was deployed, then upgrade.
	RecoverRollback = "rollback"
	// RecoverUpgrade: nothing to do first; Helm upgrades from the last revision as it is
	// (failed, or superseded with none deployed).
	RecoverUpgrade = "upgrade"
)

// Recovery is what a release left by an interrupted or failed operation needs, the way Helm
// allows it.
type Recovery struct {
	// Status and Revision are the release's last revision's.
	Status   release.Status `json:"status"`
	Revision int            `json:"revision"`
	// Do is uninstall, rollback or upgrade; RollbackTo the revision a rollback returns to.
	Do         string `json:"do"`
	RollbackTo int    `json:"rollbackTo,omitempty"`
	// Reason says it in a sentence.
	Reason string `json:"reason"`
}

// History returns the release's revisions, oldest first (nil when there is none).
func (h *Helm) History(name string) ([]*release.Release, error) {
	rels, err := action.NewHistory(h.Config).Run(name)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, helmError("read the history of release "+name, err)
	}
	sort.Slice(rels, func(i, j int) bool { return rels[i].Version < rels[j].Version })
	return rels, nil
}

// RecoveryOf says what the release's history needs before an install or upgrade (nil:
// nothing; it is deployed, uninstalled or not there). Helm refuses to upgrade over a pending
// revision (another operation in progress) and over an uninstalling one ("has no deployed
// releases"), and installs over neither; it upgrades from a failed or superseded last revision.
func RecoveryOf(hist []*release.Release) *Recovery {
	if len(hist) == 0 {
		return nil
	}
	last := hist[len(hist)-1]
	if last.Info == nil {
		return nil
	}
	r := &Recovery{Status: last.Info.Status, Revision: last.Version}
	deployedBefore := 0
	for _, h := range hist[:len(hist)-1] {
		if h.Info != nil && (h.Info.Status == release.StatusDeployed || h.Info.Status == release.StatusSuperseded) {
			deployedBefore = h.Version
		}
	}
	switch last.Info.Status {
	case release.StatusDeployed, release.StatusUninstalled, release.StatusUnknown:
		return nil
	case release.StatusPendingInstall:
		r.Do, r.Reason = RecoverUninstall, fmt.Sprintf("an install (revision %d) was interrupted and left pending-install: Helm neither installs nor upgrades over it, so it is removed and installed again", last.Version)
	case release.StatusUninstalling:
		r.Do, r.Reason = RecoverUninstall, fmt.Sprintf("an uninstall (or the rollback of a failed install) was interrupted at revision %d, left uninstalling: Helm upgrades nothing over it (\"has no deployed releases\"), so the uninstall is finished and the release installed again", last.Version)
	case release.StatusPendingUpgrade, release.StatusPendingRollback:
		if deployedBefore == 0 {
			r.Do, r.Reason = RecoverUninstall, fmt.Sprintf("revision %d was left %s and no earlier revision was deployed: it is removed and installed again", last.Version, last.Info.Status)
			break
		}
		r.Do, r.RollbackTo = RecoverRollback, deployedBefore
		r.Reason = fmt.Sprintf("revision %d was left %s by an interrupted operation: Helm refuses another while it is pending, so the release is rolled back to revision %d (the last deployed), then upgraded", last.Version, last.Info.Status, deployedBefore)
	case release.StatusFailed:
		r.Do, r.Reason = RecoverUpgrade, fmt.Sprintf("revision %d failed: Helm upgrades from it", last.Version)
	case release.StatusSuperseded:
		r.Do, r.Reason = RecoverUpgrade, fmt.Sprintf("no revision is deployed (the last, %d, is superseded): Helm upgrades from it", last.Version)
	default:
		return nil
	}
	return r
}

// Recover carries out what a Recovery says must come first (an upgrade needs nothing).
func (c *Client) Recover(ctx context.Context, name string, r *Recovery, timeout time.Duration) error {
	if r == nil {
		return nil
	}
	switch r.Do {
	case RecoverUninstall:
		if err := c.Helm.Uninstall(name, timeout); err != nil {
			return fmt.Errorf("remove release %s left %s: %w", name, r.Status, err)
		}
	case RecoverRollback:
		rb := action.NewRollback(c.Helm.Config)
		rb.Version, rb.Timeout = r.RollbackTo, timeout
		if err := rb.Run(name); err != nil {
			return helmError(fmt.Sprintf("roll release %s back to revision %d (it was left %s)", name, r.RollbackTo, r.Status), err)
		}
	}
	return nil
}

// Rollback takes a deployed release back to an earlier revision (its chart and values) by
// Helm's rollback, the history kept, and waits as long as timeout for its resources; it
// returns the new revision.
func (c *Client) Rollback(ctx context.Context, name string, revision int, timeout time.Duration) (*release.Release, error) {
	rb := action.NewRollback(c.Helm.Config)
	rb.Version, rb.Timeout = revision, timeout
	if err := rb.Run(name); err != nil {
		if ctx.Err() != nil {
			return nil, cliexit.ErrInterrupted
		}
		return nil, helmError(fmt.Sprintf("roll release %s back to revision %d", name, revision), err)
	}
	return c.Helm.Current(name)
}
