package prep

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/pkginstall"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

func TestJobCheckIsReadOnlyApplyIsPrivileged(t *testing.T) {
	cfg := &Request{Namespace: "kubectl-gpu", Image: "agent:v1", Timeout: 2 * time.Minute, RestartRuntime: true}
	check := Job(cfg, "gpu-1", rep.ModeCheck, nodepod.Labels(Component, "abcde", "gpu-1"))
	p := check.Spec.Template.Spec
	c := p.Containers[0]
	switch {
	case !c.VolumeMounts[0].ReadOnly || c.VolumeMounts[0].MountPath != "/host":
		t.Fatal("check mode must mount the host read-only at /host")
	case *c.SecurityContext.Privileged || *c.SecurityContext.AllowPrivilegeEscalation:
		t.Fatal("check mode must not be privileged")
	case p.NodeName != "gpu-1" || !p.HostPID || !p.HostNetwork || p.Tolerations[0].Operator != corev1.TolerationOpExists:
		t.Fatal("pinning, host namespaces, tolerations")
	case *check.Spec.BackoffLimit != 0 || *check.Spec.TTLSecondsAfterFinished <= 0 || *check.Spec.ActiveDeadlineSeconds != 120:
		t.Fatal("backoff, TTL, deadline")
	case strings.Join(c.Args, " ") != "check":
		t.Fatalf("args %v (--restart-runtime only in apply mode)", c.Args)
	case check.Labels["app.kubernetes.io/managed-by"] != "kubectl-gpu" || check.Spec.Template.Labels["gpu.kubectl-gpu.io/run"] != "abcde":
		t.Fatal("labels")
	}
	apply := Job(cfg, "gpu-1", rep.ModeApply, nodepod.Labels(Component, "abcde", "gpu-1"))
	ac := apply.Spec.Template.Spec.Containers[0]
	if ac.VolumeMounts[0].ReadOnly || !*ac.SecurityContext.Privileged || strings.Join(ac.Args, " ") != "apply --restart-runtime" {
		t.Fatalf("apply job: %+v %v", ac.SecurityContext, ac.Args)
	}
	// Only an apply that installs packages keeps its pod while the package manager finishes
	// (a Ctrl-C, the deadline): the others stop at Kubernetes' default grace.
	if g := apply.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil || p.TerminationGracePeriodSeconds != nil {
		t.Errorf("a grace period without a package install: %v", g)
	}
	install := *cfg
	install.Install.ToolkitVersion = "1.17.8"
	if g := Job(&install, "gpu-1", rep.ModeApply, nil).Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g != int64(pkginstall.InstallGrace.Seconds()) {
		t.Errorf("an apply that installs packages: grace %v, want %v", g, pkginstall.InstallGrace)
	}
	if g := Job(&install, "gpu-1", rep.ModePlan, nil).Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		t.Errorf("a plan (the package manager's dry run): grace %v, want the default", g)
	}
	if n := JobName(strings.Repeat("x", 250), "abcde"); len(n) > 63 {
		t.Fatalf("job name %q too long", n)
	}
}

func TestChooseNodes(t *testing.T) {
	var objs []runtime.Object
	for _, s := range nodefixtures.DefaultNodes {
		for i := 0; i < s.Count; i++ {
			objs = append(objs, nodefixtures.NodeObject(s.Prefix+"-"+string(rune('0'+i)), nodefixtures.Profiles[s.Profile]))
		}
	}
	cs := fake.NewClientset(objs...)
	ctx := context.Background()
	for _, tc := range []struct {
		cfg  Request
		want string
		code int
	}{
		{Request{}, "gpu-a100-0 gpu-a100-1 gpu-bare-0 gpu-k3s-0 gpu-rke2-0", 0},
		{Request{All: true}, "cpu-0 gpu-a100-0 gpu-a100-1 gpu-bare-0 gpu-k3s-0 gpu-rke2-0", 0},
		{Request{Names: []string{"cpu-0"}}, "cpu-0", 0},
		{Request{Selector: "nvidia.com/gpu.product=Tesla-T4"}, "gpu-k3s-0", 0},
		{Request{Selector: "pool=none"}, "", cliexit.Usage},
		{Request{Names: []string{"nope"}}, "", cliexit.Usage},
	} {
		got, err := ChooseNodes(ctx, cs, &tc.cfg)
		if cliexit.Code(err, false) != tc.code || strings.Join(got, " ") != tc.want {
			t.Errorf("%+v: %v %v, want %q code %d", tc.cfg, got, err, tc.want, tc.code)
		}
	}
	none := fake.NewClientset(nodefixtures.NodeObject("cpu-0", nodefixtures.Profiles["cpu"]))
	if _, err := ChooseNodes(ctx, none, &Request{}); err == nil || !strings.Contains(err.Error(), "name the nodes, or pass -l SELECTOR or --all") {
		t.Fatalf("no GPU nodes: %v", err)
	}
}

func TestPodProblem(t *testing.T) {
	pod := func(reason, msg string) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "agent",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}}}}
	}
	msg, hint, bad := podProblem(pod("ErrImagePull", `failed to pull image "registry.example/agent:v1": not found`), "registry.example/agent:v1")
	if !bad || !strings.Contains(msg, "image registry.example/agent:v1 cannot be pulled: failed to pull") || !strings.Contains(hint, "--image") {
		t.Fatalf("image pull: %q %q %v", msg, hint, bad)
	}
	if _, _, bad := podProblem(pod("ContainerCreating", ""), "x"); bad {
		t.Fatal("a starting container is not a problem")
	}
}

func TestSummaryFailed(t *testing.T) {
	for _, tc := range []struct {
		s    Summary
		want bool
	}{
		{Summary{Nodes: 2, Ready: 2}, false},
		{Summary{Nodes: 2, Ready: 1, NotReady: 1, NoGPU: 1}, false},
		{Summary{Nodes: 2, Ready: 0, NotReady: 2, NoGPU: 1}, true},
		{Summary{Nodes: 1, NotReady: 1, NoGPU: 1}, true},
	} {
		if got := tc.s.Failed(); got != tc.want {
			t.Errorf("%+v: Failed() = %v", tc.s, got)
		}
	}
}

// TestRefuseRoll: a control-plane node, or the node this command runs on, is rolled only
// when named.
func TestRefuseRoll(t *testing.T) {
	cp := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cp-0", Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}}}
	w := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-0"}}
	nodes := map[string]*corev1.Node{"cp-0": cp, "gpu-0": w}
	for _, tc := range []struct {
		named []string
		self  string
		want  string
	}{
		{nil, "", "cp-0 is a control-plane node"},
		{[]string{"cp-0", "gpu-0"}, "", ""},
		{[]string{"cp-0"}, "gpu-0", "gpu-0 runs this command's own pod"},
		{[]string{"cp-0", "gpu-0"}, "gpu-0", ""},
	} {
		cfg := &Request{Names: tc.named, Roll: &RollOptions{SelfNode: tc.self}}
		err := refuseRoll(cfg, []string{"cp-0", "gpu-0"}, nodes)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("named %v, self %q: %v, want %q", tc.named, tc.self, err, tc.want)
		}
	}
}
