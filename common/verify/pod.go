package verify

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
)

// PodName is the verify pod's name for a node: one per node, so that two runs cannot
// book the same GPUs twice.
func PodName(node string) string { return nodepod.Fit("gpu-verify-"+node, 63) }

// Pod builds the verify pod for a target: pinned to its node by node affinity (so the
// scheduler decides and explains), asking for the GPUs as limits, tolerating the GPU
// taint, unprivileged, with a deadline.
func Pod(req *Request, rc string, t target, labels map[string]string) *corev1.Pod {
	deadline := int64(req.Timeout.Seconds())
	if deadline < 30 {
		deadline = 30
	}
	q := *resource.NewQuantity(t.gpus, resource.DecimalSI)
	tolerations := []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	if req.Cordoned {
		// What DaemonSets carry: the scheduler places the pod on a cordoned node.
		tolerations = append(tolerations, corev1.Toleration{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
	}
	if req.TolerateAll {
		tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: t.pod, Namespace: req.Namespace, Labels: labels},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			ActiveDeadlineSeconds:         &deadline,
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Tolerations:                   tolerations,
			Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
					MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{t.node}}},
				}}},
			}},
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](1000),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            ContainerName,
				Image:           req.Image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Resources:       resources(req, t, q),
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					Privileged:               ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	if rc != "" {
		p.Spec.RuntimeClassName = ptr.To(rc)
	}
	if t.dra {
		p.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: claimName, ResourceClaimTemplateName: ptr.To(TemplateName(labels[nodepod.LabelRun], t.gpus))}}
	}
	return p
}

// claimName is the pod's name for its GPU claim.
const claimName = "gpu"

// resources asks for the GPUs: the extended resource, or the pod's claim.
func resources(req *Request, t target, q resource.Quantity) corev1.ResourceRequirements {
	if t.dra {
		return corev1.ResourceRequirements{Claims: []corev1.ResourceClaim{{Name: claimName}}}
	}
	return corev1.ResourceRequirements{
		Limits:   corev1.ResourceList{req.Resource: q},
		Requests: corev1.ResourceList{req.Resource: q},
	}
}
