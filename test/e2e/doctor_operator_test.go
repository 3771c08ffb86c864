package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kubectl-gpu/kubectl-gpu/common/doctor"
	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
)

// TestDoctorOperator: the GPU Operator's real chart installed (its ClusterPolicy CRD and
// object, its operator Deployment), and its operands on three GPU nodes made to fail the way
// they do — the validator stuck at its toolkit-validation init step, the device plugin
// crash-looping on "Failed to initialize NVML", the device plugin's image not pullable — each
// node at allocatable 0, a GPU pod Pending for one. The nodes are ones kwok does not manage, so
// the pods keep the states the test gives them (no kubelet runs: the test plays it). doctor
// names each failure on the software link with its fix.
func TestDoctorOperator(t *testing.T) {
	chart := chartPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := env.Cluster.Client
	henv := helmEnv(t)
	if r := env.Kubectl(ctx, henv, "gpu", "operator", "install", "--chart", chart, "--timeout", "3m"); r.Code != 0 {
		t.Fatalf("operator install: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	t.Cleanup(func() {
		env.Kubectl(context.Background(), henv, "gpu", "operator", "uninstall", "--yes", "--keep-crds=false")
	})

	names := []string{"gpu-op-validator", "gpu-op-crash", "gpu-op-pull"}
	for _, name := range names {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels: map[string]string{"kubernetes.io/hostname": name, "nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": "8"},
			Annotations: map[string]string{flavour.AnnotationPrefix + "reported-at": time.Now().UTC().Format(time.RFC3339), rep.AnnotationGPUs: "8",
				rep.AnnotationDriver: "570.195.03", rep.AnnotationToolkit: "1.17.8-1", rep.AnnotationNvidiaRuntime: "true"}}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
		n.Status = corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
			Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourcePods: resource.MustParse("110"), "nvidia.com/gpu": resource.MustParse("0")},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourcePods: resource.MustParse("110"), "nvidia.com/gpu": resource.MustParse("0")}}
		if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The operands as the operator's DaemonSets make them, in the chart's namespace.
	const ns = "gpu-operator"
	ctr := func(name, image string) corev1.Container { return corev1.Container{Name: name, Image: image} }
	waiting := func(reason, msg string) corev1.ContainerState {
		return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
	}
	pods := []struct {
		pod    *corev1.Pod
		status corev1.PodStatus
	}{
		{&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-operator-validator-x1", Namespace: ns, Labels: map[string]string{"app": "nvidia-operator-validator"}},
			Spec: corev1.PodSpec{NodeName: "gpu-op-validator",
				InitContainers: []corev1.Container{ctr("driver-validation", "nvcr.io/nvidia/gpu-operator:v26.7.0"), ctr("toolkit-validation", "nvcr.io/nvidia/gpu-operator:v26.7.0"), ctr("cuda-validation", "nvcr.io/nvidia/gpu-operator:v26.7.0")},
				Containers:     []corev1.Container{ctr("nvidia-operator-validator", "nvcr.io/nvidia/gpu-operator:v26.7.0")}}},
			corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{
				{Name: "driver-validation", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}},
				{Name: "toolkit-validation", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}},
				{Name: "cuda-validation", State: waiting("PodInitializing", "")}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "nvidia-operator-validator", State: waiting("PodInitializing", "")}}}},
		{&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-device-plugin-daemonset-x2", Namespace: ns, Labels: map[string]string{"app": "nvidia-device-plugin-daemonset"}},
			Spec: corev1.PodSpec{NodeName: "gpu-op-crash", Containers: []corev1.Container{ctr("nvidia-device-plugin", "nvcr.io/nvidia/k8s-device-plugin:v0.18.0")}}},
			corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "nvidia-device-plugin", RestartCount: 6,
				State: waiting("CrashLoopBackOff", "back-off 2m40s restarting failed container=nvidia-device-plugin"),
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error",
					Message: "E1206 10:02:11.000000 1 main.go:132] error starting plugins: failed to create plugin manager: failed to create NVML resource manager: failed to initialize NVML: Unknown Error"}}}}}},
		{&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-device-plugin-daemonset-x3", Namespace: ns, Labels: map[string]string{"app": "nvidia-device-plugin-daemonset"}},
			Spec: corev1.PodSpec{NodeName: "gpu-op-pull", Containers: []corev1.Container{ctr("nvidia-device-plugin", "nvcr.io/nvidia/k8s-device-plugin:v0.18.0")}}},
			corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "nvidia-device-plugin",
				State: waiting("ImagePullBackOff", `Back-off pulling image "nvcr.io/nvidia/k8s-device-plugin:v0.18.0": dial tcp: lookup nvcr.io: no such host`)}}}},
	}
	for _, p := range pods {
		created, err := cs.CoreV1().Pods(ns).Create(ctx, p.pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		name := created.Name
		t.Cleanup(func() {
			_ = cs.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		})
		created.Status = p.status
		if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	r := env.Gpu(ctx, append(append([]string{"doctor"}, names...), "--no-agent", "-o", "json")...)
	var rep doctor.Report
	if err := json.Unmarshal([]byte(r.Stdout), &rep); r.Code != 1 || err != nil || len(rep.Items) != 3 {
		t.Fatalf("doctor: exit %d %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
	}
	want := map[string]struct {
		remedy      remedy.Action
		detail, fix string
	}{
		"gpu-op-validator": {remedy.Restart, "the operator's validator nvidia-operator-validator-x1 is stuck at toolkit-validation: running", "-c toolkit-validation"},
		"gpu-op-crash":     {remedy.Restart, "CrashLoopBackOff: container nvidia-device-plugin restarted 6 times: E1206 10:02:11.000000 1 main.go:132] error starting plugins: failed to create plugin manager: failed to create NVML resource manager: failed to initialize NVML: Unknown Error", "kubectl delete pod -n gpu-operator nvidia-device-plugin-daemonset-x2"},
		"gpu-op-pull":      {remedy.Configure, "ImagePullBackOff", "kubectl gpu mirror"},
	}
	for _, n := range rep.Items {
		w := want[n.Node]
		sw := n.Links[4]
		if n.Verdict != doctor.Unschedulable || n.FirstBroken != doctor.LinkSoftware || n.Remedy != w.remedy || sw.State != doctor.Broken ||
			!strings.Contains(sw.Detail, w.detail) || !strings.Contains(n.Fix, w.fix) || n.Links[5].State != doctor.Broken {
			t.Errorf("%s: %s, first %q, remedy %q\n  software: %+v\n  kubernetes: %+v", n.Node, n.Verdict, n.FirstBroken, n.Remedy, sw, n.Links[5])
		}
	}
	t.Logf("doctor with the operator's real chart:\n%s", env.Gpu(ctx, append(append([]string{"doctor"}, names...), "--no-agent")...).Stdout)
}
