package simnodes

import (
	"context"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"

	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
)

// Coherent makes the simulated GPU nodes say what their fake hosts say, as a real cluster's
// nodes do (the demo's cluster, hack/devtools/cluster; Simulate built the roots in
// dir/<node>):
//
//   - A node advertises its GPUs (nvidia.com/gpu, GPU feature discovery's labels with the
//     host's driver version) only while an NVIDIA device plugin pod runs on it and its host's
//     driver is loaded; before a device plugin is installed, the GPU nodes show only the PCI
//     label. Its OS image is its host's.
//   - Once the GPU Operator's ClusterPolicy exists, the operator's driver container loads its
//     driver (the ClusterPolicy's driver.version) on the nodes not labelled
//     nvidia.com/gpu.deploy.driver=false whose host has no driver and no nouveau loaded (a
//     real driver container fails where nouveau holds the GPUs), and its device plugin runs
//     wherever a driver is loaded.
//   - verify's CUDA sample passes on a node that advertises GPUs and whose host's driver is
//     loaded; elsewhere it fails as the sample does with no usable GPU.
//
// It runs until ctx ends.
func Coherent(ctx context.Context, c *localcluster.Cluster, dir string, nodes []string) error {
	s := &coherent{c: c, dir: dir, gpus: map[string]int64{}, labels: map[string]map[string]string{}}
	for _, name := range nodes {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		q := n.Status.Capacity[gpuResource]
		s.gpus[name] = q.Value()
		if s.gpus[name] == 0 {
			s.gpus[name] = 2 // Simulate's PCI bus where none is advertised
		}
		s.labels[name] = gfdLabels(n.Labels)
		if len(s.labels[name]) == 0 {
			// GPUs no discovery has labelled yet (the bare-gpu profile): the fake PCI bus's
			// A100s, as GPU feature discovery will label them.
			s.labels[name] = gfdLabels(localcluster.Profiles["a100"].Labels)
			s.labels[name]["nvidia.com/gpu.count"] = strconv.FormatInt(s.gpus[name], 10)
		}
		if img := osImage(s.root(name)); img != "" {
			b, _ := json.Marshal(map[string]any{"status": map[string]any{"nodeInfo": map[string]any{"osImage": img}}})
			if _, err := c.Client.CoreV1().Nodes().PatchStatus(ctx, name, b); err != nil {
				return err
			}
		}
		if err := s.sync(ctx, name, nil); err != nil {
			return err
		}
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	if err := c.SetPodOutcomeByAnnotation(ctx, "verify-host", verify.Component, 1); err != nil {
		return err
	}
	w, err := c.Client.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{LabelSelector: nodepod.Selector(verify.Component)})
	if err != nil {
		return err
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type == watch.Added {
				go s.verifyPod(context.WithoutCancel(ctx), p)
			}
		}
	}()
	go func() {
		for ctx.Err() == nil {
			s.step(ctx, dyn, nodes)
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return nil
}

const gpuResource = corev1.ResourceName("nvidia.com/gpu")

type coherent struct {
	c      *localcluster.Cluster
	dir    string
	gpus   map[string]int64
	labels map[string]map[string]string // GPU feature discovery's labels, as the profile has them
}

func (s *coherent) root(node string) string { return filepath.Join(s.dir, node) }

// step plays the operator's driver and device plugin, then brings every node in line with
// its host.
func (s *coherent) step(ctx context.Context, dyn dynamic.Interface, nodes []string) {
	driverVersion, policy := "", false
	if cp, err := dyn.Resource(gpusoftware.ClusterPolicyGVR).Get(ctx, gpusoftware.ClusterPolicyName, metav1.GetOptions{}); err == nil {
		policy = true
		driverVersion, _, _ = unstructured.NestedString(cp.Object, "spec", "driver", "version")
		if driverVersion == "" {
			driverVersion = "595.91.07"
		}
	}
	pods, err := s.c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return
	}
	plugin := map[string]bool{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && isDevicePlugin(&p) {
			plugin[p.Spec.NodeName] = true
		}
	}
	for _, name := range nodes {
		n, err := s.c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			continue
		}
		root := s.root(name)
		if policy && n.Labels["nvidia.com/gpu.deploy.driver"] != "false" && hostDriver(root) == "" && !nouveau(root) {
			_ = loadDriver(root, driverVersion)
		}
		if policy && hostDriver(root) != "" && !plugin[name] {
			s.operatorPlugin(ctx, name)
		}
		_ = s.sync(ctx, name, plugin)
	}
}

