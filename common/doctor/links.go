package doctor

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
	"github.com/kubectl-gpu/kubectl-gpu/common/xid"
)

// The links 1 to 4 of a node's chain, one function each, from the node's facts (prep's
// record, or the agent's report of this run) and the GPU software's pods on it; 5 and 6 are
// softwareLink and kubernetesLink.

// hardwareLink (1): GPUs on the PCI bus (prep) against GPUs NVML sees (GFD), then the GPUs'
// own health as prep's NVML read found it.
func hardwareLink(n *corev1.Node, f rep.Facts, pci, nvml int, pciKnown, nvmlKnown bool) Link {
	var l Link
	switch {
	case pciKnown && nvmlKnown && nvml < pci:
		return Link{Name: LinkHardware, State: Broken, Remedy: remedy.Service,
			Detail: fmt.Sprintf("%d GPUs on the PCI bus, NVML sees %d: a GPU fell off the bus", pci, nvml),
			Fix:    "drain the node (kubectl drain " + n.Name + "), reboot it; if the GPU stays missing, have it serviced"}
	case pciKnown && pci == 0:
		return Link{Name: LinkHardware, State: Broken, Remedy: remedy.Service, Detail: "prep found no NVIDIA GPU on the PCI bus", Fix: "check the node's hardware, or remove its GPU labels"}
	case pciKnown && nvmlKnown:
		l = Link{Name: LinkHardware, State: OK, Detail: fmt.Sprintf("%d GPUs on the PCI bus, %d seen by NVML", pci, nvml)}
	case pciKnown:
		l = Link{Name: LinkHardware, State: OK, Detail: fmt.Sprintf("%d GPUs on the PCI bus (NVML's count unknown: no GPU feature discovery labels)", pci)}
	default:
		l = Link{Name: LinkHardware, State: Unknown, Detail: "not checked by prep", Fix: "kubectl gpu prep " + n.Name}
	}
	switch a := f.GPUHealth; a {
	case remedy.Service, remedy.ResetGPU:
		return Link{Name: LinkHardware, State: Broken, Remedy: a, Detail: f.GPUHealthDetail, Fix: rep.HealthFix(a, n.Name)}
	case remedy.Watch:
		return Link{Name: LinkHardware, State: Warn, Remedy: a, Detail: l.Detail + "; " + f.GPUHealthDetail, Fix: rep.HealthFix(a, n.Name)}
	}
	return l
}

// driverLink (2): the host's driver (prep) or the operator's driver container, and the
// operator's driver upgrade state.
func (w *world) driverLink(ctx context.Context, n *corev1.Node, f rep.Facts, prepped bool, byKind map[string]*corev1.Pod) Link {
	upgrade := n.Labels["nvidia.com/gpu-driver-upgrade-state"]
	switch drv := byKind[swDriver]; {
	case upgrade == "upgrade-failed":
		return Link{Name: LinkDriver, State: Broken, Remedy: remedy.Reboot, Detail: "the operator's driver upgrade failed on this node (nvidia.com/gpu-driver-upgrade-state=upgrade-failed)",
			Fix: "read the driver pod's log, fix the cause, then label the node nvidia.com/gpu-driver-upgrade-state=upgrade-required to retry"}
	case drv != nil:
		if h := nodepod.Hold(ctx, w.cs, drv); !h.Ready {
			return Link{Name: LinkDriver, State: Broken, Remedy: remedy.Restart, Detail: fmt.Sprintf("the operator's driver pod %s/%s is %s: %s", drv.Namespace, drv.Name, h.State, h.Message),
				Fix: "kubectl logs -n " + drv.Namespace + " " + drv.Name + "; check headers and Secure Boot with 'kubectl gpu prep " + n.Name + "'"}
		}
		return Link{Name: LinkDriver, State: OK, Detail: "the operator's driver container runs (" + drv.Name + ")"}
	case f.DriverVersion != "":
		return Link{Name: LinkDriver, State: OK, Detail: "host driver " + f.DriverVersion}
	case upgrade == "validation-required" || upgrade == "pod-restart-required":
		return Link{Name: LinkDriver, State: Warn, Remedy: remedy.Restart, Detail: "driver upgrade waiting at " + upgrade, Fix: "see 'kubectl gpu operator status'"}
	case n.Labels[inventory.LabelDeployDriver] == "pre-installed":
		return Link{Name: LinkDriver, State: OK, Detail: "host driver (the operator found it pre-installed)"}
	case prepped && f.DriverInstalled != "":
		return Link{Name: LinkDriver, State: Broken, Remedy: remedy.Reboot, Detail: "driver " + f.DriverInstalled + " is installed on the host but not loaded: its kernel module did not load",
			Fix: "reboot the node if it has not been since the install (kubectl gpu prep " + n.Name + " --apply --reboot); if it has, the node's kernel log says why (journalctl -k | grep -i -e nvidia -e nvrm: a module Secure Boot refuses, one built for another kernel), or go back to the driver it ran (kubectl gpu up --host-driver=VERSION)"}
	case prepped:
		return Link{Name: LinkDriver, State: Broken, Remedy: remedy.Configure, Detail: "no driver: none on the host (prep) and no operator driver pod on the node",
			Fix: "kubectl gpu prep " + n.Name + " --apply --install-driver --reboot, or the GPU Operator's driver (kubectl gpu operator install)"}
	}
	return Link{Name: LinkDriver, State: Unknown, Detail: "not checked by prep and no operator driver pod", Fix: "kubectl gpu prep " + n.Name}
}

