// Package operator installs, upgrades, reports and removes the NVIDIA GPU Operator through
// the Helm v3 SDK, with chart values derived from what the cluster's GPU nodes have.
package operator

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/flavour"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// Containerd locations of RKE2 and K3s, for the toolkit container. Sources: NVIDIA GPU
// Operator documentation "Installing on ... RKE2 / K3s" (toolkit.env CONTAINERD_SOCKET and,
// for K3s, CONTAINERD_CONFIG) and the RKE2/K3s advanced-options documentation (containerd
// socket /run/k3s/containerd/containerd.sock, rendered config under
// /var/lib/rancher/{rke2,k3s}/agent/etc/containerd/).
const (
	K3sContainerdSocket = "/run/k3s/containerd/containerd.sock"
	K3sContainerdConfig = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
)

// hostDriver tells whether the node runs a driver installed on the host.
func hostDriver(n *corev1.Node) bool {
	f, _ := rep.FactsFrom(n.Annotations)
	return f.DriverVersion != "" || n.Labels[inventory.LabelDeployDriver] == "pre-installed"
}

// hostToolkit tells whether the node has the container toolkit and the nvidia runtime.
func hostToolkit(n *corev1.Node) bool {
	f, _ := rep.FactsFrom(n.Annotations)
	return f.ToolkitVersion != "" && f.NvidiaRuntime
}

// Derive computes the values from the GPU nodes: a pure function of the node objects.
func Derive(nodes []corev1.Node) helmrelease.Derivation {
	var gpu []*corev1.Node
	for i := range nodes {
		if inventory.IsGPUNode(&nodes[i]) {
			gpu = append(gpu, &nodes[i])
		}
	}
	sort.Slice(gpu, func(i, j int) bool { return gpu[i].Name < gpu[j].Name })
	var d helmrelease.Derivation
	if len(gpu) == 0 {
		d.Warnings = append(d.Warnings, "no GPU node found: the chart's defaults are used; run 'kubectl gpu prep --all' to find GPU nodes")
		return d
	}
	var withDriver, withToolkit []string
	flavours := map[flavour.Flavour][]string{}
	for _, n := range gpu {
		if hostDriver(n) {
			withDriver = append(withDriver, n.Name)
		}
		if hostToolkit(n) {
			withToolkit = append(withToolkit, n.Name)
		}
		f := flavour.Of(n)
		flavours[f] = append(flavours[f], n.Name)
	}
	all := len(gpu)
	switch {
	case len(withDriver) == all:
		d.Values = append(d.Values, helmrelease.Derived{Key: "driver.enabled", Value: false,
			Reason: fmt.Sprintf("every GPU node (%d) runs a host driver (%s)", all, evidence(gpu, hostDriverEvidence))})
	case len(withDriver) > 0:
		d.Values = append(d.Values, helmrelease.Derived{Key: "driver.enabled", Value: true,
			Reason: fmt.Sprintf("%d of %d GPU nodes have no host driver; the operator's driver container serves them", all-len(withDriver), all)})
		for _, n := range gpu {
			if hostDriver(n) && n.Labels[inventory.LabelDeployDriver] != "false" && n.Labels[inventory.LabelDeployDriver] != "pre-installed" {
				d.NodeLabels = append(d.NodeLabels, helmrelease.NodeLabel{Node: n.Name, Key: inventory.LabelDeployDriver, Value: "false",
					Reason: "the node runs a host driver: the operator must not deploy its driver container there"})
			}
		}
	}
	toolkitOn := true
	if len(withToolkit) == all {
		toolkitOn = false
		d.Values = append(d.Values, helmrelease.Derived{Key: "toolkit.enabled", Value: false,
			Reason: fmt.Sprintf("every GPU node (%d) has the NVIDIA Container Toolkit and the nvidia runtime in containerd (found by kubectl gpu prep)", all)})
	}
	if toolkitOn {
		rke2, k3s := flavours[rep.FlavourRKE2], flavours[rep.FlavourK3s]
		switch {
		case len(rke2) > 0 && len(rke2) == all:
			d.Values = append(d.Values, helmrelease.Derived{Key: "toolkit.env", Value: []any{map[string]any{"name": "CONTAINERD_SOCKET", "value": K3sContainerdSocket}},
				Reason: "every GPU node runs RKE2: its embedded containerd listens on " + K3sContainerdSocket})
		case len(k3s) > 0 && len(k3s) == all:
			d.Values = append(d.Values, helmrelease.Derived{Key: "toolkit.env", Value: []any{
				map[string]any{"name": "CONTAINERD_CONFIG", "value": K3sContainerdConfig},
				map[string]any{"name": "CONTAINERD_SOCKET", "value": K3sContainerdSocket},
			}, Reason: "every GPU node runs K3s: the toolkit edits its rendered containerd config and uses its socket"})
		case len(rke2)+len(k3s) > 0:
			d.Warnings = append(d.Warnings, fmt.Sprintf("GPU nodes run different distributions (%s): one toolkit.env cannot fit all; set it per node pool or install the toolkit on the hosts", describeFlavours(flavours)))
		}
	}
	return d
}

func hostDriverEvidence(n *corev1.Node) string {
	if f, _ := rep.FactsFrom(n.Annotations); f.DriverVersion != "" {
		return n.Name + " " + f.DriverVersion
	}
	return n.Name + " pre-installed"
}

func evidence(nodes []*corev1.Node, f func(*corev1.Node) string) string {
	var s []string
	for i, n := range nodes {
		if i == 3 {
			s = append(s, fmt.Sprintf("and %d more", len(nodes)-3))
			break
		}
		s = append(s, f(n))
	}
	return strings.Join(s, ", ")
}

func describeFlavours(m map[flavour.Flavour][]string) string {
	var s []string
	for f, ns := range m {
		s = append(s, fmt.Sprintf("%s: %d", f, len(ns)))
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}