// sync makes the node advertise its GPUs exactly when its device plugin runs and its host's
// driver is loaded (plugin nil: no plugin anywhere).
func (s *coherent) sync(ctx context.Context, name string, plugin map[string]bool) error {
	n, err := s.c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	root := s.root(name)
	driver := hostDriver(root)
	serve := plugin[name] && driver != ""
	labels := map[string]any{}
	for k, v := range s.labels[name] {
		want := any(nil)
		if serve {
			want = v
			switch k {
			case "nvidia.com/cuda.driver-version.full":
				want = driver
			case "nvidia.com/cuda.runtime-version.full":
				// The CUDA version the host's driver branch supports (none said for a
				// branch not in the table).
				if cuda, ok := cudaOfBranch[strings.SplitN(driver, ".", 2)[0]]; ok {
					want = cuda
				} else {
					want = nil
				}
			}
		}
		if have, ok := n.Labels[k]; (want == nil && ok) || (want != nil && have != want) {
			labels[k] = want
		}
	}
	if len(labels) > 0 {
		b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
		if _, err := s.c.Client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
			return err
		}
	}
	want := int64(0)
	if serve {
		want = s.gpus[name]
	}
	sock := filepath.Join(root, rep.DevicePluginDir, "nvidia-gpu.sock")
	if serve {
		_ = os.WriteFile(sock, nil, 0o644)
	} else {
		_ = os.Remove(sock)
	}
	if q, ok := n.Status.Capacity[gpuResource]; ok && q.Value() == want {
		return nil
	}
	qty := resource.NewQuantity(want, resource.DecimalSI).String()
	b, _ := json.Marshal(map[string]any{"status": map[string]any{"capacity": map[string]any{string(gpuResource): qty}, "allocatable": map[string]any{string(gpuResource): qty}}})
	_, err = s.c.Client.CoreV1().Nodes().PatchStatus(ctx, name, b)
	return err
}

// operatorPlugin starts the GPU Operator's device plugin pod on the node (the operator's
// DaemonSet would; kwok runs it).
func (s *coherent) operatorPlugin(ctx context.Context, node string) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "nvidia-device-plugin-daemonset-" + node, Namespace: operator.DefaultNamespace,
			Labels: map[string]string{"app": "nvidia-device-plugin-daemonset"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "nvidia-device-plugin", Image: "nvcr.io/nvidia/k8s-device-plugin:v0.20.0",
			Command: []string{"nvidia-device-plugin"}}}},
	}
	if _, err := s.c.Client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return
	}
}

// verifyPod finishes a verify pod as the CUDA sample would run on its node's host.
func (s *coherent) verifyPod(ctx context.Context, p *corev1.Pod) {
	node := p.Spec.NodeName
	for i := 0; node == "" && i < 100; i++ { // not scheduled yet
		time.Sleep(100 * time.Millisecond)
		if q, err := s.c.Client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{}); err == nil {
			node = q.Spec.NodeName
		}
	}
	log, outcome := VectorAddNoDeviceLog, localcluster.OutcomeFail
	if n, err := s.c.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
		if q := n.Status.Capacity[gpuResource]; q.Value() > 0 && hostDriver(s.root(node)) != "" {
			log, outcome = VectorAddPassLog, localcluster.OutcomePass
		}
	}
	if err := s.c.SetPodLog(ctx, p.Namespace, p.Name, verify.ContainerName, log); err != nil {
		return
	}
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{localcluster.OutcomeAnnotation: outcome}}})
	_, _ = s.c.Client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.MergePatchType, b, metav1.PatchOptions{})
}

// cudaOfBranch is the CUDA version each driver branch supports (NVIDIA's CUDA toolkit
// release notes, table 3).
var cudaOfBranch = map[string]string{"535": "12.2", "550": "12.4", "570": "12.8", "580": "13.0"}

// gfdLabels are GPU feature discovery's labels among a node's.
func gfdLabels(labels map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range labels {
		if strings.HasPrefix(k, "nvidia.com/") {
			out[k] = v
		}
	}
	return out
}

// isDevicePlugin tells NVIDIA's device plugin pod by its image and command, as doctor does.
func isDevicePlugin(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		img := c.Image
		if i := strings.LastIndex(img, ":"); i > strings.LastIndex(img, "/") {
			img = img[:i]
		}
		if path.Base(img) == gpusoftware.DevicePluginImage && (len(c.Command) == 0 || path.Base(c.Command[0]) == "nvidia-device-plugin") {
			return true
		}
	}
	return false
}

var moduleVersion = regexp.MustCompile(`Kernel Module\s+(\S+)`)

// hostDriver is the version of the NVIDIA kernel module loaded on the host ("" when none).
func hostDriver(root string) string {
	b, err := os.ReadFile(filepath.Join(root, "proc/driver/nvidia/version"))
	if err != nil || !moduleLoaded(root, "nvidia") {
		return ""
	}
	if m := moduleVersion.FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return ""
}

func nouveau(root string) bool { return moduleLoaded(root, "nouveau") }

func moduleLoaded(root, mod string) bool {
	b, _ := os.ReadFile(filepath.Join(root, "proc/modules"))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, mod+" ") {
			return true
		}
	}
	return false
}

// loadDriver loads a driver container's kernel modules on the host.
func loadDriver(root, version string) error {
	if err := os.MkdirAll(filepath.Join(root, "proc/driver/nvidia"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "proc/driver/nvidia/version"), []byte("NVRM version: NVIDIA UNIX x86_64 Kernel Module  "+version+"  Release Build  (dvs-builder@U16-I3-B17-3-1)\n"), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(root, "sys/module/nvidia"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "sys/module/nvidia/version"), []byte(version+"\n"), 0o644); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(root, "proc/modules"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString("nvidia_uvm 4956160 0 - Live 0x0000000000000000 (POE)\nnvidia 54534144 1 nvidia_uvm, Live 0x0000000000000000 (POE)\n")
	return err
}

// osImage is the host's PRETTY_NAME (/etc/os-release).
func osImage(root string) string {
	b, _ := os.ReadFile(filepath.Join(root, "etc/os-release"))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
			return v
		}
	}
	return ""
}
