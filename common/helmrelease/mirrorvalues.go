package helmrelease

import (
	"sort"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
)

// RepositoryMapper moves an image repository to a mirror (mirror.Target is one).
type RepositoryMapper interface {
	// MapRepository is repo's place in the mirror.
	MapRepository(repo string) string
	// String names the mirror.
	String() string
}

// MirrorValues are the chart values that make the install pull every image from the
// mirror: each `repository` key of the chart's values (its own and its subcharts', as the
// install's values leave them) moved by m, with the chart's own keys, so that the values
// file works with 'kubectl gpu operator install -f' and 'helm install -f' alike. It
// returns the values and the keys it moved.
func MirrorValues(ch *chart.Chart, install map[string]any, m RepositoryMapper) (map[string]any, []string, error) {
	all, err := chartutil.CoalesceValues(ch, install)
	if err != nil {
		return nil, nil, err
	}
	// A subchart's defaults are coalesced under its name, but an aliased dependency (the
	// device plugin chart's node-feature-discovery as "nfd") reads its values under the
	// alias: move them there, the install's own values under the alias winning.
	if ch.Metadata != nil {
		for _, d := range ch.Metadata.Dependencies {
			if d == nil || d.Alias == "" || d.Alias == d.Name {
				continue
			}
			if sub, ok := all[d.Name].(map[string]any); ok {
				aliased, _ := all[d.Alias].(map[string]any)
				all[d.Alias] = chartutil.CoalesceTables(copyMap(aliased), sub)
				delete(all, d.Name)
			}
		}
	}
	out := map[string]any{}
	var keys []string
	var walk func(in map[string]any, out map[string]any, path string) bool
	walk = func(in map[string]any, out map[string]any, path string) bool {
		found := false
		names := make([]string, 0, len(in))
		for k := range in {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			switch v := in[k].(type) {
			case string:
				if k == "repository" && v != "" {
					out[k] = m.MapRepository(v)
					keys = append(keys, path+k)
					found = true
				}
			case map[string]any:
				sub := map[string]any{}
				if walk(v, sub, path+k+".") {
					out[k] = sub
					found = true
				}
			}
		}
		return found
	}
	walk(all, out, "")
	sort.Strings(keys)
	return out, keys, nil
}
