package prep_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/simnodes"
)

// Example: a program runs the runbook without the command line — prep's check, the
// operator's install with values derived from what prep found, and verify on every GPU
// node — each operation one request to its library entry point. Here the cluster is
// client-go's fake clientset whose simulated kubelet answers the agent's Job with a ready
// host and the CUDA sample with its pass, and Helm stores the release in memory.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node := nodefixtures.NodeObject("gpu-0", nodefixtures.Profiles["a100"])
	// The namespace's default service account, as the service account controller makes it.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: nodepod.DefaultNamespace}}
	cluster := clustertest.New(node, sa)
	_ = cluster.RunNodes(ctx, nodepod.DefaultNamespace, func(p *corev1.Pod) clustertest.Outcome {
		if p.Labels[nodepod.LabelComponent] == prep.Component {
			r := rep.New("v0.0.0-example", rep.Mode(p.Spec.Containers[0].Args[0]))
			r.Node, r.Flavour, r.DriverVersion, r.ToolkitVersion, r.NvidiaRuntime = p.Spec.NodeName, rep.FlavourKubeadm, "580.95.05", "1.17.8-1", true
			r.GPUs = []rep.GPU{{PCIAddress: "0000:07:00.0", DeviceID: "0x20b0"}}
			r.Add(rep.CheckPCI, rep.OK, "1 NVIDIA GPU", "")
			b, _ := json.Marshal(r)
			return clustertest.Outcome{Phase: corev1.PodSucceeded, Log: string(b) + "\n"}
		}
		return clustertest.Outcome{Phase: corev1.PodSucceeded, Log: simnodes.VectorAddPassLog}
	})
	cs, _ := cluster.Clientset()

	// 1. prep: check the GPU nodes (and leave what it found on them as annotations).
	checked, err := prep.Run(ctx, cs, &prep.Request{Namespace: nodepod.DefaultNamespace, Image: "gpu-node-agent:v1", Timeout: time.Minute})
	if err != nil {
		fmt.Println("prep:", err)
		return
	}
	fmt.Printf("prep: %d of %d nodes ready\n", checked.Summary.Ready, checked.Summary.Nodes)

	// 2. operator: values derived from the nodes (the host driver prep found turns the
	// operator's driver off), then the install.
	helm := &action.Configuration{Releases: storage.Init(driver.NewMemory()), KubeClient: &kubefake.PrintingKubeClient{Out: io.Discard},
		Capabilities: chartutil.DefaultCapabilities, Log: func(string, ...any) {}}
	op := &operator.Client{Client: &helmrelease.Client{Namespace: "gpu-operator", Helm: &helmrelease.Helm{Config: helm, Settings: cli.New(), Namespace: "gpu-operator"}, CS: cs, Log: io.Discard}}
	chart := exampleChart()
	defer os.RemoveAll(chart)
	ch, values, err := op.Values(ctx, operator.ValuesRequest{Source: helmrelease.ChartSource{Chart: chart}, Derive: true})
	if err != nil {
		fmt.Println("operator values:", err)
		return
	}
	for _, d := range values.Derived {
		fmt.Printf("operator: %s=%v (%s)\n", d.Key, d.Value, d.Reason)
	}
	rel, err := op.Install(ctx, ch, values, helmrelease.InstallRequest{ReleaseName: "gpu-operator"})
	if err != nil {
		fmt.Println("operator install:", err)
		return
	}
	fmt.Printf("operator: release %s revision %d %s\n", rel.Name, rel.Version, rel.Info.Status)

	// 3. verify: the CUDA sample on every GPU node.
	req := &verify.Request{Namespace: nodepod.DefaultNamespace, Image: "cuda-sample:vectoradd", Timeout: time.Minute}
	plan, err := verify.Prepare(ctx, cs, req)
	if err != nil {
		fmt.Println("verify:", err)
		return
	}
	verified, err := verify.Run(ctx, cs, req, plan)
	if err != nil {
		fmt.Println("verify:", err)
		return
	}
	fmt.Printf("verify: %d of %d nodes passed\n", verified.Summary.Passed, verified.Summary.Nodes)
	// Output:
	// prep: 1 of 1 nodes ready
	// operator: driver.enabled=false (every GPU node (1) runs a host driver (gpu-0 580.95.05))
	// operator: toolkit.enabled=false (every GPU node (1) has the NVIDIA Container Toolkit and the nvidia runtime in containerd (found by kubectl gpu prep))
	// operator: release gpu-operator revision 1 deployed
	// verify: 1 of 1 nodes passed
}

// exampleChart writes a stand-in of the GPU Operator chart (its name and the keys the
// derived values set), so the example needs no chart repository.
func exampleChart() string {
	dir, _ := os.MkdirTemp("", "example-chart-")
	_ = os.WriteFile(filepath.Join(dir, "Chart.yaml"), []byte("apiVersion: v2\nname: gpu-operator\nversion: v26.7.0\n"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "values.yaml"), []byte("driver:\n  enabled: true\ntoolkit:\n  enabled: true\n"), 0o644)
	return dir
}
