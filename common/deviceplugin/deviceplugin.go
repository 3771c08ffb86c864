// Package deviceplugin installs, upgrades, reports and removes NVIDIA's device plugin (with
// GPU feature discovery) and, optionally, the DCGM exporter as Helm releases without the GPU
// Operator — the kubeadm runbook's other path — with chart values derived from what the GPU
// nodes have, through the same Helm SDK layer as the operator.
package deviceplugin

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// Charts, their repositories and known-good versions, and where they go.
const (
	ChartName          = "nvidia-device-plugin"
	DefaultRepo        = "https://nvidia.github.io/k8s-device-plugin"
	DefaultVersion     = "0.20.0"
	DCGMChartName      = "dcgm-exporter"
	DCGMRepo           = "https://nvidia.github.io/dcgm-exporter/helm-charts"
	DCGMVersion        = "4.8.2"
	DefaultNamespace   = "nvidia-device-plugin"
	DefaultReleaseName = "nvidia-device-plugin"
	DCGMReleaseName    = "dcgm-exporter"
	// RuntimeClassName is the RuntimeClass (and containerd handler) of the NVIDIA runtime.
	RuntimeClassName = "nvidia"
	// MonitoringGroupVersion is the Prometheus Operator's API a ServiceMonitor needs.
	MonitoringGroupVersion = "monitoring.coreos.com/v1"
)

// Source is the device plugin chart's source with its defaults filled in.
func Source(src helmrelease.ChartSource) helmrelease.ChartSource {
	src.Name, src.DefaultRepo = ChartName, DefaultRepo
	return src
}

// DCGMSource is the DCGM exporter chart's source with its defaults filled in.
func DCGMSource(src helmrelease.ChartSource) helmrelease.ChartSource {
	src.Name, src.DefaultRepo = DCGMChartName, DCGMRepo
	return src
}

// Sharing shares each GPU among pods, with the profiles `operator sharing` writes.
type Sharing struct {
	Strategy string `json:"strategy"`
	Replicas int    `json:"replicas"`
	Rename   bool   `json:"rename,omitempty"`
}

// Validate checks a sharing request.
func (s *Sharing) Validate() error {
	switch {
	case s == nil:
		return nil
	case s.Strategy != gpusoftware.SharingTimeSlicing && s.Strategy != gpusoftware.SharingMPS:
		return cliexit.Usagef("--sharing %q: use %s or %s", s.Strategy, gpusoftware.SharingTimeSlicing, gpusoftware.SharingMPS)
	case s.Replicas < 2:
		return cliexit.Usagef("--sharing %s needs --replicas of at least 2", s.Strategy)
	}
	return nil
}

// Facts are what the cluster says besides its nodes.
type Facts struct {
	// RuntimeClass: RuntimeClass nvidia exists.
	RuntimeClass bool
	// NFD names node-feature-discovery's worker DaemonSet when one already runs ("" none).
	NFD string
	// Monitoring: the API server serves monitoring.coreos.com/v1 (ServiceMonitor).
	Monitoring bool
}

// Options are the choices that shape the derived values.
type Options struct {
	GFD     bool
	DCGM    bool
	Sharing *Sharing
}

// Derivation is what the nodes and facts say the two charts' values should be.
type Derivation struct {
	DevicePlugin helmrelease.Derivation
	DCGM         helmrelease.Derivation
	// CreateRuntimeClass says why RuntimeClass nvidia is created at install ("": not).
	CreateRuntimeClass string
}

