package up

// What the nodes will say once the host step ran (the values are derived from them), and the
// decisions the plan shows.
import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// Expected returns the nodes as the host step will leave them, for the values to be
// derived from: each planned node carries the annotations prep leaves after the change
// (its plan report's, with what the planned installs and the containerd change bring), and
// a node with GPUs on its PCI bus counts as a GPU node.
func Expected(nodes []corev1.Node, plans map[string]*rep.Report, driverBranch string) []corev1.Node {
	out := make([]corev1.Node, len(nodes))
	for i := range nodes {
		n := *nodes[i].DeepCopy()
		r := plans[n.Name]
		if r == nil {
			out[i] = n
			continue
		}
		after := *r
		for _, ch := range r.Changes {
			switch ch.Check {
			case rep.CheckDriver:
				// The driver the change installs, replacing any other branch's.
				if to := rep.DriverTarget(ch.Packages, driverBranch); to != "" {
					after.DriverVersion = strings.TrimPrefix(to, "branch ")
				}
			case rep.CheckToolkit:
				after.ToolkitVersion = packageVersion(ch.Packages, "nvidia-container-toolkit", "latest")
				after.NvidiaRuntime = true // prep configures containerd's runtime after the install
			case rep.CheckNvidiaRuntime:
				after.NvidiaRuntime = true
			}
		}
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		if len(r.GPUs) > 0 {
			// GPUs on its PCI bus: a GPU node, whether or not a label says so yet (GPU feature
			// discovery labels it once the GPU software runs).
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels["nvidia.com/gpu.present"] = "true"
		}
		for k, v := range prep.Annotations(&after, time.Time{}) {
			if s, ok := v.(string); ok {
				n.Annotations[k] = s
			} else {
				delete(n.Annotations, k)
			}
		}
		out[i] = n
	}
	return out
}

// packageVersion is the version of the first package whose name starts with prefix, or
// fallback.
func packageVersion(pkgs []rep.Package, prefix, fallback string) string {
	for _, p := range pkgs {
		if strings.HasPrefix(p.Name, prefix) && p.Version != "" {
			return p.Version
		}
	}
	return fallback
}

// decisions are the ties between the steps that follow from the request and the nodes.
func decisions(req Request, pp *prep.Plan, plans map[string]*rep.Report) []Decision {
	var out []Decision
	installs := func(check string) []string {
		var ns []string
		for _, n := range pp.Nodes {
			if r := plans[n]; r != nil {
				for _, c := range r.Changes {
					if c.Check == check {
						ns = append(ns, n)
						break
					}
				}
			}
		}
		return ns
	}
	if d := installs(rep.CheckDriver); len(d) > 0 {
		what := "the GPU Operator's driver container is off (driver.enabled=false)"
		if req.Stack == StackDevicePlugin {
			what = "the device plugin uses the host's driver"
		}
		out = append(out, Decision{Decision: what, Reason: fmt.Sprintf("--host-driver installs the driver on %s", report.Count(len(d), "node"))})
	} else if req.Prep.Install.DriverBranch != "" {
		out = append(out, Decision{Decision: "no driver is installed", Reason: "--host-driver: every GPU node already has a driver"})
	}
	if t := installs(rep.CheckToolkit); len(t) > 0 {
		what := "the GPU Operator's toolkit container is off (toolkit.enabled=false)"
		if req.Stack == StackDevicePlugin {
			what = "the device plugin's pods run with the host's toolkit"
		}
		out = append(out, Decision{Decision: what, Reason: fmt.Sprintf("--host-toolkit installs the NVIDIA Container Toolkit and containerd's nvidia runtime on %s", report.Count(len(t), "node"))})
	}
	if len(pp.Roll) > 0 {
		mu := 1
		if req.Prep.Roll != nil {
			mu = max(req.Prep.Roll.MaxUnavailable, 1)
		}
		out = append(out, Decision{Decision: fmt.Sprintf("%s cordoned, drained, rebooted and uncordoned, at most %d at a time", report.Count(len(pp.Roll), "node"), mu),
			Reason: "their changes take effect only after a reboot (a driver, the nouveau blacklist), or an earlier roll stopped on them"})
	}
	if req.Prep.RestartRuntime {
		if r := installs(rep.CheckContainerd); len(r) > 0 || len(installs(rep.CheckNvidiaRuntime)) > 0 || len(installs(rep.CheckSystemdCgroup)) > 0 {
			out = append(out, Decision{Decision: "containerd (rke2 / k3s) is restarted where its config changes", Reason: "the runtime reads its config only when it starts; running containers keep running"})
		}
	}
	flavours := map[string][]string{}
	for _, n := range pp.Nodes {
		if r := plans[n]; r != nil && (r.Flavour == rep.FlavourRKE2 || r.Flavour == rep.FlavourK3s) {
			flavours[string(r.Flavour)] = append(flavours[string(r.Flavour)], n)
		}
	}
	keys := make([]string, 0, len(flavours))
	for k := range flavours {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, f := range keys {
		out = append(out, Decision{Decision: "containerd's config is changed through " + f + "'s template, and the GPU software uses " + f + "'s containerd socket",
			Reason: fmt.Sprintf("%s run %s, which renders containerd's config from its template at start", strings.Join(flavours[f], ", "), f)})
	}
	return out
}
