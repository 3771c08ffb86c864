package verify

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
)

// TemplateName is the run's ResourceClaimTemplate for pods that ask for gpus devices.
func TemplateName(runID string, gpus int64) string {
	return fmt.Sprintf("gpu-verify-%s-%d", runID, gpus)
}

// Templates are the ResourceClaimTemplates a run's DRA pods need: one per device count, on
// DeviceClass gpu.nvidia.com (whole GPUs) or mig.nvidia.com with the MIG profile of
// req.Resource.
func Templates(req *Request, plan *Plan, runID string) []*resourcev1.ResourceClaimTemplate {
	counts := map[int64]bool{}
	var out []*resourcev1.ResourceClaimTemplate
	for _, t := range plan.Targets {
		if !t.dra || counts[t.gpus] {
			continue
		}
		counts[t.gpus] = true
		dreq := resourcev1.ExactDeviceRequest{DeviceClassName: inventory.DeviceClassGPU, AllocationMode: resourcev1.DeviceAllocationModeExactCount, Count: t.gpus}
		if profile, ok := strings.CutPrefix(string(req.Resource), inventory.MIGResourcePrefix); ok {
			dreq.DeviceClassName = inventory.DeviceClassMIG
			dreq.Selectors = []resourcev1.DeviceSelector{{CEL: &resourcev1.CELDeviceSelector{
				Expression: fmt.Sprintf("device.attributes['%s'].profile == '%s'", inventory.DRADriver, profile)}}}
		}
		labels := map[string]string{nodepod.LabelManagedBy: nodepod.ManagedBy, nodepod.LabelComponent: Component, nodepod.LabelRun: runID}
		out = append(out, &resourcev1.ResourceClaimTemplate{
			ObjectMeta: metav1.ObjectMeta{Name: TemplateName(runID, t.gpus), Namespace: req.Namespace, Labels: labels},
			Spec: resourcev1.ResourceClaimTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       resourcev1.ResourceClaimSpec{Devices: resourcev1.DeviceClaim{Requests: []resourcev1.DeviceRequest{{Name: claimName, Exactly: &dreq}}}},
			},
		})
	}
	return out
}

// createTemplates creates the run's templates; removeTemplates deletes them (the claims
// made from them belong to the pods and go with them).
func createTemplates(ctx context.Context, cs kubernetes.Interface, ns string, ts []*resourcev1.ResourceClaimTemplate) error {
	for _, t := range ts {
		err := nodepod.Retry(ctx, func(ctx context.Context) error {
			_, err := cs.ResourceV1().ResourceClaimTemplates(ns).Create(ctx, t, metav1.CreateOptions{})
			return err
		})
		if err != nil {
			return cluster.APIError("create ResourceClaimTemplate "+t.Name+" in namespace "+ns, err)
		}
	}
	return nil
}

func removeTemplates(ctx context.Context, cs kubernetes.Interface, ns, selector string) (int, error) {
	l, err := cs.ResourceV1().ResourceClaimTemplates(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return 0, err
	}
	var names []string
	for _, t := range l.Items {
		names = append(names, t.Name)
	}
	nodepod.DeleteAll(ctx, names, func(ctx context.Context, n string) error {
		return cs.ResourceV1().ResourceClaimTemplates(ns).Delete(ctx, n, metav1.DeleteOptions{})
	})
	return len(names), nil
}

// hasClaims tells whether a pod asks for devices through claims.
func hasClaims(p *corev1.Pod) bool { return p != nil && len(p.Spec.ResourceClaims) > 0 }