// GPUNodes returns the GPU nodes, by name.
func GPUNodes(nodes []corev1.Node) []*corev1.Node {
	var out []*corev1.Node
	for i := range nodes {
		if inventory.IsGPUNode(&nodes[i]) {
			out = append(out, &nodes[i])
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// The node labels the chart's default affinity schedules its pods on.
var selectingLabels = map[string]string{
	inventory.LabelPCIPresent:                        "true",
	"feature.node.kubernetes.io/cpu-model.vendor_id": "NVIDIA",
	inventory.LabelGPUPresent:                        "true",
}

func selected(n *corev1.Node) bool {
	for k, v := range selectingLabels {
		if n.Labels[k] == v {
			return true
		}
	}
	return false
}

// gpuAffinity is the device plugin chart's own affinity (v0.20.0), given to the DCGM
// exporter so that it runs where the device plugin does.
func gpuAffinity() map[string]any {
	term := func(k, v string) any {
		return map[string]any{"matchExpressions": []any{map[string]any{"key": k, "operator": "In", "values": []any{v}}}}
	}
	return map[string]any{"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{
		"nodeSelectorTerms": []any{term(inventory.LabelPCIPresent, "true"), term("feature.node.kubernetes.io/cpu-model.vendor_id", "NVIDIA"), term(inventory.LabelGPUPresent, "true")}}}}
}

func names(ns []*corev1.Node) string {
	var s []string
	for i, n := range ns {
		if i == 3 {
			s = append(s, fmt.Sprintf("and %d more", len(ns)-3))
			break
		}
		s = append(s, n.Name)
	}
	return strings.Join(s, ", ")
}

// toolkitCDI tells whether the toolkit version (prep's annotation, "1.17.4-1") ships
// nvidia-cdi-hook, which CDI specs generated by the device plugin call (1.16 on).
func toolkitCDI(v string) bool {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	return err1 == nil && err2 == nil && (major > 1 || major == 1 && minor >= 16)
}

// Derive computes both charts' values from the GPU nodes and the cluster's facts: a pure
// function of its inputs.
func Derive(nodes []corev1.Node, f Facts, o Options) Derivation {
	gpu := GPUNodes(nodes)
	var d Derivation
	dp, dc := &d.DevicePlugin, &d.DCGM
	if o.GFD {
		dp.Values = append(dp.Values, helmrelease.Derived{Key: "gfd.enabled", Value: true,
			Reason: "GPU feature discovery labels each GPU node with its GPUs' model, memory, MIG and CUDA versions (it brings node-feature-discovery); --gfd=false leaves it out"})
		if f.NFD != "" {
			dp.Values = append(dp.Values, helmrelease.Derived{Key: "nfd.enabled", Value: false,
				Reason: "node-feature-discovery already runs (DaemonSet " + f.NFD + "): the chart's own copy would be a second"})
		}
	} else {
		dp.Values = append(dp.Values, helmrelease.Derived{Key: "gfd.enabled", Value: false, Reason: "--gfd=false: no GPU feature discovery, no node-feature-discovery"})
	}
	// MIG.
	var mig []*corev1.Node
	for _, n := range gpu {
		if n.Annotations[rep.AnnotationMIG] == "enabled" || inventory.MIGEnabled(n) {
			mig = append(mig, n)
		}
	}
	if len(mig) > 0 {
		dp.Values = append(dp.Values, helmrelease.Derived{Key: "migStrategy", Value: "mixed",
			Reason: fmt.Sprintf("MIG is on for GPUs of %d GPU nodes (%s): each MIG profile is its own resource (nvidia.com/mig-1g.10gb, …), as the GPU Operator's default", len(mig), names(mig))})
	} else if len(gpu) > 0 {
		dp.Values = append(dp.Values, helmrelease.Derived{Key: "migStrategy", Value: "none", Reason: "no GPU node has MIG on (prep's NVML report, MIG resources, MIG labels)"})
	}

	// Sharing.
	if s := o.Sharing; s != nil {
		if s.Strategy == gpusoftware.SharingMPS && len(mig) > 0 {
			dp.Warnings = append(dp.Warnings, fmt.Sprintf("MPS cannot share GPUs split with MIG (%s): those nodes' plugins will fail to start", names(mig)))
		}
		profile := gpusoftware.ProfileName(s.Strategy, s.Replicas)
		b, _ := yaml.Marshal(gpusoftware.SharingConfig(s.Strategy, s.Replicas, s.Rename))
		dp.Values = append(dp.Values,
			helmrelease.Derived{Key: "config.map", Value: map[string]any{profile: string(b)},
				Reason: fmt.Sprintf("--sharing %s --replicas %d: the profile 'kubectl gpu operator sharing' writes, in the chart's own ConfigMap", s.Strategy, s.Replicas)},
			helmrelease.Derived{Key: "config.default", Value: profile, Reason: "every GPU node uses profile " + profile})
	}

	if len(gpu) == 0 {
		dp.Warnings = append(dp.Warnings, "no GPU node found: the chart's defaults are used; run 'kubectl gpu prep --all' to find GPU nodes")
		return d
	}
	all := len(gpu)

	// The nvidia runtime: where it is not containerd's default, the plugin's pods (and the
	// exporter's) select it by RuntimeClass to see the driver.
	var withRuntime, nvidiaDefault, rancher []*corev1.Node
	for _, n := range gpu {
		if n.Annotations[rep.AnnotationNvidiaRuntime] == "true" {
			withRuntime = append(withRuntime, n)
			if n.Annotations[rep.AnnotationDefaultRuntime] == RuntimeClassName {
				nvidiaDefault = append(nvidiaDefault, n)
			}
		}
		if f := flavour.Of(n); f == rep.FlavourRKE2 || f == rep.FlavourK3s {
			rancher = append(rancher, n)
		}
	}
	switch {
	case len(withRuntime) == all && len(nvidiaDefault) == all:
		// The default runtime is nvidia everywhere: no RuntimeClass needed.
	case len(withRuntime) == all:
		why := fmt.Sprintf("containerd on every GPU node (%d) has the nvidia runtime, not as its default: the pods select it to see the driver", all)
		if len(rancher) > 0 {
			why += fmt.Sprintf(" (RKE2/K3s on %s add it beside runc when they find the toolkit, never as the default)", names(rancher))
		}
		dp.Values = append(dp.Values, helmrelease.Derived{Key: "runtimeClassName", Value: RuntimeClassName, Reason: why})
		if o.DCGM {
			dc.Values = append(dc.Values, helmrelease.Derived{Key: "runtimeClassName", Value: RuntimeClassName, Reason: "as the device plugin's: DCGM needs the driver the nvidia runtime mounts"})
		}
		if !f.RuntimeClass {
			d.CreateRuntimeClass = "RuntimeClass nvidia (handler nvidia) does not exist: install creates it"
		}
	default:
		// Nodes prep reported on without the runtime (the others are named by the
		// prerequisites as not checked yet).
		var without []*corev1.Node
		for _, n := range gpu {
			if n.Annotations[rep.AnnotationNvidiaRuntime] == "false" {
				without = append(without, n)
			}
		}
		if len(without) == 0 {
			break
		}
		dp.Warnings = append(dp.Warnings, fmt.Sprintf("%d of %d GPU nodes have no nvidia runtime in containerd (%s): the device plugin cannot reach their driver; run 'kubectl gpu prep --apply' on them", len(without), all, names(without)))
	}

	// CDI: containerd injects the devices the plugin names (no nvidia runtime environment
	// variable involved).
	cdi := 0
	for _, n := range gpu {
		if n.Annotations[rep.AnnotationCDI] == "true" && toolkitCDI(n.Annotations[rep.AnnotationToolkit]) {
			cdi++
		}
	}
	if cdi == all {
		dp.Values = append(dp.Values, helmrelease.Derived{Key: "deviceListStrategy", Value: "cdi-cri",
			Reason: fmt.Sprintf("containerd on every GPU node (%d) injects CDI devices (enable_cdi) and the hosts' toolkit (1.16 or later) has nvidia-cdi-hook: GPUs are handed to containers as CDI devices through the CRI", all)})
	}

	// Node selection: the chart's affinity wants NFD's PCI label or nvidia.com/gpu.present.
	// The chart's own NFD (with GFD, none running yet) sets the PCI label; otherwise a node
	// without either gets nvidia.com/gpu.present=true.
	labelsComeFromNFD := o.GFD && f.NFD == ""
	for _, n := range gpu {
		if selected(n) || labelsComeFromNFD {
			continue
		}
		dp.NodeLabels = append(dp.NodeLabels, helmrelease.NodeLabel{Node: n.Name, Key: inventory.LabelGPUPresent, Value: "true",
			Reason: "the chart runs its pods on nodes labelled feature.node.kubernetes.io/pci-10de.present (NFD) or nvidia.com/gpu.present, and nothing labels this one"})
	}

	if o.DCGM {
		dc.Values = append(dc.Values, helmrelease.Derived{Key: "affinity", Value: gpuAffinity(),
			Reason: "on the GPU nodes only, with the device plugin chart's own node affinity: the chart's default runs everywhere, and DCGM fails where there is no GPU"})
		if f.Monitoring {
			dc.Values = append(dc.Values, helmrelease.Derived{Key: "serviceMonitor.enabled", Value: true,
				Reason: "the cluster serves " + MonitoringGroupVersion + " (the Prometheus Operator): a ServiceMonitor lets Prometheus scrape the exporter"})
		} else {
			dc.Values = append(dc.Values, helmrelease.Derived{Key: "serviceMonitor.enabled", Value: false,
				Reason: "the cluster does not serve " + MonitoringGroupVersion + ": the chart's default ServiceMonitor would fail the install; scrape the Service (port 9400) instead"})
		}
		var tainted []*corev1.Node
		for _, n := range gpu {
			for _, t := range n.Spec.Taints {
				if t.Key == string(inventory.ResourceGPU) && t.Effect == corev1.TaintEffectNoSchedule {
					tainted = append(tainted, n)
					break
				}
			}
		}
		if len(tainted) > 0 {
			dc.Values = append(dc.Values, helmrelease.Derived{Key: "tolerations", Value: []any{
				map[string]any{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
				map[string]any{"key": string(inventory.ResourceGPU), "operator": "Exists", "effect": "NoSchedule"},
			}, Reason: fmt.Sprintf("GPU nodes tainted %s:NoSchedule (%s): the exporter tolerates it as the device plugin does", inventory.ResourceGPU, names(tainted))})
		}
	}
	return d
}

// NodeProblem is why a GPU node cannot run the device plugin yet.
type NodeProblem struct {
	Node    string   `json:"node"`
	Reasons []string `json:"reasons"`
}

// Prerequisites checks each GPU node for what the device plugin needs from the host: a
// driver and the container toolkit with containerd's nvidia runtime, as prep reported them
// (its annotations; the operator's pre-installed label counts for the driver).
func Prerequisites(nodes []corev1.Node) []NodeProblem {
	var out []NodeProblem
	for _, n := range GPUNodes(nodes) {
		a := n.Annotations
		if a[rep.AnnotationReportedAt] == "" && a[rep.AnnotationDriver] == "" && n.Labels[inventory.LabelDeployDriver] != "pre-installed" {
			out = append(out, NodeProblem{Node: n.Name, Reasons: []string{"not checked yet: run 'kubectl gpu prep " + n.Name + "'"}})
			continue
		}
		var why []string
		if a[rep.AnnotationDriver] == "" && n.Labels[inventory.LabelDeployDriver] != "pre-installed" {
			why = append(why, "no host driver ('kubectl gpu prep "+n.Name+" --apply --install-driver')")
		}
		if a[rep.AnnotationToolkit] == "" {
			why = append(why, "no NVIDIA Container Toolkit ('kubectl gpu prep "+n.Name+" --apply --install-toolkit')")
		} else if a[rep.AnnotationNvidiaRuntime] != "true" {
			why = append(why, "containerd has no nvidia runtime ('kubectl gpu prep "+n.Name+" --apply')")
		}
		if len(why) > 0 {
			out = append(out, NodeProblem{Node: n.Name, Reasons: why})
		}
	}
	return out
}

// PrerequisitesError is an install refused for nodes that are not ready: exit 2.
type PrerequisitesError struct {
	Problems []NodeProblem
	GPUNodes int
}

func (e *PrerequisitesError) Error() string {
	first := e.Problems[0]
	more := ""
	if len(e.Problems) > 1 {
		more = fmt.Sprintf(" (and %d more nodes, listed above)", len(e.Problems)-1)
	}
	return fmt.Sprintf("%d of %d GPU nodes are not ready for the device plugin, nothing installed: %s: %s%s", len(e.Problems), e.GPUNodes, first.Node, strings.Join(first.Reasons, "; "), more)
}
