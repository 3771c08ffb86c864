package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/kubectl-gpu/kubectl-gpu/common/doctor"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

// TestDoctorAgent: doctor runs the node agent (the real agent's code on a fake host root,
// served as the pod's log by kwok) on a GPU node whose kernel log holds an XID 48 and whose
// containerd config lost the import of the toolkit's drop-in: the hardware link warns with
// the XID classed by NVIDIA's catalog (reset the GPU), the containerd link names the drop-in;
// no Job is left and no node changed.
func TestDoctorAgent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	agent, root := simHost(t, "gpu-a100-0", "ubuntu2404-containerd2", 2)
	kern := "Dec  6 08:00:00 gpu-a100-0 kernel: [    0.000000] Linux version 6.8.0-51-generic (buildd@lcy02-amd64-080) #52-Ubuntu SMP\n" +
		"Dec  6 09:40:00 gpu-a100-0 kernel: [ 6000.2] NVRM: Xid (PCI:0000:08:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.\n"
	dropIn := "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nvidia]\n  runtime_type = \"io.containerd.runc.v2\"\n  [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nvidia.options]\n    BinaryName = \"/usr/bin/nvidia-container-runtime\"\n"
	cfg, err := os.ReadFile(filepath.Join(root, "etc/containerd/config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for p, c := range map[string]string{"var/log/kern.log": kern, "etc/containerd/conf.d/99-nvidia.toml": dropIn,
		"etc/containerd/config.toml": strings.Replace(string(cfg), `imports = ["/etc/containerd/conf.d/*.toml"]`, "", 1)} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outs := &agentOutputs{out: map[string]string{}}
	outs.set("gpu-a100-0", "check", runAgent(t, agent, root, "gpu-a100-0", "check"))
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	serveAgentLogs(t, sctx, outs)
	before, err := env.Cluster.Client.CoreV1().Nodes().Get(ctx, "gpu-a100-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	r := env.Gpu(ctx, "doctor", "gpu-a100-0", "-o", "json", "--timeout", "1m")
	var rep doctor.Report
	if err := json.Unmarshal([]byte(r.Stdout), &rep); r.Code != 1 || err != nil || len(rep.Items) != 1 {
		t.Fatalf("doctor gpu-a100-0: exit %d %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
	}
	n := rep.Items[0]
	if n.Host != doctor.HostAgent || len(n.XIDs) != 1 || n.XIDs[0].XID != 48 || n.FirstBroken != doctor.LinkHardware || n.Remedy != remedy.ResetGPU ||
		n.Links[0].State != doctor.Warn || !strings.Contains(n.Links[0].Detail, "XID 48 on 0000:08:00: double-bit ECC error") {
		t.Errorf("hardware: %+v", n)
	}
	if l := n.Links[3]; l.State != doctor.Broken || !strings.Contains(l.Detail, "/etc/containerd/conf.d/99-nvidia.toml has it, but /etc/containerd/config.toml does not import it") {
		t.Errorf("containerd: %+v", l)
	}
	noPrepJobs(t)
	after, err := env.Cluster.Client.CoreV1().Nodes().Get(ctx, "gpu-a100-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before.Annotations, after.Annotations) || !reflect.DeepEqual(before.Labels, after.Labels) || before.Spec.Unschedulable != after.Spec.Unschedulable {
		t.Errorf("doctor changed the node:\nbefore %v %v\nafter  %v %v", before.Annotations, before.Labels, after.Annotations, after.Labels)
	}
}

// TestDoctor: doctor on the local cluster's GPU nodes (kwok: their GPUs are the fixtures'
// extended resources, no device plugin pod runs) — the node without GPUs advertised is
// Unschedulable with its kubernetes link broken, the others serve GPUs with no NVIDIA plugin
// pod seen (Degraded); then as a ServiceAccount bound to exactly docs/rbac/doctor.yaml the
// same report, and with any one rule removed exit 2 and one line naming the permission.
func TestDoctor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := env.Gpu(ctx, "doctor", "--no-agent", "-o", "json")
	var rep doctor.Report
	if err := json.Unmarshal([]byte(r.Stdout), &rep); r.Code != 1 || err != nil {
		t.Fatalf("doctor: exit %d %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
	}
	verdicts := map[string]doctor.Verdict{}
	for _, n := range rep.Items {
		verdicts[n.Node] = n.Verdict
	}
	if verdicts["gpu-bare-0"] != doctor.Unschedulable || verdicts["gpu-a100-0"] != doctor.Degraded || len(rep.Items) != 5 {
		t.Fatalf("verdicts %v\n%s", verdicts, r.Stdout)
	}
	for _, n := range rep.Items {
		// Never checked by prep and serving no GPU: the first link not known is the first to
		// look at, with prep as its fix.
		if n.Node == "gpu-bare-0" && (n.FirstBroken != doctor.LinkHardware || n.Fix != "kubectl gpu prep gpu-bare-0" || n.Links[5].State != doctor.Broken) {
			t.Errorf("gpu-bare-0: %+v", n)
		}
	}

	cs := env.Cluster.Client

	// A device plugin pod on gpu-a100-1 whose log (served by kwok) says it marked a GPU
	// unhealthy after XID 79, on a node where prep found 9 GPUs on the bus and 8 are
	// advertised: the hardware link is broken and the kubernetes link names the XID.
	plugin := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-device-plugin-xid", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: "gpu-a100-1", Containers: []corev1.Container{{Name: "nvidia-device-plugin-ctr", Image: "nvcr.io/nvidia/k8s-device-plugin:v0.20.0", Command: []string{"nvidia-device-plugin"}}}}}
	if err := env.Cluster.SetPodLog(ctx, "default", plugin.Name, "nvidia-device-plugin-ctr",
		"I1206 09:14:02.123456       1 health.go:159] XidCriticalError: Xid=79 on Device=GPU-2b7a1c3e; marking device as unhealthy."); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, plugin, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	patch := `{"metadata":{"annotations":{"` + nodereport.AnnotationGPUs + `":"9"}}}`
	if _, err := cs.CoreV1().Nodes().Patch(ctx, "gpu-a100-1", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Pods("default").Delete(context.Background(), plugin.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		_, _ = cs.CoreV1().Nodes().Patch(context.Background(), "gpu-a100-1", types.MergePatchType, []byte(`{"metadata":{"annotations":{"`+nodereport.AnnotationGPUs+`":null}}}`), metav1.PatchOptions{})
	})
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, plugin.Name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the plugin pod never ran: %v", err)
		}
	}
	r = env.Gpu(ctx, "doctor", "gpu-a100-1", "--no-agent", "-o", "json")
	rep = doctor.Report{}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); r.Code != 1 || err != nil || len(rep.Items) != 1 {
		t.Fatalf("doctor gpu-a100-1: exit %d %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
	}
	if n := rep.Items[0]; n.Verdict != doctor.Faulty || n.FirstBroken != doctor.LinkHardware || n.Links[4].State != doctor.OK ||
		!strings.Contains(n.Links[5].Detail, "the device plugin logged XID 79 on GPU-2b7a1c3e: GPU has fallen off the bus") || n.Links[5].Remedy != remedy.Service {
		t.Errorf("gpu-a100-1: %+v", n)
	}
	// A GPU pod Pending for gpu-a100-0 (more GPUs than it has): the real scheduler's reason on
	// the node's kubernetes link.
	pending := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "train-too-big", Namespace: "default"},
		Spec: corev1.PodSpec{NodeSelector: map[string]string{"kubernetes.io/hostname": "gpu-a100-0"},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{Name: "c", Image: "registry.local/train:1",
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("64")}}}}}}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pending, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Pods("default").Delete(context.Background(), pending.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	})
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(300 * time.Millisecond) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, pending.Name, metav1.GetOptions{})
		if err == nil && len(p.Status.Conditions) > 0 && p.Status.Conditions[0].Reason == corev1.PodReasonUnschedulable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scheduler never refused the pod: %v", err)
		}
	}
	r = env.Gpu(ctx, "doctor", "gpu-a100-0", "--no-agent", "-o", "json")
	rep = doctor.Report{}
	if err := json.Unmarshal([]byte(r.Stdout), &rep); r.Code != 1 || err != nil || len(rep.Items) != 1 {
		t.Fatalf("doctor gpu-a100-0: exit %d %v\n%s%s", r.Code, err, r.Stdout, r.Stderr)
	}
	if k := rep.Items[0].Links[5]; k.State != doctor.Warn || !strings.Contains(k.Detail, "1 GPU pods Pending for this node, default/train-too-big") || !strings.Contains(k.Detail, "Insufficient nvidia.com/gpu") {
		t.Errorf("the Pending pod: %+v", k)
	}
	_ = cs.CoreV1().Pods("default").Delete(ctx, pending.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})

	r = env.Gpu(ctx, "doctor", "--no-agent", "-o", "json") // the report the least-privilege runs compare with

	u := harness.BindDocRole(t, ctx, env.Cluster, "doctor")
	role, kubeconfig, user := u.Role, u.Kubeconfig, u.User
	as := []string{"KUBECONFIG=" + kubeconfig}
	harness.SetRole(t, ctx, cs, role.Name, role.Rules, user)
	// The same verdicts (without the optional pods/log the XID is not named).
	verdictsOf := func(out string) string {
		var rep doctor.Report
		_ = json.Unmarshal([]byte(out), &rep)
		var v []string
		for _, n := range rep.Items {
			v = append(v, n.Node+"="+string(n.Verdict)+"/"+n.FirstBroken)
		}
		return strings.Join(v, " ")
	}
	if got := env.Kubectl(ctx, as, "gpu", "doctor", "--no-agent", "-o", "json"); got.Code != 1 || verdictsOf(got.Stdout) != verdictsOf(r.Stdout) || verdictsOf(r.Stdout) == "" {
		t.Fatalf("with the whole role: exit %d\n%s%s\nwant the verdicts %s", got.Code, got.Stdout, got.Stderr, verdictsOf(r.Stdout))
	}
	// With the node agent (the default) this role is not enough: one line saying what the
	// agent needs and that --no-agent does without it, nothing on stdout.
	if got := env.Kubectl(ctx, as, "gpu", "doctor", "-o", "json"); got.Code != 2 || got.Stdout != "" || strings.Count(strings.TrimSpace(got.Stderr), "\n") != 0 ||
		!strings.Contains(got.Stderr, "forbidden by RBAC") || !strings.Contains(got.Stderr, "doctor-agent.yaml") || !strings.Contains(got.Stderr, "--no-agent") {
		t.Errorf("the agent without its role: exit %d\nstdout: %s\nstderr: %s", got.Code, got.Stdout, got.Stderr)
	}
	for i, rule := range role.Rules {
		rest := append(append([]rbacv1.PolicyRule(nil), role.Rules[:i]...), role.Rules[i+1:]...)
		harness.SetRole(t, ctx, cs, role.Name, rest, user)
		harness.WaitAccess(t, ctx, cs, user, rule, false)
		got := env.Kubectl(ctx, as, "gpu", "doctor", "--no-agent", "-o", "json")
		lines := strings.Split(strings.TrimSpace(got.Stderr), "\n")
		if res := rule.Resources[0]; got.Code != 2 || got.Stdout != "" || len(lines) != 1 || !strings.Contains(lines[0], "forbidden by RBAC") || !strings.Contains(lines[0], res) {
			t.Errorf("without %v on %s: exit %d, want 2 and one line naming %q\nstdout: %s\nstderr: %s", rule.Verbs, res, got.Code, res, got.Stdout, got.Stderr)
		}
	}
}
