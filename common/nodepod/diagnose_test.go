package nodepod

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestRefusedHint(t *testing.T) {
	r := Refused{What: "pod", Level: "restricted", Resource: "pods"}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New(`pods "x" is forbidden: violates PodSecurity "baseline:latest": privileged`), "label namespace ns pod-security.kubernetes.io/enforce=restricted"},
		{errors.New(`pods "x" is forbidden: exceeded quota: q`), "a ResourceQuota in namespace ns forbids the pod"},
		{apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "x", errors.New("no")), "RBAC: you need 'create pods' in namespace ns"},
		{errors.New("connection refused"), ""},
	} {
		if got := r.Hint("ns", tc.err); tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("%v: %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestImagePullFailed(t *testing.T) {
	for reason, want := range map[string]bool{"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true, "ErrImageNeverPull": true, "ContainerCreating": false} {
		if got := ImagePullFailed(&corev1.ContainerStateWaiting{Reason: reason}); got != want {
			t.Errorf("%s: %v", reason, got)
		}
	}
	if ImagePullFailed(nil) {
		t.Error("nil")
	}
}
