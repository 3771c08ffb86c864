// Package simnodes makes the local cluster's kwok nodes answer kubectl gpu's node pods the
// way their machines would (see Simulate). It is apart from localcluster, which the
// commands' own tests use, because it uses the commands' packages.
package simnodes

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/hack/release/agentbuild"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/hostconfig/hostconfigtest"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
)

// DefaultAgentRoots gives each GPU node of DefaultNodes the fake host root
// (common/hostconfig/testdata/roots, files from real distributions) its prep pods read.
var DefaultAgentRoots = map[string]string{
	"gpu-a100-0": "ubuntu2204-kubeadm",
	"gpu-a100-1": "ubuntu2404-containerd2",
	"gpu-rke2-0": "rke2",
	"gpu-k3s-0":  "k3s",
	"gpu-bare-0": "rhel9",
}

// VectorAddPassLog and VectorAddNoDeviceLog are what NVIDIA's vectoradd sample prints when
// it passes and when the node has no usable GPU.
const (
	VectorAddPassLog     = "[Vector addition of 50000 elements]\nCopy input data from the host memory to the CUDA device\nCUDA kernel launch with 196 blocks of 256 threads\nCopy output data from the CUDA device to the host memory\nTest PASSED\nDone\n"
	VectorAddNoDeviceLog = "[Vector addition of 50000 elements]\nFailed to allocate device vector A (error code no CUDA-capable device is detected)!\n"
)

// Simulate makes the kwok nodes answer `kubectl gpu prep` and `kubectl gpu verify`
// the way their machines would, until ctx ends. prep: each prep pod's log is the output of
// the real agent binary agentBin, run when the pod appears, in the pod's mode (check, plan,
// apply), against a copy of the node's fake host root in dir (roots: node → root name) with as
// many GPUs on its PCI bus as the node advertises,
// host commands recorded instead of run; kwok's Job stages finish the pods. verify: pods
// on the nodes in pass finish with the vectoradd sample's output, those on fail with its
// no-CUDA-device error.
func Simulate(ctx context.Context, c *localcluster.Cluster, agentBin, dir string, roots map[string]string, pass, fail []string) error {
	return SimulateWith(ctx, c, agentBin, dir, roots, pass, fail, nil)
}

// SimulateWith is Simulate with package hosts (nil: none): nodes whose host packages are
// installed for real in a Debian root (see PackageHosts).
func SimulateWith(ctx context.Context, c *localcluster.Cluster, agentBin, dir string, roots map[string]string, pass, fail []string, ph *PackageHosts) error {
	gpusOf := func(node string) int {
		if n, err := c.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
			if q, ok := n.Status.Capacity["nvidia.com/gpu"]; ok && q.Value() > 0 {
				return int(q.Value())
			}
		}
		return 2
	}
	if ph != nil {
		if err := ph.setUp(filepath.Join(dir, "package-hosts"), gpusOf); err != nil {
			return err
		}
		for node := range ph.roots {
			id, err := ph.boot(node)
			if err != nil {
				return err
			}
			if err := patchNodeStatus(ctx, c, node, corev1.ConditionTrue, id, nil); err != nil {
				return err
			}
		}
	}
	hostRoots := map[string]string{}
	for node, name := range roots {
		if ph != nil && ph.roots[node] != "" {
			continue // a package host: its root is its own
		}
		// As many GPUs on the fake PCI bus as the node advertises (2 where no device
		// plugin advertises any, as on a node without a driver).
		gpus := 2
		if n, err := c.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
			if q, ok := n.Status.Capacity["nvidia.com/gpu"]; ok && q.Value() > 0 {
				gpus = int(q.Value())
			}
		}
		r := filepath.Join(dir, node)
		if err := hostconfigtest.Build(name, r, gpus); err != nil {
			return err
		}
		hostRoots[node] = r
		// The node's boot: the same ID in its fake root and in its status, as a kubelet
		// reports the host's.
		boot, err := hostconfigtest.Boot(r)
		if err != nil {
			return err
		}
		if err := patchNodeStatus(ctx, c, node, corev1.ConditionTrue, boot, nil); err != nil {
			return err
		}
	}
	var mu sync.Mutex // apply edits a root: one agent per node at a time
	// One namespace for both commands, as they share their default; prep raises its Pod
	// Security level itself.
	if err := nodepod.EnsureNamespace(ctx, c.Client, nodepod.DefaultNamespace, nodepod.PSAPrivileged); err != nil {
		return err
	}
	serve := c.ServePodLogs
	if ph != nil {
		serve = c.ServePodLogsHeld // apt-get in a Debian root takes seconds
	}
	err := serve(ctx, nodepod.DefaultNamespace, nodepod.Selector(prep.Component), "agent", func(p *corev1.Pod) string {
		if ph != nil && ph.roots[p.Spec.NodeName] != "" && len(p.Spec.Containers) > 0 && len(p.Spec.Containers[0].Args) > 0 {
			return ph.report(ctx, p, func(node string, boot func() (string, error)) {
				reboot(context.WithoutCancel(ctx), c, node, SampleRebootDelay/2, SampleRebootDelay/2, boot)
			})
		}
		root, ok := hostRoots[p.Spec.NodeName]
		if !ok || len(p.Spec.Containers) == 0 || len(p.Spec.Containers[0].Args) == 0 {
			return fmt.Sprintf("no simulated host for node %s\n", p.Spec.NodeName)
		}
		mu.Lock()
		defer mu.Unlock()
		args := append(append([]string{}, p.Spec.Containers[0].Args...), "--host-root", root, "--node", p.Spec.NodeName)
		cmd := exec.Command(agentBin, args...)
		cmd.Env = os.Environ()
		for _, e := range p.Spec.Containers[0].Env {
			if e.Value != "" {
				cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
			}
		}
		out, err := cmd.Output()
		if err != nil && len(out) == 0 {
			return fmt.Sprintf("agent: %v\n", err)
		}
		if rep.Mode(args[0]) == rep.ModeReboot {
			if r, err := rep.Parse(lastLine(out)); err == nil && len(r.Changes) == 1 && r.Changes[0].Done {
				go reboot(context.WithoutCancel(ctx), c, p.Spec.NodeName, SampleRebootDelay/2, SampleRebootDelay/2, func() (string, error) {
					mu.Lock()
					defer mu.Unlock()
					return hostconfigtest.Boot(root)
				})
			}
		}
		return string(out)
	})
	if err != nil {
		return err
	}
	if err := c.SetPodOutcome(ctx, "verify-pass", verify.Component, pass, 0); err != nil {
		return err
	}
	if err := c.SetPodOutcome(ctx, "verify-fail", verify.Component, fail, 1); err != nil {
		return err
	}
	for _, set := range []struct {
		nodes []string
		log   string
	}{{pass, VectorAddPassLog}, {fail, VectorAddNoDeviceLog}} {
		for _, n := range set.nodes {
			if err := c.SetPodLog(ctx, nodepod.DefaultNamespace, verify.PodName(n), verify.ContainerName, set.log); err != nil {
				return err
			}
		}
	}
	return nil
}

