package helmrelease

import (
	"fmt"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chartutil"
)

// KnownRemoved are, per chart, values the chart dropped, with the release that dropped them,
// for a better warning; any key the chart's values.yaml lacks is warned about too.
var KnownRemoved = map[string]map[string]string{
	"gpu-operator": {"operator.defaultRuntime": "v25.3.0 (the operator reads each node's containerRuntimeVersion)"},
}

// Merge lays the derived values under the user's: any key the user set wins, and its
// Derived entry says so.
func Merge(d *Derivation, user map[string]any) map[string]any {
	out := map[string]any{}
	for i := range d.Values {
		v := &d.Values[i]
		if userSets(user, v.Key) {
			v.Overridden = true
			v.Reason += "; your value wins"
			continue
		}
		setPath(out, v.Key, v.Value)
	}
	// Helm's own coalescing: the user's table wins over the derived one.
	return chartutil.CoalesceTables(copyMap(user), out)
}

// StaleKeys returns warnings for the keys the user set that the chart's values.yaml does not
// have (most often values the chart dropped), so that they are not silently ignored.
func StaleKeys(user, chartDefaults map[string]any, chartName, chartVersion string) []string {
	var warnings []string
	for _, k := range leafKeys(user, "") {
		if _, ok := lookup(chartDefaults, k); ok || prefixExists(chartDefaults, k) {
			continue
		}
		msg := fmt.Sprintf("value %s is not in chart %s %s and will be ignored", k, chartName, chartVersion)
		if why, ok := KnownRemoved[chartName][k]; ok {
			msg = fmt.Sprintf("value %s was removed from the GPU Operator chart in %s; it is ignored", k, why)
		}
		warnings = append(warnings, msg)
	}
	sort.Strings(warnings)
	return warnings
}

// prefixExists tells whether some parent of key is a free-form map in the chart (such as
// annotations or env lists), where any child is legitimate.
func prefixExists(defaults map[string]any, key string) bool {
	parts := strings.Split(key, ".")
	for i := len(parts) - 1; i > 0; i-- {
		v, ok := lookup(defaults, strings.Join(parts[:i], "."))
		if !ok {
			continue
		}
		switch m := v.(type) {
		case map[string]any:
			return len(m) == 0 // an empty map in values.yaml takes any key
		default:
			return true // a list or scalar replaced by a structure: the chart decides
		}
	}
	return false
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			v = copyMap(sub)
		}
		out[k] = v
	}
	return out
}

func leafKeys(m map[string]any, prefix string) []string {
	var keys []string
	for k, v := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok && len(sub) > 0 {
			keys = append(keys, leafKeys(sub, p)...)
			continue
		}
		keys = append(keys, p)
	}
	return keys
}

func lookup(m map[string]any, key string) (any, bool) {
	var cur any = m
	for _, p := range strings.Split(key, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// userSets tells whether the user's values decide key: they set it, or set one of its
// parents to something that is not a table (a null or a scalar replaces the whole table).
func userSets(user map[string]any, key string) bool {
	var cur any = user
	for _, p := range strings.Split(key, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return true // a parent is a scalar or null
		}
		if cur, ok = m[p]; !ok {
			return false
		}
	}
	return true
}

func setPath(m map[string]any, key string, v any) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}
