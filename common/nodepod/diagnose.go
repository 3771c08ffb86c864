package nodepod

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Refused says, for a run's objects, what a create refusal asks to change.
type Refused struct {
	// What is the object as the user knows it ("agent pod", "pod").
	What string
	// Level is the Pod Security level the object needs ("privileged").
	Level string
	// Resource is what RBAC must allow creating ("jobs", "pods").
	Resource string
}

// Hint says what to change when an object of the run cannot be created in ns — the API
// server's answer, or the Job controller's FailedCreate event: the Pod Security level the
// namespace enforces, a ResourceQuota, RBAC. "" when err is none of these.
func (r Refused) Hint(ns string, err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "violates PodSecurity"):
		return fmt.Sprintf("namespace %s enforces a Pod Security level the %s does not meet: label namespace %s pod-security.kubernetes.io/enforce=%s, or use --namespace", ns, r.What, ns, r.Level)
	case strings.Contains(msg, "exceeded quota"):
		return fmt.Sprintf("a ResourceQuota in namespace %s forbids the %s: raise it, or use another --namespace", ns, r.What)
	case apierrors.IsForbidden(err) || strings.Contains(msg, "forbidden"):
		return fmt.Sprintf("RBAC: you need 'create %s' in namespace %s", r.Resource, ns)
	}
	return ""
}

// ImagePullFailed tells whether a container waits on an image it cannot pull.
func ImagePullFailed(w *corev1.ContainerStateWaiting) bool {
	return w != nil && ImagePullReason(w.Reason)
}

// ImagePullReason tells whether a container's waiting reason is the kubelet's for an image
// it cannot pull.
func ImagePullReason(reason string) bool {
	switch reason {
	case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull":
		return true
	}
	return false
}
