package mirror

import (
	"context"

	"helm.sh/helm/v3/pkg/chart"

	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
)

// Values are the chart values that make the install pull every image from the mirror
// (operator.MirrorValues with t).
func Values(ch *chart.Chart, install map[string]any, t Target) (map[string]any, []string, error) {
	return helmrelease.MirrorValues(ch, install, t)
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
