package doctor

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/remedy"
	"github.com/kubectl-gpu/kubectl-gpu/common/xid"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
)

// AgentError is a run of the node agent that could not go on (a refused Job, Ctrl-C): the
// caller may diagnose without the agent instead.
type AgentError struct{ Err error }

func (e *AgentError) Error() string { return e.Err.Error() }
func (e *AgentError) Unwrap() error { return e.Err }

// runAgents runs the node agent's read-only check on the nodes that are Ready (a NotReady
// node's pod would only wait out the timeout) and returns each node's report; a node whose
// agent did not report is a note, and its host links come from prep's annotations.
func runAgents(ctx context.Context, cs kubernetes.Interface, a *Agent, nodes []*corev1.Node) (map[string]*rep.Report, []string, error) {
	out := map[string]*rep.Report{}
	if a == nil || len(nodes) == 0 {
		return out, nil, nil
	}
	var names, notes []string
	for _, n := range nodes {
		if ready(n) {
			names = append(names, n.Name)
		} else {
			notes = append(notes, n.Name+": the node agent was not run (the node is NotReady)")
		}
	}
	if len(names) == 0 {
		return out, notes, nil
	}
	// The namespace prep's agent runs in (prep's, with the same Pod Security level).
	if err := nodepod.EnsureNamespace(ctx, cs, a.Namespace, nodepod.PSAPrivileged); err != nil {
		return nil, nil, &AgentError{Err: err}
	}
	req := &prep.Request{Namespace: a.Namespace, Image: a.Image, Timeout: a.Timeout, Parallel: a.Parallel, Progress: a.Progress}
	res, err := prep.RunAgents(ctx, cs, req, names, rep.ModeCheck)
	if err != nil {
		return nil, nil, &AgentError{Err: err}
	}
	for _, r := range res {
		if r.Report == nil {
			note := r.Node + ": the node agent did not report: " + r.Error
			if r.Hint != "" {
				note += " (" + r.Hint + ")"
			}
			notes = append(notes, note+"; its host links are prep's last record")
			continue
		}
		out[r.Node] = r.Report
	}
	return out, notes, nil
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// withReport is the node as if prep had just annotated it with the agent's report (the
// annotations the host links read), and with NVML's GPU count where NVML answered (what GPU
// feature discovery's label says otherwise).
func withReport(n *corev1.Node, hr *rep.Report) *corev1.Node {
	n = n.DeepCopy()
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	for k, v := range prep.Annotations(hr, time.Now()) {
		if v == nil {
			delete(n.Annotations, k)
			continue
		}
		n.Annotations[k] = fmt.Sprint(v)
	}
	if c, ok := hr.Get(rep.CheckNVML); ok && c.Status == rep.OK {
		seen := 0
		for _, g := range hr.GPUs {
			if g.UUID != "" {
				seen++
			}
		}
		n.Labels["nvidia.com/gpu.count"] = strconv.Itoa(seen)
	}
	return n
}

// hostFindings sharpens the host links with what only the agent reads: XIDs since boot, the
// driver's libraries and kernels, nouveau, the CDI spec and /dev/char links, containerd's
// config as it loads with its drop-ins.
func (w *world) hostFindings(d *Node, n *corev1.Node, hr *rep.Report, byKind map[string]*corev1.Pod) {
	link := func(name string) *Link {
		for i := range d.Links {
			if d.Links[i].Name == name {
				return &d.Links[i]
			}
		}
		return nil
	}
	fix := func(c rep.Check) string {
		f := strings.ReplaceAll(c.Remediation, "kubectl gpu prep --apply", "kubectl gpu prep "+n.Name+" --apply")
		return strings.ReplaceAll(f, "NODE", n.Name)
	}
	// set breaks (or warns) a link that is not already broken, from a check.
	set := func(l *Link, c rep.Check, st State, step remedy.Action) {
		if l == nil || l.State == Broken || l.State == Warn && st == Warn {
			return
		}
		*l = Link{Name: l.Name, State: st, Detail: c.Message, Fix: fix(c), Remedy: step}
	}
	get := func(id string) rep.Check { c, _ := hr.Get(id); return c }

	// Hardware: the GPU that is missing, by bus id, with what the kernel log says of it; then
	// XIDs since boot, classed by NVIDIA's catalog.
	if l := link(LinkHardware); l != nil && l.State == Broken && l.Remedy == remedy.Service && strings.Contains(l.Detail, "NVML sees") {
		if named := missingGPUs(hr); named != "" {
			l.Detail = strings.TrimSuffix(l.Detail, ": a GPU fell off the bus") + ": " + named
		}
	}
	if c := get(rep.CheckXID); c.Status == rep.OK && len(hr.XIDs) > 0 {
		if l := link(LinkHardware); l != nil && l.State == OK {
			l.Detail += "; " + c.Message + " (application faults: information)"
		}
	}
	if c := get(rep.CheckXID); c.Status == rep.Fail {
		set(link(LinkHardware), c, Broken, remedy.Service)
	} else if worst, ok := xid.Worst(hr.XIDs); ok && c.Status == rep.Warn {
		set(link(LinkHardware), c, Warn, worst.Action)
	}

	// Fabric Manager, wherever the driver comes from: without it an NVSwitch system's CUDA
	// does not start.
	if c := get(rep.CheckFabricManager); c.Status == rep.Fail {
		set(link(LinkDriver), c, Broken, remedy.Configure)
	}
	// Driver on the host (the operator's driver container brings its own).
	if byKind[swDriver] == nil {
		if c := get(rep.CheckNouveau); c.Status == rep.Fail {
			// nouveau holding the GPUs is the cause to fix first: it replaces a bare "no
			// driver", which installing a driver alone would not fix.
			if l := link(LinkDriver); l != nil && l.State == Broken && strings.HasPrefix(l.Detail, "no driver") {
				*l = Link{Name: LinkDriver, State: Broken, Remedy: remedy.Reboot, Detail: c.Message + "; and no NVIDIA driver is loaded",
					Fix: fix(c) + "; then install the driver (kubectl gpu prep " + n.Name + " --apply --install-driver --reboot, or the GPU Operator's driver)"}
			}
			set(link(LinkDriver), c, Broken, remedy.Reboot)
		}
		if c := get(rep.CheckDriverLibraries); c.Status == rep.Fail {
			set(link(LinkDriver), c, Broken, remedy.Reboot)
		}
		if c := get(rep.CheckDriverKernels); c.Status == rep.Warn {
			set(link(LinkDriver), c, Warn, remedy.Configure)
		}
	}

	// The plugin pod runs, but the kubelet has no socket of it: not registered (a kubelet
	// restart empties the device plugins' directory; the plugin registers again only when it
	// notices).
	if sw := link(LinkSoftware); sw != nil && sw.State == OK && get(rep.CheckKubeletPlugins).Status == rep.OK {
		for _, k := range []struct {
			kind, want, dir string
		}{{swDevicePlugin, "nvidia", rep.DevicePluginDir}, {swDRA, "gpu.nvidia.com", rep.PluginRegistryDir}} {
			p := byKind[k.kind]
			if p == nil || registered(hr.KubeletPlugins, k.dir, k.want) {
				continue
			}
			*sw = Link{Name: LinkSoftware, State: Broken, Remedy: remedy.Restart,
				Detail: fmt.Sprintf("the %s pod %s/%s runs but is not registered with the kubelet: no %s socket in %s", k.kind, p.Namespace, p.Name, k.want, k.dir),
				Fix:    "restart it: kubectl delete pod -n " + p.Namespace + " " + p.Name + " (its DaemonSet makes a new one, which registers)"}
			break
		}
	}

	// Toolkit and containerd on the host (the operator's toolkit container sets up both).
	if byKind[swToolkit] != nil {
		return
	}
	cdi := get(rep.CheckCDI)
	switch {
	case cdi.Status == rep.Fail:
		set(link(LinkToolkit), cdi, Broken, remedy.Configure)
	case cdi.Status == rep.Skipped && strings.HasPrefix(cdi.Message, rep.NoCDISpec) && hr.DriverVersion != "":
		if by := w.cdiUser(n, byKind); by != "" {
			c := rep.Check{Message: by + " hands GPUs out through CDI, but the host has " + rep.NoCDISpec + " in " + strings.Join(rep.CDISpecDirs, " or "),
				Remediation: "on the node: " + rep.CDIGenerate + " (the NVIDIA Container Toolkit's nvidia-cdi-refresh service does it at boot)"}
			if !hr.CDI {
				c.Message += ", and containerd's CRI plugin does not inject CDI devices (enable_cdi)"
				c.Remediation += "; set enable_cdi = true in containerd's CRI plugin and restart containerd"
			}
			set(link(LinkToolkit), c, Broken, remedy.Configure)
		}
	}
	if c := get(rep.CheckDevChar); c.Status == rep.Fail {
		set(link(LinkToolkit), c, Warn, remedy.Configure)
	}
	// The agent's reading of containerd names the cause (a drop-in not imported, one that
	// overrides the cgroup driver): it replaces the summary the annotations give.
	for _, id := range []string{rep.CheckContainerd, rep.CheckNvidiaRuntime, rep.CheckSystemdCgroup} {
		if c := get(id); c.Status == rep.Fail {
			if l := link(LinkContainerd); l.State != Broken || !strings.Contains(l.Detail, c.Message) {
				*l = Link{Name: LinkContainerd, State: Broken, Detail: c.Message, Fix: fix(c), Remedy: remedy.Configure}
			}
			break
		}
	}
	// What works now and not after the next restart of RKE2/K3s (a template edited since
	// it started, a static template without the runtime).
	for _, id := range []string{rep.CheckContainerd, rep.CheckNvidiaRuntime} {
		if c := get(id); c.Status == rep.Warn && hr.NvidiaRuntime {
			set(link(LinkContainerd), c, Warn, remedy.Configure)
		}
	}
}

// cdiUser names what hands the node's GPUs out through CDI ("" nothing): the DRA driver, or
// the device plugin in a CDI mode (DEVICE_LIST_STRATEGY cdi-annotations or cdi-cri).
func (w *world) cdiUser(n *corev1.Node, byKind map[string]*corev1.Pod) string {
	if w.dra[n.Name] > 0 || byKind[swDRA] != nil {
		return "the DRA driver"
	}
	if p := byKind[swDevicePlugin]; p != nil {
		for _, c := range p.Spec.Containers {
			for _, e := range c.Env {
				if e.Name == "DEVICE_LIST_STRATEGY" && strings.Contains(e.Value, "cdi") {
					return "the device plugin (DEVICE_LIST_STRATEGY=" + e.Value + ")"
				}
			}
		}
	}
	return ""
}

// registered tells whether a socket of the plugin is in the kubelet's directory.
func registered(sockets []string, dir, name string) bool {
	for _, s := range sockets {
		if strings.HasPrefix(s, dir+"/") && strings.Contains(s[len(dir)+1:], name) {
			return true
		}
	}
	return false
}

// missingGPUs names the GPUs on the PCI bus that NVML does not see (where NVML answered),
// else those a fallen-off-the-bus event names, each with its slot and serial where known and
// the kernel log's event for it ("" none named).
func missingGPUs(hr *rep.Report) string {
	var gone []rep.GPU
	if c, ok := hr.Get(rep.CheckNVML); ok && c.Status == rep.OK {
		for _, g := range hr.GPUs {
			if g.UUID == "" {
				gone = append(gone, g)
			}
		}
	}
	if len(gone) == 0 {
		for _, e := range hr.XIDs {
			if e.Action != remedy.Service {
				continue
			}
			g := rep.GPU{PCIAddress: e.PCI}
			for _, h := range hr.GPUs {
				if xid.SameGPU(h.PCIAddress, e.PCI) {
					g = h
				}
			}
			dup := false
			for _, o := range gone {
				dup = dup || xid.SameGPU(o.PCIAddress, g.PCIAddress)
			}
			if !dup {
				gone = append(gone, g)
			}
		}
	}
	parts := make([]string, 0, len(gone))
	for _, g := range gone {
		s := "GPU " + g.PCIAddress
		var about []string
		if g.Slot != "" {
			about = append(about, "slot "+g.Slot)
		}
		if g.Serial != "" {
			about = append(about, "serial "+g.Serial)
		}
		if len(about) > 0 {
			s += " (" + strings.Join(about, ", ") + ")"
		}
		s += " is missing"
		var why *xid.Event
		for i, e := range hr.XIDs {
			if xid.SameGPU(e.PCI, g.PCIAddress) && (why == nil || e.Action >= why.Action) {
				why = &hr.XIDs[i]
			}
		}
		if why != nil {
			name := fmt.Sprintf("XID %d", why.XID)
			if why.XID == 0 {
				name = "the kernel log"
			}
			s += ", " + name + " since boot: " + why.Message
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}
