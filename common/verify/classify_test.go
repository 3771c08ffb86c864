package verify

import (
	"strings"
	"testing"

	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The fixtures are the shapes real clusters show for each failure: scheduler conditions,
// kubelet container states and events, and the vectoradd sample's own output.
func pending(conds ...corev1.PodCondition) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u1"}, Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: conds}}
}

func waiting(reason, msg string) *corev1.Pod {
	p := pending()
	p.Spec.NodeName = "n"
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ContainerName, Image: "img", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}}
	return p
}

func finished(phase corev1.PodPhase, exit int32, reason string) *corev1.Pod {
	p := pending()
	p.Spec.NodeName = "n"
	p.Status.Phase = phase
	p.Status.Reason = reason
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ContainerName, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exit, Reason: map[bool]string{true: "Completed", false: "Error"}[exit == 0]}}}}
	return p
}

const passLog = `[Vector addition of 50000 elements]
Copy input data from the host memory to the CUDA device
CUDA kernel launch with 196 blocks of 256 threads
Copy output data from the CUDA device to the host memory
Test PASSED
Done
`

func TestClassify(t *testing.T) {
	sandboxEvent := corev1.Event{Type: "Warning", Reason: "FailedCreatePodSandBox", InvolvedObject: corev1.ObjectReference{UID: "u1"},
		Message: `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox runtime: no runtime for "nvidia" is configured`}
	tests := []struct {
		name   string
		obs    testObs
		result Result
		reason Reason
		detail string
	}{
		{"passed", testObs{Pod: finished(corev1.PodSucceeded, 0, ""), Log: passLog}, Passed, "", "Test PASSED"},
		{"succeeded without the marker", testObs{Pod: finished(corev1.PodSucceeded, 0, ""), Log: "hello\n"}, Failed, ReasonNoTestPassed, `its log has no "Test PASSED"; log: hello`},
		{"insufficient GPUs", testObs{Pod: pending(corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
			Message: "0/6 nodes are available: 1 Insufficient nvidia.com/gpu, 5 node(s) didn't match Pod's node affinity/selector. preemption: 0/6 nodes are available: 1 No preemption victims found for incoming pod, 5 Preemption is not helpful for scheduling."})},
			Failed, ReasonUnschedulable, "unschedulable: 0/6 nodes are available: 1 Insufficient nvidia.com/gpu"},
		{"taint", testObs{Pod: pending(corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
			Message: "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: ml}."})}, Failed, ReasonUnschedulable, "untolerated taint"},
		{"still scheduling", testObs{Pod: pending()}, Running, "", ""},
		// DRA, in the words of the real v1.36 scheduler (test/e2e TestDRA).
		{"DRA: no device left", testObs{Pod: pending(corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
			Message: "0/8 nodes are available: 1 cannot allocate all claims, 7 node(s) didn't satisfy plugin(s) [NodeAffinity]. still not schedulable, preemption: 0/8 nodes are available: 8 Preemption is not helpful for scheduling."})},
			Failed, ReasonNoDevice, "cannot allocate all claims"},
		{"DRA: no DeviceClass", testObs{Pod: pending(corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
			Message: "0/8 nodes are available: request gpu: device class gpu.nvidia.com does not exist. no new claims to deallocate, preemption: 0/8 nodes are available: 8 Preemption is not helpful for scheduling."})},
			Failed, ReasonNoDeviceClass, "device class gpu.nvidia.com does not exist"},
		{"DRA: kubelet plugin not registered", testObs{Pod: waiting("ContainerCreating", ""), Events: []corev1.Event{{Type: "Warning", Reason: "FailedPrepareDynamicResources", InvolvedObject: corev1.ObjectReference{UID: "u1"},
			Message: `Failed to prepare dynamic resources: prepare dynamic resources: DRA driver gpu.nvidia.com is not registered`}}},
			Failed, ReasonDRAPluginAbsent, "DRA driver gpu.nvidia.com is not registered"},
		{"image pull", testObs{Image: "nvcr.io/nvidia/k8s/cuda-sample:nope", Pod: waiting("ErrImagePull",
			`rpc error: code = NotFound desc = failed to pull and unpack image "nvcr.io/nvidia/k8s/cuda-sample:nope": not found`)},
			Failed, ReasonImagePull, "image nvcr.io/nvidia/k8s/cuda-sample:nope cannot be pulled: rpc error: code = NotFound"},
		{"image pull back-off", testObs{Pod: waiting("ImagePullBackOff", `Back-off pulling image "img"`)}, Failed, ReasonImagePull, "image img cannot be pulled"},
		{"runtime handler in sandbox event", testObs{Pod: waiting("ContainerCreating", ""), Events: []corev1.Event{sandboxEvent}}, Failed, ReasonRuntimeHandler, `no runtime for "nvidia" is configured`},
		{"runtime handler in container state", testObs{Pod: waiting("CreateContainerError", `failed to get runtime handler: no runtime for "nvidia" is configured`)}, Failed, ReasonRuntimeHandler, "containerd has no runtime"},
		{"other create error", testObs{Pod: waiting("CreateContainerConfigError", "secret \"x\" not found")}, Failed, ReasonContainerError, "CreateContainerConfigError: secret"},
		{"CUDA error", testObs{Pod: finished(corev1.PodFailed, 1, ""), Log: "[Vector addition of 50000 elements]\nFailed to allocate device vector A (error code no CUDA-capable device is detected)!\n"},
			Failed, ReasonCUDAError, "CUDA error: Failed to allocate device vector A (error code no CUDA-capable device is detected)!"},
		{"driver too old", testObs{Pod: finished(corev1.PodFailed, 1, ""), Log: "CUDA driver version is insufficient for CUDA runtime version\n"}, Failed, ReasonCUDAError, "CUDA driver version is insufficient"},
		{"plain exit code", testObs{Pod: finished(corev1.PodFailed, 137, ""), Log: "killed\n"}, Failed, ReasonContainerError, "exited with code 137 (Error); log: killed"},
		{"deadline", testObs{Pod: finished(corev1.PodFailed, 137, "DeadlineExceeded")}, Failed, ReasonDeadlineExceeded, "activeDeadlineSeconds"},
		{"deleted", testObs{}, Failed, ReasonNodeLost, "deleted before it finished"},
		{"evicted", testObs{Pod: finished(corev1.PodFailed, 0, "Evicted")}, Failed, ReasonNodeLost, "Evicted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Classify(nodepod.Observation{Pod: tt.obs.Pod, Events: tt.obs.Events, Log: []byte(tt.obs.Log)}, tt.obs.Image)
			if v.Result != tt.result || v.Reason != tt.reason || !contains(v.Detail, tt.detail) {
				t.Fatalf("got %s/%s %q, want %s/%s containing %q", v.Result, v.Reason, v.Detail, tt.result, tt.reason, tt.detail)
			}
			if v.Result == Failed && v.Hint == "" {
				t.Fatal("a failure needs a hint")
			}
		})
	}
}

// testObs is a case's observation, its log and image as text.
type testObs struct {
	Pod    *corev1.Pod
	Events []corev1.Event
	Log    string
	Image  string
}

func contains(s, sub string) bool {
	return strings.Contains(s, sub)
}
