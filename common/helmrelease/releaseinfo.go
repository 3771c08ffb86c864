package helmrelease

// A release as the status documents show it.
import (
	"time"
)

// ReleaseInfo is the Helm release.
type ReleaseInfo struct {
	Name       string    `json:"name"`
	Chart      string    `json:"chart"`
	AppVersion string    `json:"appVersion"`
	Revision   int       `json:"revision"`
	Status     string    `json:"status"`
	Updated    time.Time `json:"updated"`
	// Description is Helm's of the revision ("Upgrade complete", "Rollback to 3").
	Description string `json:"description,omitempty"`
}

// ReleaseStatus reads the release (nil when there is none).
func (h *Helm) ReleaseStatus(name string) (*ReleaseInfo, error) {
	rel, err := h.Current(name)
	if err != nil || rel == nil {
		return nil, err
	}
	ri := &ReleaseInfo{Name: rel.Name, Revision: rel.Version}
	if rel.Chart != nil && rel.Chart.Metadata != nil {
		ri.Chart = rel.Chart.Metadata.Name + "-" + rel.Chart.Metadata.Version
		ri.AppVersion = rel.Chart.Metadata.AppVersion
	}
	if rel.Info != nil {
		ri.Status = rel.Info.Status.String()
		ri.Updated = rel.Info.LastDeployed.Time
		ri.Description = rel.Info.Description
	}
	return ri, nil
}
