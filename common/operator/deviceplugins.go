package operator

import (
	"context"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
)

// CheckNoOtherDevicePlugin refuses (exit 2) an operator install that would run its device
// plugin where another one (the standalone chart, a static manifest) already runs. Install
// asks it first; kubectl gpu up asks it before any node changes.
func (c *Client) CheckNoOtherDevicePlugin(ctx context.Context, values map[string]any, releaseName string) error {
	if dp, ok := values["devicePlugin"].(map[string]any); ok && dp["enabled"] == false {
		return nil
	}
	as, err := gpusoftware.GPUAllocators(ctx, c.CS, nil, c.Namespace, releaseName)
	if apierrors.IsForbidden(errors.Unwrap(err)) || err != nil && strings.Contains(err.Error(), "forbidden by RBAC") {
		// An admin of the release namespace only: the install may go on, unchecked.
		fmt.Fprintf(c.Log, "warning: cannot look for another device plugin (listing DaemonSets in every namespace is forbidden): make sure none runs, or pass --set devicePlugin.enabled=false\n")
		return nil
	}
	if err != nil {
		return err
	}
	if len(as) == 0 {
		return nil
	}
	return cliexit.Usagef("%s already runs NVIDIA's device plugin, and two device plugins on one node advertise its GPUs twice: remove it ('kubectl gpu device-plugin uninstall' for the standalone chart) or pass --set devicePlugin.enabled=false", gpusoftware.Describe(as))
}
