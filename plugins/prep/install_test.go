package prep

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

// installPlan is what the agent's plan says on a Debian host for --install-toolkit=1.17.8
// (the shape the package tests get from the real apt-get: common/hostconfig).
func installPlan(node string) *rep.Report {
	r := rep.New("v0.0.0-test", rep.ModePlan)
	r.Node, r.OS, r.Kernel, r.Flavour = node, "Debian GNU/Linux 12 (bookworm)", "6.1.0-28-amd64", rep.FlavourKubeadm
	r.GPUs = []rep.GPU{{PCIAddress: "0000:07:00.0", DeviceID: "0x20b0"}}
	r.Add(rep.CheckPCI, rep.OK, "1 NVIDIA GPU", "")
	r.Add(rep.CheckToolkit, rep.Warn, "NVIDIA Container Toolkit not installed on the host", "")
	r.Changes = []rep.Change{
		{Check: rep.CheckToolkit, File: "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg", Note: "NVIDIA Container Toolkit repository signing key C95B321B61E88C1809C4F759DDCAE044F796ECB0 (binary keyring, as gpg --dearmor writes it)"},
		{Check: rep.CheckToolkit, File: "/etc/apt/sources.list.d/nvidia-container-toolkit.list",
			Diff: "--- /etc/apt/sources.list.d/nvidia-container-toolkit.list\n+++ /etc/apt/sources.list.d/nvidia-container-toolkit.list\n@@ -0,0 +1,2 @@\n+# NVIDIA Container Toolkit (kubectl gpu prep)\n+deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://mirror.example/nvidia/libnvidia-container/stable/deb/$(ARCH) /\n"},
		{Check: rep.CheckToolkit, Note: "install NVIDIA Container Toolkit 1.17.8", Packages: []rep.Package{
			{Name: "libnvidia-container-tools", Version: "1.17.8-1"}, {Name: "libnvidia-container1", Version: "1.17.8-1"},
			{Name: "nvidia-container-toolkit", Version: "1.17.8-1"}, {Name: "nvidia-container-toolkit-base", Version: "1.17.8-1"}}},
	}
	return r
}