// toolkitLink (3): the host's NVIDIA Container Toolkit (prep) or the operator's toolkit
// container.
func (w *world) toolkitLink(ctx context.Context, n *corev1.Node, f rep.Facts, prepped bool, byKind map[string]*corev1.Pod) Link {
	switch tk := byKind[swToolkit]; {
	case tk != nil:
		if h := nodepod.Hold(ctx, w.cs, tk); !h.Ready {
			return Link{Name: LinkToolkit, State: Broken, Remedy: remedy.Restart, Detail: fmt.Sprintf("the operator's toolkit pod %s/%s is %s: %s", tk.Namespace, tk.Name, h.State, h.Message),
				Fix: "kubectl logs -n " + tk.Namespace + " " + tk.Name + " (on RKE2/K3s: the containerd socket, see 'kubectl gpu operator values')"}
		}
		return Link{Name: LinkToolkit, State: OK, Detail: "the operator's toolkit container runs (" + tk.Name + ")"}
	case f.ToolkitVersion != "":
		return Link{Name: LinkToolkit, State: OK, Detail: "host toolkit " + f.ToolkitVersion}
	case prepped:
		return Link{Name: LinkToolkit, State: Broken, Remedy: remedy.Configure, Detail: "no NVIDIA Container Toolkit on the host and no operator toolkit pod",
			Fix: "kubectl gpu prep " + n.Name + " --apply --install-toolkit, or the GPU Operator's toolkit"}
	}
	return Link{Name: LinkToolkit, State: Unknown, Detail: "not checked by prep", Fix: "kubectl gpu prep " + n.Name}
}

// containerdLink (4): containerd's nvidia runtime, as prep found it or as the operator's
// toolkit container sets it.
func containerdLink(n *corev1.Node, f rep.Facts, prepped bool, byKind map[string]*corev1.Pod) Link {
	switch {
	case byKind[swToolkit] != nil:
		return Link{Name: LinkContainerd, State: OK, Detail: "configured by the operator's toolkit container"}
	case f.NvidiaRuntime:
		det := "nvidia runtime configured"
		if f.DefaultRuntime != "" {
			det += ", default runtime " + f.DefaultRuntime
		}
		if f.CDI {
			det += ", CDI on"
		}
		return Link{Name: LinkContainerd, State: OK, Detail: det}
	case prepped && f.ToolkitVersion != "":
		return Link{Name: LinkContainerd, State: Broken, Remedy: remedy.Configure, Detail: "the toolkit is installed but containerd has no nvidia runtime (overwritten by an upgrade?)",
			Fix: "kubectl gpu prep " + n.Name + " --apply --restart-runtime"}
	case prepped:
		return Link{Name: LinkContainerd, State: Broken, Remedy: remedy.Configure, Detail: "containerd has no nvidia runtime", Fix: "install the toolkit (kubectl gpu prep " + n.Name + " --apply --install-toolkit)"}
	}
	return Link{Name: LinkContainerd, State: Unknown, Detail: "not checked by prep", Fix: "kubectl gpu prep " + n.Name}
}

