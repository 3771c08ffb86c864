package operator

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
)

func TestJudge(t *testing.T) {
	deployed := &helmrelease.ReleaseInfo{Name: "gpu-operator", Status: "deployed"}
	tests := []struct {
		name    string
		st      Status
		ready   bool
		failing string
		hint    string
	}{
		{"not installed", Status{}, false, "release", "kubectl gpu operator install"},
		{"failed release", Status{Release: &helmrelease.ReleaseInfo{Name: "gpu-operator", Status: "failed"}, Namespace: "gpu-operator"}, false, "release", "helm history -n gpu-operator gpu-operator"},
		{"no policy yet", Status{Release: deployed}, false, "clusterpolicy", "does not exist yet"},
		{"driver not ready", Status{Release: deployed, ClusterPolicy: &PolicyInfo{State: "notReady"},
			Components: []gpusoftware.Component{{Name: "gpu-feature-discovery", Desired: 2, Ready: 0}, {Name: "nvidia-driver-daemonset", Desired: 2, Ready: 1}}}, false, "gpu-feature-discovery", "waits for the driver"},
		{"policy error condition", Status{Release: deployed, ClusterPolicy: &PolicyInfo{State: "notReady", Conditions: []Condition{{Type: "Error", Status: "True", Reason: "ReconcileFailed", Message: "boom"}}}},
			false, "clusterpolicy", "ReconcileFailed: boom"},
		{"ready", Status{Release: deployed, ClusterPolicy: &PolicyInfo{State: "ready"}, Components: []gpusoftware.Component{{Name: "nvidia-device-plugin-daemonset", Desired: 2, Ready: 2}}}, true, "", ""},
	}
	for _, tt := range tests {
		st := tt.st
		st.judge()
		if st.Ready != tt.ready || st.Failing != tt.failing || !strings.Contains(st.Hint, tt.hint) {
			t.Errorf("%s: ready %v failing %q hint %q", tt.name, st.Ready, st.Failing, st.Hint)
		}
	}
}

func TestValidatorSteps(t *testing.T) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "nvidia-operator-validator-x"},
		Spec:       corev1.PodSpec{NodeName: "gpu-1"},
		Status: corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{
			{Name: "driver-validation", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}},
			{Name: "toolkit-validation", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}},
			{Name: "cuda-validation", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}},
		}},
	}
	v := Validator(p)
	if v.Node != "gpu-1" || v.Done || strings.Join(v.Steps, ", ") != "driver-validation: done, toolkit-validation: failed (exit 1), cuda-validation: waiting" {
		t.Fatalf("%+v", v)
	}
}
