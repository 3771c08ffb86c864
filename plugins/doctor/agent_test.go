package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster/clustertest"
	"github.com/kubectl-gpu/kubectl-gpu/common/doctor"
	"github.com/kubectl-gpu/kubectl-gpu/common/golden"
	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig"
	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
)

// Kernel log lines as NVIDIA's drivers print them (Ubuntu's kern.log).
const (
	bootLine    = "Dec  6 08:00:00 gpu-7 kernel: [    0.000000] Linux version 6.8.0-51-generic (buildd@lcy02-amd64-080) #52-Ubuntu SMP\n"
	xid48       = "Dec  6 09:40:00 gpu-7 kernel: [ 6000.2] NVRM: Xid (PCI:0000:08:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.\n"
	xid13       = "Dec  6 09:12:01 gpu-7 kernel: [ 4321.3] NVRM: Xid (PCI:0000:07:00): 13, pid=4410, name=python3, Graphics Exception: ESR 0x405840=0x4d000000 0x405844=0x0\n"
	xid79pid    = "Dec  6 10:00:00 gpu-7 kernel: [ 7000.2] NVRM: Xid (PCI:0000:08:00): 79, pid=0, GPU has fallen off the bus.\n"
	probeOffBus = "Dec  6 10:00:00 gpu-7 kernel: [ 7000.2] NVRM: The NVIDIA GPU 0000:08:00.0 (PCI ID: 10de:20b0) installed in this system has fallen off the bus and is not responding to commands.\n"
	xid79       = "Dec  6 10:00:00 gpu-7 kernel: [ 7000.2] NVRM: Xid (PCI:0000:07:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n"
)

// cdiSpec names the two GPUs as `nvidia-ctk cdi generate` does (by index, by UUID, "all").
const cdiSpec = `---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
    - name: "0"
      containerEdits:
        deviceNodes:
            - path: /dev/nvidia0
    - name: "1"
      containerEdits:
        deviceNodes:
            - path: /dev/nvidia1
    - name: all
      containerEdits:
        deviceNodes:
            - path: /dev/nvidia0
            - path: /dev/nvidia1
containerEdits:
    deviceNodes:
        - path: /dev/nvidiactl
`

// host is a fake host root made from real distributions' files (2 A100s), with files added.
type host struct {
	root  string
	files map[string]string
	edit  func(t *testing.T, dir string)
}

