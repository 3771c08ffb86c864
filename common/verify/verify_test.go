package verify

import (
	"bytes"
	"context"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

func demoNodes(extra ...runtime.Object) *fake.Clientset {
	var objs []runtime.Object
	for _, s := range nodefixtures.DefaultNodes {
		for i := 0; i < s.Count; i++ {
			objs = append(objs, nodefixtures.NodeObject(s.Prefix+"-"+string(rune('0'+i)), nodefixtures.Profiles[s.Profile]))
		}
	}
	return fake.NewClientset(append(objs, extra...)...)
}

func TestPrepare(t *testing.T) {
	ctx := context.Background()
	rc := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: "nvidia"}, Handler: "nvidia"}
	tests := []struct {
		name    string
		cs      *fake.Clientset
		cfg     Request
		code    int
		err     string
		targets string
		rc      string
	}{
		{"GPU nodes, auto without RuntimeClass", demoNodes(), Request{RuntimeClass: RuntimeAuto}, 0, "", "gpu-a100-0:1 gpu-a100-1:1 gpu-k3s-0:1 gpu-rke2-0:1", ""},
		{"auto with RuntimeClass nvidia", demoNodes(rc), Request{RuntimeClass: RuntimeAuto}, 0, "", "gpu-a100-0:1 gpu-a100-1:1 gpu-k3s-0:1 gpu-rke2-0:1", "nvidia"},
		{"none", demoNodes(rc), Request{RuntimeClass: RuntimeNone}, 0, "", "gpu-a100-0:1 gpu-a100-1:1 gpu-k3s-0:1 gpu-rke2-0:1", ""},
		{"all GPUs", demoNodes(), Request{Names: []string{"gpu-a100-0", "gpu-rke2-0"}}, 0, "", "gpu-a100-0:8 gpu-rke2-0:4", ""},
		{"selector", demoNodes(), Request{Selector: "nvidia.com/gpu.product=Tesla-T4", GPUs: 1}, 0, "", "gpu-k3s-0:1", ""},
		{"more GPUs than a node has", demoNodes(), Request{GPUs: 2}, cliexit.Usage, "--gpus 2 is more than the node has (gpu-k3s-0 has 1 nvidia.com/gpu)", "", ""},
		{"named node without GPUs", demoNodes(), Request{Names: []string{"cpu-0"}}, cliexit.Usage, `node "cpu-0" has no allocatable nvidia.com/gpu`, "", ""},
		{"unknown node", demoNodes(), Request{Names: []string{"nope"}}, cliexit.Usage, `node "nope" not found`, "", ""},
		{"unknown RuntimeClass", demoNodes(), Request{RuntimeClass: "kata"}, cliexit.Usage, `RuntimeClass "kata" does not exist`, "", ""},
		{"no GPU node", fake.NewClientset(nodefixtures.NodeObject("cpu-0", nodefixtures.Profiles["cpu"])), Request{}, cliexit.Failures, "no GPU node found", "", ""},
		{"MIG resource", func() *fake.Clientset {
			return fake.NewClientset(nodefixtures.NodeObject("mig-0", nodefixtures.Profiles["mig"]))
		}(), Request{Resource: "nvidia.com/mig-1g.10gb", GPUs: 2}, 0, "", "mig-0:2", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if cfg.GPUs == 0 && len(cfg.Names) == 0 {
				cfg.GPUs = 1 // the command's default; 0 means "all"
			}
			p, err := Prepare(ctx, tt.cs, &cfg)
			if tt.code != 0 {
				if cliexit.Code(err, false) != tt.code || err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v (code %d), want code %d with %q", err, cliexit.Code(err, false), tt.code, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tg := range p.Targets {
				got = append(got, tg.node+":"+itoa(tg.gpus))
			}
			if strings.Join(got, " ") != tt.targets || p.RuntimeClass != tt.rc {
				t.Fatalf("targets %v rc %q, want %q rc %q", got, p.RuntimeClass, tt.targets, tt.rc)
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestPodIsUnprivilegedAndPinned(t *testing.T) {
	cfg := &Request{Namespace: "kubectl-gpu", Image: DefaultImage, Resource: "nvidia.com/gpu", Timeout: 2 * time.Minute}
	p := Pod(cfg, "nvidia", target{node: "gpu-1", gpus: 2, pod: PodName("gpu-1")}, nodepod.Labels(Component, "run1", "gpu-1"))
	c := p.Spec.Containers[0]
	switch {
	case p.Spec.HostNetwork || p.Spec.HostPID || p.Spec.HostIPC:
		t.Fatal("host namespaces")
	case len(p.Spec.Volumes) != 0:
		t.Fatal("volumes")
	case *c.SecurityContext.Privileged || *c.SecurityContext.AllowPrivilegeEscalation || !*c.SecurityContext.ReadOnlyRootFilesystem:
		t.Fatal("container security context")
	case c.Resources.Limits.Name("nvidia.com/gpu", "").Value() != 2:
		t.Fatal("GPU limit")
	case *p.Spec.RuntimeClassName != "nvidia" || p.Spec.RestartPolicy != corev1.RestartPolicyNever || *p.Spec.ActiveDeadlineSeconds != 120:
		t.Fatal("runtime class, restart policy or deadline")
	case p.Spec.NodeName != "":
		t.Fatal("nodeName would bypass the scheduler and its explanation")
	case p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchFields[0].Values[0] != "gpu-1":
		t.Fatal("node affinity")
	case len(p.Spec.Tolerations) != 1 || p.Spec.Tolerations[0].Key != "nvidia.com/gpu":
		t.Fatal("tolerations: only the GPU taint by default")
	case p.Labels["app.kubernetes.io/managed-by"] != "kubectl-gpu":
		t.Fatal("managed-by label")
	}
	cfg.Cordoned = true
	if p := Pod(cfg, "", target{node: "gpu-1", gpus: 1, pod: "x"}, nil); len(p.Spec.Tolerations) != 2 || p.Spec.Tolerations[1].Key != corev1.TaintNodeUnschedulable {
		t.Fatalf("a pod that proves a cordoned node tolerates the cordon: %+v", p.Spec.Tolerations)
	}
	cfg.TolerateAll = true
	if p := Pod(cfg, "", target{node: "gpu-1", gpus: 1, pod: "x"}, nil); p.Spec.Tolerations[0].Key != "" || p.Spec.RuntimeClassName != nil {
		t.Fatal("--tolerate-all and no RuntimeClass")
	}
	long := strings.Repeat("n", 300)
	if n := PodName(long); len(n) > 63 || n != PodName(long) {
		t.Fatalf("pod name %q", n)
	}
}

func sampleReport() *Report {
	return &Report{TypeMeta: report.Meta(Kind), Image: DefaultImage, RuntimeClass: "nvidia", Namespace: "kubectl-gpu",
		Items: []NodeResult{
			{Node: "gpu-a100-0", GPUs: 1, Result: Passed, Detail: PassMarker, DurationSeconds: 4.2, Pod: "gpu-verify-gpu-a100-0"},
			{Node: "gpu-a100-1", GPUs: 1, Result: Failed, Reason: ReasonCUDAError, Detail: "CUDA error: no CUDA-capable device is detected", Hint: "check the driver", DurationSeconds: 3.1, Pod: "gpu-verify-gpu-a100-1"},
			{Node: "gpu-k3s-0", GPUs: 1, Result: Failed, Reason: ReasonUnschedulable, Detail: "unschedulable: 0/6 nodes are available: 1 Insufficient nvidia.com/gpu", Hint: "free GPUs", DurationSeconds: 0.1, Pod: "gpu-verify-gpu-k3s-0"},
		},
		Summary: Summary{Nodes: 3, Passed: 1, Failed: 2}}
}

func TestOutputGolden(t *testing.T) {
	r := sampleReport()
	for _, f := range []report.Format{report.Table, report.Wide, report.JSON, report.YAML} {
		var b bytes.Buffer
		if err := report.Print(&b, f, r); err != nil {
			t.Fatal(err)
		}
		if f == report.Table {
			r.WriteSummary(&b)
		}
		golden.Assert(t, "report."+string(f)+".golden", b.Bytes())
	}
	var b bytes.Buffer
	if err := r.WriteJUnit(&b); err != nil {
		t.Fatal(err)
	}
	golden.Assert(t, "report.junit.golden", b.Bytes())
}

// TestFailureLines: only a node that did not pass gets a line of its own.
func TestFailureLines(t *testing.T) {
	if l := failureLine("gpu-1", Verdict{Result: Passed}); l != "" {
		t.Errorf("a passed node has a line: %q", l)
	}
	if l, want := failureLine("gpu-2", Verdict{Result: Failed, Detail: "CUDA error: x"}), "gpu-2: Failed: CUDA error: x"; l != want {
		t.Errorf("failure line %q, want %q", l, want)
	}
}

// TestPrepareLeavesTheRequest: defaults are the request's Default, never written into the
// caller's value.
func TestPrepareLeavesTheRequest(t *testing.T) {
	req := &Request{Namespace: "ns", Names: []string{"none"}}
	before := *req
	_, _ = Prepare(context.Background(), fake.NewSimpleClientset(), req)
	if !reflect.DeepEqual(*req, before) {
		t.Errorf("Prepare changed the request: %+v, was %+v", *req, before)
	}
	if d := req.Default(); d.Resource == "" || d.Parallel == 0 || d.Timeout == 0 {
		t.Errorf("defaults: %+v", d)
	}
}
