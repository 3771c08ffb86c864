package mirror

import (
	"context"
	"sort"

	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
)

// Values are the chart values that make the install pull every image from the mirror: each
// `repository` key of the chart's values (its own and its subcharts', as the install's
// values leave them) moved to the mirror, with the chart's own keys, so that the
// values file works with 'kubectl gpu operator install -f' and 'helm install -f' alike.
func Values(ch *chart.Chart, install map[string]any, t Target) (map[string]any, []string, error) {
	all, err := chartutil.CoalesceValues(ch, install)
	if err != nil {
		return nil, nil, err
	}
	out := map[string]any{}
	var keys []string
	var walk func(in map[string]any, out map[string]any, path string) bool
	walk = func(in map[string]any, out map[string]any, path string) bool {
		found := false
		for _, k := range sortedKeys(in) {
			switch v := in[k].(type) {
			case string:
				if k == "repository" && v != "" {
					out[k] = t.MapRepository(v)
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

// InstallValues are the values that make an install pull from the mirror: the chart's
// repository keys, as Values gives them, for the install req describes.
func InstallValues(ctx context.Context, c *op.Client, req op.ValuesRequest, t Target) (map[string]any, error) {
	ch, doc, err := c.Values(ctx, req)
	if err != nil {
		return nil, err
	}
	v, _, err := Values(ch, doc.Values, t)
	return v, err
}