// BuildAgent builds the simulated hosts' agent (hack/testenv/simagent: the node agent's code with
// hostconfigtest.SimHost; cgo, for go-nvml) for this machine to out: the binary
// Simulate runs for the nodes.
func BuildAgent(ctx context.Context, out string) error {
	return agentbuild.Build(ctx, agentbuild.Options{Dir: localcluster.RepoRoot(), Out: out, Package: agentbuild.SimAgent})
}

func lastLine(b []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return lines[len(lines)-1]
}

// SampleRebootDelay is how long a simulated host takes from the agent's reboot request
// to being back (Simulate's nodes; the roll tests' RollSim has its own).
const SampleRebootDelay = 2 * time.Second

// reboot simulates the host going down and booting: NotReady, then the fake root's boot
// (hostconfigtest.Boot: the kernel state from its persisted files) and the node back with the new
// boot ID, its addresses and Ready.
func reboot(ctx context.Context, c *localcluster.Cluster, node string, delay, down time.Duration, boot func() (string, error)) {
	time.Sleep(delay)
	n, err := c.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return
	}
	addrs := n.Status.Addresses
	_ = patchNodeStatus(ctx, c, node, corev1.ConditionFalse, "", nil)
	if boot == nil {
		return // it never comes back
	}
	time.Sleep(down)
	id, err := boot()
	if err != nil {
		return
	}
	_ = patchNodeStatus(ctx, c, node, corev1.ConditionTrue, id, addrs)
}

// ResetHost builds a simulated host's root again (dir and roots as given to Simulate) as
// its distribution's files first had it — nouveau loaded, containerd's config unchanged —
// and boots it: the node reports the new boot, as a host reinstalled or a test's next day.
// nouveau: nouveau is loaded and not blacklisted after that boot (also where the
// distribution's files have it otherwise), so that the host needs prep's blacklist and a
// reboot. No agent of the node may run
// meanwhile.
func ResetHost(ctx context.Context, c *localcluster.Cluster, dir string, roots map[string]string, node string, nouveau bool) error {
	name, ok := roots[node]
	if !ok {
		return fmt.Errorf("no simulated host root for node %s", node)
	}
	r := filepath.Join(dir, node)
	gpus := 2
	if n, err := c.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
		if q, ok := n.Status.Capacity["nvidia.com/gpu"]; ok && q.Value() > 0 {
			gpus = int(q.Value())
		}
	}
	if err := os.RemoveAll(r); err != nil {
		return err
	}
	if err := hostconfigtest.Build(name, r, gpus); err != nil {
		return err
	}
	if nouveau {
		if err := os.RemoveAll(filepath.Join(r, "etc/modprobe.d/blacklist-nouveau.conf")); err != nil {
			return err
		}
		modules := filepath.Join(r, "proc/modules")
		b, err := os.ReadFile(modules)
		if err != nil {
			return err
		}
		if !bytes.Contains(b, []byte("nouveau ")) {
			b = append(b, "nouveau 2433024 0 - Live 0x0000000000000000\n"...)
			if err := os.WriteFile(modules, b, 0o644); err != nil {
				return err
			}
		}
	}
	boot, err := hostconfigtest.Boot(r)
	if err != nil {
		return err
	}
	return patchNodeStatus(ctx, c, node, corev1.ConditionTrue, boot, nil)
}