// agentWorld: nodes whose agent reports what only the host shows — an XID calling for a GPU
// reset, a GPU fallen off the bus, a driver upgraded without a reboot, a device plugin in a
// CDI mode with no CDI spec, a containerd config that no longer imports the toolkit's
// drop-in, a device plugin the kubelet has no socket of — one healthy, and one whose agent
// cannot start (its host links are prep's record).
func agentWorld(t *testing.T) (*clustertest.Getter, map[string]*rep.Report) {
	hosts := map[string]host{
		"gpu-ok":     {root: "k3s"},
		"gpu-xid":    {root: "k3s", files: map[string]string{"/var/log/kern.log": bootLine + xid48}},
		"gpu-offbus": {root: "k3s", files: map[string]string{"/var/log/kern.log": bootLine + xid79}},
		// NVML (GFD) sees 1 of the 2 GPUs on the bus, and the kernel log says which fell off
		// (NVIDIA's documented XID 79 line, with its bare pid prefix); the slot is in sysfs.
		"gpu-gone": {root: "k3s", files: map[string]string{"/var/log/kern.log": bootLine + xid79pid, "/sys/bus/pci/slots/5/address": "0000:08:00\n"}},
		// An application's fault (XID 13): information in the hardware link, not a failure.
		"gpu-app": {root: "k3s", files: map[string]string{"/var/log/kern.log": bootLine + xid13}},
		// The driver's probe-time line with no XID (NVIDIA/NVSentinel #155), the GFD count
		// still 2.
		"gpu-probe":  {root: "k3s", files: map[string]string{"/var/log/kern.log": bootLine + probeOffBus}},
		"gpu-libs":   {root: "k3s", files: map[string]string{"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.535.247.01": ""}},
		"gpu-cdi":    {root: "k3s"},
		"gpu-dropin": {root: "ubuntu2404-containerd2", edit: orphanDropIn},
		// Ubuntu 24.04's containerd 1.7.24, a version 2 root importing conf.d and the toolkit's
		// drop-in written as version 3: containerd's next start fails (no containerd binary
		// to run here: the model answers, for the release the packages name).
		"gpu-v3dropin": {root: "ubuntu2404-containerd2", edit: v3DropIn},
		// nouveau loaded and no NVIDIA driver (the demo's gpu-a100-0): the cause to fix first.
		"gpu-nouveau": {root: "ubuntu2204-kubeadm"},
		// The plugin's pod runs; the kubelet has no socket of it (a kubelet restart emptied
		// the directory).
		"gpu-unreg": {root: "k3s"},
		// The DRA driver's kubelet plugin runs; the kubelet's plugin watcher has no
		// registration socket of it, and no ResourceSlice names the node.
		// K3s with a template of its own that lacks the nvidia runtime (the next start drops it).
		"gpu-tmpl": {root: "k3s", files: map[string]string{"/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl": "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n"}, edit: oldTemplate},
		// A healthy-looking host where the CUDA sample of a kept verify pod found no device.
		"gpu-verify": {root: "k3s"},
		// An HGX board: NVSwitches on the PCI bus, no Fabric Manager process.
		"gpu-nofm": {root: "k3s", edit: nvswitches},
		"gpu-dra":  {root: "k3s", files: map[string]string{"/var/lib/kubelet/plugins_registry/compute-domain.nvidia.com-reg.sock": "", "/var/run/cdi/nvidia.yaml": cdiSpec}},
	}
	reports := map[string]*rep.Report{}
	objs := []runtime.Object{}
	for name, h := range hosts {
		dir := filepath.Join(t.TempDir(), h.root)
		if err := hostconfigtest.Build(h.root, dir, 2); err != nil {
			t.Fatal(err)
		}
		for p, c := range h.files {
			full := filepath.Join(dir, p)
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if h.edit != nil {
			h.edit(t, dir)
		}
		// The kubelet's socket; and the device plugin's where it registered.
		socks := []string{"kubelet.sock"}
		if name != "gpu-unreg" && name != "gpu-dra" {
			socks = append(socks, "nvidia-gpu.sock")
		}
		for _, sock := range socks {
			sock = filepath.Join(dir, "var/lib/kubelet/device-plugins", sock)
			if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(sock, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		r := rep.New("v0.0.0-test", rep.ModeCheck)
		r.Node = name
		hostconfig.Check(context.Background(), &hostconfig.Host{Root: dir}, r, nil)
		reports[name] = r
		p := plugin(name, true, running, 0)
		alloc := 2
		switch name {
		case "gpu-cdi":
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "DEVICE_LIST_STRATEGY", Value: "cdi-cri"}}
		case "gpu-dra":
			// NVIDIA's DRA driver's kubelet plugin, running; no ResourceSlice for the node.
			p.Name, p.Namespace = "nvidia-dra-driver-gpu-kubelet-plugin-gpu-dra", "nvidia-dra-driver-gpu"
			p.Spec.Containers[0] = corev1.Container{Name: "gpus", Image: "nvcr.io/nvidia/k8s-dra-driver-gpu:v25.8.0", Command: []string{"bash", "-c"}, Args: []string{"exec gpu-kubelet-plugin"}}
			p.Status.ContainerStatuses[0].Name = "gpus"
			alloc = 0
		}
		seen := 2
		if name == "gpu-gone" {
			seen = 1
		}
		objs = append(objs, node(name, 2, seen, alloc, nil), p)
	}
	// The verify pod kept on gpu-verify (verify --keep -n gpu-checks), failed.
	kept := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "gpu-verify-gpu-verify-x7", Namespace: "gpu-checks", Labels: nodepod.Labels(verify.Component, "x7", "gpu-verify")},
		Spec:   corev1.PodSpec{NodeName: "gpu-verify", Containers: []corev1.Container{{Name: "cuda", Image: "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0"}}},
		Status: corev1.PodStatus{Phase: corev1.PodFailed}}
	objs = append(objs, node("gpu-noagent", 2, 2, 2, nil), plugin("gpu-noagent", true, running, 0), kept,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nodepod.DefaultNamespace}})
	g := clustertest.New(objs...)
	g.SetLog(kept.Name, "[Vector addition of 50000 elements]\nFailed to allocate device vector A (error code CUDA driver version is insufficient for CUDA runtime version)!\n")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	err := g.RunNodes(ctx, nodepod.DefaultNamespace, func(p *corev1.Pod) clustertest.Outcome {
		r, ok := reports[p.Spec.NodeName]
		if !ok {
			return clustertest.Outcome{Status: &corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "agent",
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "pull access denied"}}}}}}
		}
		b, _ := json.Marshal(r)
		return clustertest.Outcome{Phase: corev1.PodSucceeded, Log: string(b) + "\n"}
	})
	if err != nil {
		t.Fatal(err)
	}
	return g, reports
}