func (w *world) softwareLink(ctx context.Context, n *corev1.Node, byKind map[string]*corev1.Pod, alloc int64) Link {
	if v := byKind[swValidator]; v != nil {
		if vi := op.Validator(v); !vi.Done {
			stuck := ""
			for _, s := range vi.Steps {
				if !strings.HasSuffix(s, ": done") {
					stuck = s
					break
				}
			}
			return Link{Name: LinkSoftware, State: Broken, Remedy: remedy.Restart, Detail: fmt.Sprintf("the operator's validator %s is stuck at %s", v.Name, stuck),
				Fix: "kubectl logs -n " + v.Namespace + " " + v.Name + " -c " + strings.SplitN(stuck, ":", 2)[0]}
		}
	}
	plugin, kind := byKind[swDevicePlugin], swDevicePlugin
	if plugin == nil {
		plugin, kind = byKind[swDRA], swDRA
	}
	if plugin == nil {
		fix := "kubectl gpu device-plugin install, or kubectl gpu operator install"
		if w.operator {
			fix = "the operator runs no device plugin here: see 'kubectl gpu operator status' (is the node labelled nvidia.com/gpu.present=true?)"
		}
		if alloc > 0 || w.dra[n.Name] > 0 {
			return Link{Name: LinkSoftware, State: Warn, Detail: "GPUs are advertised but no NVIDIA device plugin or DRA kubelet plugin pod runs on the node (another plugin?)"}
		}
		return Link{Name: LinkSoftware, State: Broken, Remedy: remedy.Configure, Detail: "no NVIDIA device plugin or DRA kubelet plugin pod on the node", Fix: fix}
	}
	if h := nodepod.Hold(ctx, w.cs, plugin); !h.Ready {
		l := Link{Name: LinkSoftware, State: Broken, Remedy: remedy.Restart, Detail: fmt.Sprintf("the %s pod %s/%s is %s: %s", kind, plugin.Namespace, plugin.Name, h.State, h.Message),
			Fix: "kubectl logs -n " + plugin.Namespace + " " + plugin.Name + "; then kubectl delete pod -n " + plugin.Namespace + " " + plugin.Name + " to restart it"}
		if h.ImagePull {
			l.Remedy = remedy.Configure
			l.Fix = "the node cannot pull the image: check its registry access, or mirror the images (kubectl gpu mirror --to REGISTRY, then install with --mirror)"
		}
		return l
	}
	det := "the " + kind + " runs (" + plugin.Name + ")"
	if byKind[swGFD] != nil && n.Labels[inventory.LabelProduct] == "" {
		return Link{Name: LinkSoftware, State: Warn, Remedy: remedy.Restart, Detail: det + "; GPU feature discovery runs but the node has no nvidia.com/gpu.product label",
			Fix: "kubectl logs -n " + byKind[swGFD].Namespace + " " + byKind[swGFD].Name}
	}
	return Link{Name: LinkSoftware, State: OK, Detail: det}
}