func installCluster(t *testing.T, plan func(node string) *rep.Report) *clustertest.Getter {
	t.Helper()
	g := clustertest.New(nodefixtures.DemoObjects(nodepod.DefaultNamespace)...)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	err := g.RunNodes(ctx, nodepod.DefaultNamespace, func(p *corev1.Pod) clustertest.Outcome {
		r := plan(p.Spec.NodeName)
		r.Mode = rep.Mode(p.Spec.Containers[0].Args[0])
		if r.Mode != rep.ModePlan {
			r.Changes = nil
		}
		b, _ := json.Marshal(r)
		return clustertest.Outcome{Phase: corev1.PodSucceeded, Log: string(b) + "\n"}
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func jobsCreated(g *clustertest.Getter) []*batchv1.Job {
	var out []*batchv1.Job
	for _, a := range g.Client.Actions() {
		if c, ok := a.(k8stesting.CreateAction); ok && a.GetResource().Resource == "jobs" {
			out = append(out, c.GetObject().(*batchv1.Job))
		}
	}
	return out
}

// TestPrepInstallPlan: the plan shows the repository file, the keyring and the packages the
// host's package manager resolved, before anything is installed; the agent gets the
// version, the mirror and the key, and its plan pod may ask the host's package manager.
func TestPrepInstallPlan(t *testing.T) {
	g := installCluster(t, installPlan)
	key := filepath.Join(t.TempDir(), "mirror.asc")
	repo, err := hostconfigtest.NewAptRepo(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	if err := os.WriteFile(key, repo.PublicKey(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := run(t, g, "", "gpu-a100-0", "--apply", "--install-toolkit=1.17.8", "--package-repo", "https://mirror.example/nvidia", "--package-key", key)
	if cliexit.Code(err, false) != cliexit.Usage || !strings.Contains(err.Error(), "pass --yes") || out != "" {
		t.Fatalf("exit %d %v, stdout %q", cliexit.Code(err, false), err, out)
	}
	golden.Assert(t, "prep.install.plan.golden", []byte(errOut))
	jobs := jobsCreated(g)
	if len(jobs) != 1 {
		t.Fatalf("%d Jobs, want the plan's only", len(jobs))
	}
	c := jobs[0].Spec.Template.Spec.Containers[0]
	if got := strings.Join(c.Args, " "); !strings.Contains(got, "plan --install-toolkit 1.17.8 --package-repo https://mirror.example/nvidia") {
		t.Errorf("agent args %q", got)
	}
	var hasKey bool
	for _, e := range c.Env {
		hasKey = hasKey || e.Name == "AGENT_PACKAGE_KEY" && e.Value != ""
	}
	if !hasKey || !*c.SecurityContext.Privileged || jobs[0].Spec.Template.Spec.Containers[0].VolumeMounts[0].ReadOnly {
		t.Errorf("plan pod: key passed %v, privileged %v, host read-only %v; want the key, privileged and writable (the dry run's private apt state)",
			hasKey, *c.SecurityContext.Privileged, c.VolumeMounts[0].ReadOnly)
	}
}

// TestPrepInstallRefusals: an unsupported OS (exit 2), a branch the repository lacks (exit
// 1, no apply anywhere), a node whose driver the GPU Operator runs (exit 2, no Job at all).
func TestPrepInstallRefusals(t *testing.T) {
	failing := func(msg string) func(string) *rep.Report {
		return func(node string) *rep.Report {
			r := installPlan(node)
			if node == "gpu-a100-1" {
				r.Changes, r.Error = nil, msg
			}
			return r
		}
	}
	g := installCluster(t, failing("Arch Linux is not supported for package installs (supported: Ubuntu 20.04/22.04/24.04, Debian 11/12 (apt), RHEL-compatible 8/9 (dnf))"))
	_, _, err := run(t, g, "", "gpu-a100-0", "gpu-a100-1", "--apply", "--yes", "--install-toolkit")
	if cliexit.Code(err, false) != cliexit.Usage || !strings.Contains(err.Error(), "node gpu-a100-1: Arch Linux is not supported") || !strings.Contains(err.Error(), "supported: Ubuntu") {
		t.Errorf("unsupported OS: exit %d %v", cliexit.Code(err, false), err)
	}
	for _, j := range jobsCreated(g) {
		if j.Spec.Template.Spec.Containers[0].Args[0] != "plan" {
			t.Errorf("%s Job created after the refusal", j.Spec.Template.Spec.Containers[0].Args[0])
		}
	}

	g = installCluster(t, failing("NVIDIA driver 999 (NVIDIA's CUDA repository, DKMS): E: Unable to locate package cuda-drivers-999"))
	out, _, err := run(t, g, "", "gpu-a100-0", "gpu-a100-1", "--apply", "--yes", "--install-driver=999")
	if cliexit.Code(err, false) != cliexit.Failures || !strings.Contains(err.Error(), "nothing was installed on any node") || !strings.Contains(out, "cuda-drivers-999") {
		t.Errorf("unknown branch: exit %d %v\n%s", cliexit.Code(err, false), err, out)
	}
	for _, j := range jobsCreated(g) {
		if j.Spec.Template.Spec.Containers[0].Args[0] != "plan" {
			t.Errorf("%s Job created after a failed plan", j.Spec.Template.Spec.Containers[0].Args[0])
		}
	}

	driverPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nvidia-driver-daemonset-x7k2p", Namespace: "gpu-operator", Labels: map[string]string{"app": "nvidia-driver-daemonset"}},
		Spec: corev1.PodSpec{NodeName: "gpu-a100-1"}}
	g = installCluster(t, installPlan)
	if _, err := g.Client.CoreV1().Pods("gpu-operator").Create(context.Background(), driverPod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, _, err = run(t, g, "", "gpu-a100-0", "gpu-a100-1", "--apply", "--yes", "--install-driver")
	if cliexit.Code(err, false) != cliexit.Usage || !strings.Contains(err.Error(), "gpu-operator/nvidia-driver-daemonset-x7k2p") || !strings.Contains(err.Error(), "nvidia.com/gpu.deploy.driver=false") {
		t.Errorf("operator-managed driver: exit %d %v", cliexit.Code(err, false), err)
	}
	if n := len(jobsCreated(g)); n != 0 {
		t.Errorf("%d Jobs created for a refused run", n)
	}
}
