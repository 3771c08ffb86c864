package hostconfig

import rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"

// Flavour tells the Kubernetes distribution from the host's files.
func (h *Host) Flavour() rep.Flavour {
	switch {
	case h.Exists("/etc/rancher/rke2") || h.Exists("/var/lib/rancher/rke2/agent"):
		return rep.FlavourRKE2
	case h.Exists("/etc/rancher/k3s") || h.Exists("/var/lib/rancher/k3s/agent"):
		return rep.FlavourK3s
	case h.Exists("/etc/kubernetes/manifests/kube-apiserver.yaml") || h.Exists("/etc/kubernetes/kubelet.conf") || h.Exists("/var/lib/kubelet/kubeadm-flags.env"):
		return rep.FlavourKubeadm
	}
	return rep.FlavourUnknown
}

// ContainerdPaths are the containerd config files that matter for a flavour: the config
// containerd reads, and for RKE2/K3s the template they render it from (which is what must
// be edited: the rendered file is rewritten at every start).
type ContainerdPaths struct {
	Config string
	// Template is where RKE2/K3s look for a template ("" for kubeadm).
	Template string
	// Socket of containerd.
	Socket string
}

// Containerd returns the paths for the flavour. configVersion picks the RKE2/K3s template
// name: config-v3.toml.tmpl for containerd 2 (config version 3), config.toml.tmpl before.
func ContainerdFor(flavour rep.Flavour, configVersion int) ContainerdPaths {
	tmpl := "config.toml.tmpl"
	if configVersion >= 3 {
		tmpl = "config-v3.toml.tmpl"
	}
	switch flavour {
	case rep.FlavourRKE2:
		d := "/var/lib/rancher/rke2/agent/etc/containerd/"
		return ContainerdPaths{Config: d + "config.toml", Template: d + tmpl, Socket: "/run/k3s/containerd/containerd.sock"}
	case rep.FlavourK3s:
		d := "/var/lib/rancher/k3s/agent/etc/containerd/"
		return ContainerdPaths{Config: d + "config.toml", Template: d + tmpl, Socket: "/run/k3s/containerd/containerd.sock"}
	}
	return ContainerdPaths{Config: "/etc/containerd/config.toml", Socket: "/run/containerd/containerd.sock"}
}