// nvswitches puts an HGX A100 board's 6 NVSwitches on the fake PCI bus (class 0x068000, as
// nvpci tells them from GPUs), made from the GPUs' attribute files.
func nvswitches(t *testing.T, dir string) {
	gpu := filepath.Join(dir, "sys/bus/pci/devices/0000:07:00.0")
	for i := 0; i < 6; i++ {
		sw := filepath.Join(dir, "sys/bus/pci/devices", fmt.Sprintf("0000:%02x:00.0", 0xc4+i))
		if err := os.MkdirAll(sw, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"vendor", "subsystem_vendor", "subsystem_device", "numa_node", "config", "resource"} {
			if b, err := os.ReadFile(filepath.Join(gpu, f)); err == nil {
				if err := os.WriteFile(filepath.Join(sw, f), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		for f, v := range map[string]string{"class": "0x068000", "device": "0x1af1"} {
			if err := os.WriteFile(filepath.Join(sw, f), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// oldTemplate dates the K3s template before the rendered config (K3s rendered it from that
// template when it started).
func oldTemplate(t *testing.T, dir string) {
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl"), old, old); err != nil {
		t.Fatal(err)
	}
}

// orphanDropIn: the toolkit's drop-in holds the nvidia runtime, and config.toml no longer
// imports it (replaced by a containerd package upgrade).
func orphanDropIn(t *testing.T, dir string) {
	dropIn := "version = 3\n\n[plugins]\n  [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nvidia]\n    runtime_type = \"io.containerd.runc.v2\"\n    [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nvidia.options]\n      BinaryName = \"/usr/bin/nvidia-container-runtime\"\n"
	if err := os.WriteFile(filepath.Join(dir, "etc/containerd/conf.d/99-nvidia.toml"), []byte(dropIn), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "etc/containerd/config.toml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), `imports = ["/etc/containerd/conf.d/*.toml"]`, "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// v3DropIn: a version 2 root importing conf.d, the toolkit's drop-in as version 3, and
// containerd 1.7.24 installed (dpkg), on the Ubuntu 24.04 root.
func v3DropIn(t *testing.T, dir string) {
	root := "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n    SystemdCgroup = true\n"
	dropIn := "version = 3\n\n[plugins]\n  [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nvidia]\n    runtime_type = \"io.containerd.runc.v2\"\n    [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nvidia.options]\n      BinaryName = \"/usr/bin/nvidia-container-runtime\"\n"
	if err := os.Remove(filepath.Join(dir, "etc/containerd/conf.d/10-registry.toml")); err != nil {
		t.Fatal(err)
	}
	status, _ := os.ReadFile(filepath.Join(dir, "var/lib/dpkg/status"))
	for p, c := range map[string]string{"etc/containerd/config.toml": root, "etc/containerd/conf.d/99-nvidia.toml": dropIn, "usr/bin/nvidia-container-runtime": "",
		"var/lib/dpkg/status": string(status) + "\nPackage: containerd\nStatus: install ok installed\nVersion: 1.7.24-0ubuntu1~24.04.2\n"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDoctorAgent: the host links from the node agent's report, node by node, as a golden
// table and JSON; the Jobs are gone afterwards and no node was changed.
func TestDoctorAgent(t *testing.T) {
	g, _ := agentWorld(t)
	before, _ := g.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	for _, f := range []string{"table", "json"} {
		out, err := runOn(t, g, "-o", f, "--timeout", "20s")
		if cliexit.Code(err, false) != cliexit.Failures {
			t.Fatalf("-o %s: exit %d %v\n%s", f, cliexit.Code(err, false), err, out)
		}
		golden.Assert(t, "doctor.agent."+f+".golden", []byte(out))
	}
	out, _ := runOn(t, g, "-o", "json", "--timeout", "20s")
	var r doctor.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		verdict     doctor.Verdict
		first, host string
		remedy      remedy.Action
		detail      string
	}{
		"gpu-ok":       {doctor.Healthy, "", doctor.HostAgent, remedy.None, ""},
		"gpu-app":      {doctor.Healthy, "", doctor.HostAgent, remedy.None, ""},
		"gpu-xid":      {doctor.Degraded, doctor.LinkHardware, doctor.HostAgent, remedy.ResetGPU, "XID 48 on 0000:08:00: double-bit ECC error"},
		"gpu-offbus":   {doctor.Faulty, doctor.LinkHardware, doctor.HostAgent, remedy.Service, "XID 79 on 0000:07:00: GPU has fallen off the bus"},
		"gpu-gone":     {doctor.Faulty, doctor.LinkHardware, doctor.HostAgent, remedy.Service, "2 GPUs on the PCI bus, NVML sees 1: GPU 0000:08:00.0 (slot 5) is missing, XID 79 since boot: GPU has fallen off the bus."},
		"gpu-probe":    {doctor.Faulty, doctor.LinkHardware, doctor.HostAgent, remedy.Service, "fallen off the bus on 0000:08:00.0"},
		"gpu-v3dropin": {doctor.Degraded, doctor.LinkContainerd, doctor.HostAgent, remedy.Configure, "containerd 1.7.24 does not start with /etc/containerd/config.toml and its imports: unsupported config version `3` (from /etc/containerd/conf.d/99-nvidia.toml)"},
		"gpu-nouveau":  {doctor.Degraded, doctor.LinkDriver, doctor.HostAgent, remedy.Reboot, "nouveau is loaded: the NVIDIA driver cannot take the GPUs; and no NVIDIA driver is loaded"},
		"gpu-libs":     {doctor.Degraded, doctor.LinkDriver, doctor.HostAgent, remedy.Reboot, "driver/library version mismatch: module 535.216.03 loaded, libraries 535.247.01"},
		"gpu-cdi":      {doctor.Degraded, doctor.LinkToolkit, doctor.HostAgent, remedy.Configure, "the device plugin (DEVICE_LIST_STRATEGY=cdi-cri) hands GPUs out through CDI, but the host has no CDI spec for nvidia.com/gpu"},
		"gpu-dropin":   {doctor.Degraded, doctor.LinkContainerd, doctor.HostAgent, remedy.Configure, "/etc/containerd/conf.d/99-nvidia.toml has it, but /etc/containerd/config.toml does not import it"},
		"gpu-noagent":  {doctor.Healthy, "", doctor.HostPrep, remedy.None, ""},
		"gpu-dra":      {doctor.Unschedulable, doctor.LinkSoftware, doctor.HostAgent, remedy.Restart, "the DRA kubelet plugin pod nvidia-dra-driver-gpu/nvidia-dra-driver-gpu-kubelet-plugin-gpu-dra runs but is not registered with the kubelet: no gpu.nvidia.com socket in /var/lib/kubelet/plugins_registry"},
		"gpu-nofm":     {doctor.Degraded, doctor.LinkDriver, doctor.HostAgent, remedy.Configure, "6 NVSwitches on the PCI bus and no Fabric Manager running"},
		"gpu-tmpl":     {doctor.Degraded, doctor.LinkContainerd, doctor.HostAgent, remedy.Configure, "the next restart of k3s renders config.toml without it"},
		"gpu-verify":   {doctor.Degraded, doctor.LinkToolkit, doctor.HostAgent, remedy.Configure, "a container on the node cannot use its GPUs: the verify pod gpu-checks/gpu-verify-gpu-verify-x7 (kept) ended with: Failed to allocate device vector A (error code CUDA driver version is insufficient for CUDA runtime version)!"},
		"gpu-unreg":    {doctor.Degraded, doctor.LinkSoftware, doctor.HostAgent, remedy.Restart, "runs but is not registered with the kubelet: no nvidia socket in /var/lib/kubelet/device-plugins"},
	}
	if len(r.Items) != len(want) {
		t.Errorf("%d nodes, want %d", len(r.Items), len(want))
	}
	for _, n := range r.Items {
		w := want[n.Node]
		detail := ""
		for _, l := range n.Links {
			if l.Name == n.FirstBroken {
				detail = l.Detail
			}
		}
		if n.Verdict != w.verdict || n.FirstBroken != w.first || n.Host != w.host || n.Remedy != w.remedy || !strings.Contains(detail, w.detail) {
			t.Errorf("%s: %s, first %q (%s), remedy %q, host %s; want %s, %q (…%s…), %q, %s", n.Node, n.Verdict, n.FirstBroken, detail, n.Remedy, n.Host, w.verdict, w.first, w.detail, w.remedy, w.host)
		}
		if n.Node == "gpu-app" && (len(n.Links) == 0 || !strings.Contains(n.Links[0].Detail, "1 XID (13) since boot") || !strings.Contains(n.Links[0].Detail, "information")) {
			t.Errorf("gpu-app: hardware link %+v, want the application XID as information", n.Links)
		}
		if n.Node == "gpu-xid" && (len(n.XIDs) != 1 || n.XIDs[0].XID != 48) {
			t.Errorf("gpu-xid: XIDs %+v", n.XIDs)
		}
	}
	if len(r.Notes) != 1 || !strings.Contains(r.Notes[0], "gpu-noagent: the node agent did not report") || !strings.Contains(r.Notes[0], "prep's last record") {
		t.Errorf("notes %q", r.Notes)
	}
	jobs, _ := g.Client.BatchV1().Jobs(nodepod.DefaultNamespace).List(context.Background(), metav1.ListOptions{})
	if len(jobs.Items) != 0 {
		t.Errorf("%d agent Jobs left", len(jobs.Items))
	}
	after, _ := g.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	for i := range before.Items {
		b, _ := json.Marshal(before.Items[i])
		a, _ := json.Marshal(after.Items[i])
		if string(a) != string(b) {
			t.Errorf("doctor changed node %s", before.Items[i].Name)
		}
	}
}