func (w *world) kubernetesLink(n *corev1.Node, alloc int64, pci int, pciKnown bool) Link {
	dra := w.dra[n.Name]
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
			return Link{Name: LinkKubernetes, State: Broken, Remedy: remedy.Reboot, Detail: "the node is NotReady: " + c.Message, Fix: "check the kubelet on " + n.Name}
		}
	}
	if n.Spec.Unschedulable {
		return Link{Name: LinkKubernetes, State: Broken, Remedy: remedy.Configure, Detail: "the node is cordoned", Fix: "kubectl uncordon " + n.Name + " (or let a running 'kubectl gpu prep --reboot' finish)"}
	}
	var taints []string
	for _, t := range n.Spec.Taints {
		if (t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute) && t.Key != string(inventory.ResourceGPU) {
			taints = append(taints, t.Key+":"+string(t.Effect))
		}
	}
	if alloc == 0 && dra == 0 {
		return Link{Name: LinkKubernetes, State: Broken, Remedy: remedy.Restart, Detail: "the node advertises no GPU (allocatable nvidia.com/gpu 0, no ResourceSlice)",
			Fix: "see the software link; a device plugin that runs but registers nothing: restart it"}
	}
	if len(w.pending[n.Name]) > 0 {
		p := w.pending[n.Name][0]
		msg := ""
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				msg = c.Message
			}
		}
		return Link{Name: LinkKubernetes, State: Warn, Detail: fmt.Sprintf("%d GPU pods Pending for this node, %s/%s: %s", len(w.pending[n.Name]), p.Namespace, p.Name, msg),
			Fix: "kubectl describe pod -n " + p.Namespace + " " + p.Name}
	}
	if len(taints) > 0 {
		return Link{Name: LinkKubernetes, State: Warn, Detail: "taints keep pods without a toleration off: " + strings.Join(taints, ", "), Fix: "give GPU pods the toleration, or remove the taint"}
	}
	det := fmt.Sprintf("%d GPUs allocatable", alloc)
	if dra > 0 {
		det = fmt.Sprintf("%d GPU devices published through DRA", dra)
	}
	// Sharing and MIG advertise more than the hardware has: only fewer is a warning.
	if pciKnown && alloc > 0 && alloc < int64(pci) && !inventory.MIGEnabled(n) {
		return Link{Name: LinkKubernetes, State: Warn, Remedy: remedy.Restart, Detail: fmt.Sprintf("%s of %d GPUs: the device plugin marks the others unhealthy (an XID?)", det, pci),
			Fix: "kubectl gpu prep " + n.Name + " to read the GPUs; restart the device plugin once they are healthy"}
	}
	return Link{Name: LinkKubernetes, State: OK, Detail: det}
}

// unhealthyWhy reads the device plugin's log for the XIDs that made it mark GPUs unhealthy
// and sets the link's detail, fix and remedy from the worst (NVIDIA's catalog).
func (w *world) unhealthyWhy(ctx context.Context, plugin *corev1.Pod, l *Link) {
	b, err := nodepod.ReadLog(ctx, w.cs, plugin.Namespace, plugin.Name, &corev1.PodLogOptions{TailLines: ptr.To[int64](500)})
	if err != nil {
		return
	}
	e, ok := xid.Worst(xid.FromDevicePlugin(string(b)))
	if !ok {
		return
	}
	l.Detail += fmt.Sprintf("; the device plugin logged XID %d on %s: %s", e.XID, e.PCI, e.Meaning)
	switch e.Action {
	case remedy.Service, remedy.Reboot:
		l.Remedy, l.Fix = e.Action, e.Action.Fix(e.PCI, "")
	case remedy.ResetGPU:
		l.Remedy, l.Fix = e.Action, e.Action.Fix(e.PCI, "")+"; then restart the device plugin (kubectl delete pod -n "+plugin.Namespace+" "+plugin.Name+")"
	default:
		l.Fix = "restart the device plugin (kubectl delete pod -n " + plugin.Namespace + " " + plugin.Name + "): it keeps a GPU unhealthy until it restarts"
	}
}

// verifyFailed reads the kept verify pod's log: a line naming CUDA or NVML breaks the toolkit
// link (the path from a container to the GPUs) when nothing before it was found broken.
func (w *world) verifyFailed(ctx context.Context, d *Node, p *corev1.Pod) {
	b, err := nodepod.ReadLog(ctx, w.cs, p.Namespace, p.Name, &corev1.PodLogOptions{TailLines: ptr.To[int64](50)})
	if err != nil {
		return
	}
	line := ""
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "CUDA") || strings.Contains(l, "cuda") || strings.Contains(l, "NVML") {
			line = strings.TrimSpace(l)
		}
	}
	if line == "" {
		return
	}
	for i := range d.Links {
		l := &d.Links[i]
		if l.State == Broken {
			return // the cause is already named further down the chain
		}
		if l.Name == LinkToolkit {
			*l = Link{Name: LinkToolkit, State: Broken, Remedy: remedy.Configure,
				Detail: fmt.Sprintf("a container on the node cannot use its GPUs: the verify pod %s/%s (kept) ended with: %s", p.Namespace, p.Name, nodepod.Fit(line, 300)),
				Fix:    "kubectl logs -n " + p.Namespace + " " + p.Name + "; check the toolkit and containerd's nvidia runtime (kubectl gpu prep " + d.Node + "), then kubectl gpu verify " + d.Node}
			return
		}
	}
}
