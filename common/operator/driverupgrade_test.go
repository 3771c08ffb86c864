package operator

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
)

// TestDriverUpgradeHolds (the API a fake clientset; test/up plays the controller on the
// local control plane): each state the upgrade controller leaves a node in is explained —
// the skip label, autoUpgrade off, a slot, the GPU pod that holds a node with its budget,
// the driver pod's crash, the validator's step, a failed upgrade's retry — with how long it
// has been there; finished nodes hold nothing, and the status is not ready until every node
// is done.
func TestDriverUpgradeHolds(t *testing.T) {
	now := time.Unix(time.Now().Unix(), 0) // whole seconds, as the annotation holds them
	node := func(name, state string, labels map[string]string, ann map[string]string) corev1.Node {
		l := map[string]string{LabelDriverUpgradeState: state}
		for k, v := range labels {
			l[k] = v
		}
		mt := metav1.NewTime(now.Add(-90 * time.Second))
		return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l, Annotations: ann, ManagedFields: []metav1.ManagedFieldsEntry{
			{Manager: "gpu-operator", Time: &mt, FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{"f:` + LabelDriverUpgradeState + `":{}}}}`)}}}}}
	}
	jobStart := now.Add(-5 * time.Minute).Unix()
	nodes := []corev1.Node{
		node("a-done", UpgradeDone, nil, nil),
		node("b-skip", UpgradeRequired, map[string]string{LabelDriverUpgradeSkip: "true"}, nil),
		node("c-deletion", UpgradePodDeletion, nil, nil),
		node("d-restart", UpgradePodRestart, nil, nil),
		node("e-validation", UpgradeValidation, nil, nil),
		node("f-failed", UpgradeFailed, nil, nil),
		node("g-jobs", UpgradeWaitForJobs, nil, map[string]string{annotationWaitForJobsStart: itoa(jobStart)}),
		{ObjectMeta: metav1.ObjectMeta{Name: "h-none"}},
	}
	gpuPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "train-0", Namespace: "ml", Labels: map[string]string{"app": "train"}},
		Spec:   corev1.PodSpec{NodeName: "c-deletion", Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("4")}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	jobPod := gpuPod.DeepCopy()
	jobPod.Name, jobPod.Spec.NodeName = "job-0", "g-jobs"
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "train", Namespace: "ml"},
		Spec:   policyv1.PodDisruptionBudgetSpec{MinAvailable: &intstr.IntOrString{IntVal: 1}, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "train"}}},
		Status: policyv1.PodDisruptionBudgetStatus{DisruptionsAllowed: 0}}
	cs := fake.NewSimpleClientset(gpuPod, jobPod, pdb)
	ns := "gpu-operator"
	pods := []corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-driver-daemonset-x", Namespace: ns, Labels: map[string]string{"app": "nvidia-driver-daemonset"}},
			Spec:   corev1.PodSpec{NodeName: "d-restart"},
			Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "nvidia-driver-ctr", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-operator-validator-y", Namespace: ns, Labels: map[string]string{"app": "nvidia-operator-validator"}},
			Spec: corev1.PodSpec{NodeName: "e-validation"},
			Status: corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{
				{Name: "driver-validation", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}},
				{Name: "toolkit-validation", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}},
	}
	cp := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{"driver": map[string]any{"upgradePolicy": map[string]any{"autoUpgrade": true, "maxParallelUpgrades": int64(1)}}}}}
	got := DriverUpgrade(context.Background(), cs, ns, nodes, pods, cp)
	by := map[string]DriverUpgradeNode{}
	for _, n := range got {
		by[n.Node] = n
	}
	if len(got) != 7 || got[0].Node != "a-done" {
		t.Fatalf("nodes %+v; want the 7 labelled, sorted", got)
	}
	want := map[string][]string{
		"a-done":       {""},
		"b-skip":       {LabelDriverUpgradeSkip + "=true"},
		"c-deletion":   {"pod ml/train-0 holds 4 GPU(s)", "PodDisruptionBudget ml/train allows 0"},
		"d-restart":    {"driver pod nvidia-driver-daemonset-x", "CrashLoopBackOff"},
		"e-validation": {"the validator waits at toolkit-validation: running"},
		"f-failed":     {"=upgrade-required to retry"},
		"g-jobs":       {"pod ml/job-0", "no timeout"},
	}
	for n, ws := range want {
		for _, w := range ws {
			if w == "" && by[n].Held != "" || !strings.Contains(by[n].Held, w) {
				t.Errorf("%s held %q, want %q", n, by[n].Held, w)
			}
		}
	}
	if d := by["g-jobs"].For(now); d != "5m0s" {
		t.Errorf("wait for jobs for %s, want 5m0s (its annotation)", d)
	}
	if d := by["c-deletion"].For(now); d != "1m30s" {
		t.Errorf("pod deletion for %s, want 1m30s (the controller's last write)", d)
	}
	// The slot and autoUpgrade: a node waiting while the one slot is taken, and with
	// autoUpgrade off.
	slot := []corev1.Node{node("x", UpgradeRequired, nil, nil), node("y", UpgradeDrain, nil, nil)}
	got = DriverUpgrade(context.Background(), cs, ns, slot, nil, cp)
	if !strings.Contains(got[0].Held, "maxParallelUpgrades=1") {
		t.Errorf("a node waiting for the slot: %q", got[0].Held)
	}
	_ = unstructured.SetNestedField(cp.Object, false, "spec", "driver", "upgradePolicy", "autoUpgrade")
	got = DriverUpgrade(context.Background(), cs, ns, slot, nil, cp)
	if !strings.Contains(got[0].Held, "autoUpgrade is false") {
		t.Errorf("autoUpgrade off: %q", got[0].Held)
	}

	// A role that reads the status but not every namespace's pods: the nodes are still
	// explained, and say what could not be read.
	denied := fake.NewSimpleClientset()
	denied.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("no"))
	})
	got = DriverUpgrade(context.Background(), denied, ns, []corev1.Node{node("z", UpgradeDrain, nil, nil)}, nil, cp)
	if len(got) != 1 || !strings.Contains(got[0].Held, "cannot be read") {
		t.Errorf("pods forbidden: %+v", got)
	}

	st := &Status{Release: nil, DriverUpgrade: []DriverUpgradeNode{{Node: "a", State: UpgradeDone}, {Node: "b", State: UpgradeDrain, Held: "pod x holds 1 GPU(s)"}},
		ClusterPolicy: &PolicyInfo{State: "ready"}, Namespace: ns}
	st.judgeStack("clusterpolicy", "ClusterPolicy "+gpusoftware.ClusterPolicyName, st.ClusterPolicy)
	st.judgeDriverUpgrade()
	if st.Ready || st.Failing != "driver upgrade" || !strings.Contains(st.Hint, "driver upgrade 1/2 done: b drain-required: pod x holds 1 GPU(s)") || !strings.Contains(st.Summary(), "1/2 done") {
		t.Errorf("status with an unfinished upgrade: ready %v, %q: %q; summary %q", st.Ready, st.Failing, st.Hint, st.Summary())
	}
	st.DriverUpgrade[1].State = UpgradeDone
	st.Ready, st.Failing, st.Hint = false, "", ""
	st.judgeStack("clusterpolicy", "ClusterPolicy "+gpusoftware.ClusterPolicyName, st.ClusterPolicy)
	st.judgeDriverUpgrade()
	if !st.Ready {
		t.Errorf("every node done: not ready: %s %s", st.Failing, st.Hint)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
