package simnodes

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
)

// PlayOperator plays the GPU Operator's controller, which kwok's nodes cannot run: until
// ctx ends, it marks ClusterPolicy ready whenever it exists and is not (as the controller
// does once its operands run).
func PlayOperator(ctx context.Context, c *localcluster.Cluster) error {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	go func() {
		for ctx.Err() == nil {
			time.Sleep(300 * time.Millisecond)
			cp, err := dyn.Resource(gpusoftware.ClusterPolicyGVR).Get(ctx, gpusoftware.ClusterPolicyName, metav1.GetOptions{})
			if err != nil {
				continue
			}
			if s, _, _ := unstructured.NestedString(cp.Object, "status", "state"); s == "ready" {
				continue
			}
			_ = unstructured.SetNestedField(cp.Object, "ready", "status", "state")
			_ = unstructured.SetNestedSlice(cp.Object, []any{map[string]any{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "ClusterPolicy is ready",
				"lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}}, "status", "conditions")
			_, _ = dyn.Resource(gpusoftware.ClusterPolicyGVR).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
		}
	}()
	return nil
}
