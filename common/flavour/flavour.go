// Package flavour tells which Kubernetes distribution runs a node, from what the node
// object says about itself. The node agent decides the same from the host's files; what it
// found is left on the node as an annotation and wins over these guesses.
package flavour

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// Flavour is a Kubernetes distribution (the report schema's type: the agent's findings
// and these guesses are one vocabulary).
type Flavour = rep.Flavour

// The flavours kubectl-gpu knows: the agent's, and the managed ones it can only tell from
// the node object.
const (
	EKS       Flavour = "eks"
	GKE       Flavour = "gke"
	AKS       Flavour = "aks"
	OpenShift Flavour = "openshift"
)

// AnnotationPrefix is the prefix of the node annotations `kubectl gpu prep` writes.
const AnnotationPrefix = rep.AnnotationPrefix

// Annotation is the node annotation holding the flavour the node agent found on the host.
const Annotation = rep.AnnotationFlavour

// Of returns the node's flavour.
func Of(n *corev1.Node) Flavour {
	if f := Flavour(n.Annotations[Annotation]); f != "" {
		return f
	}
	kv := n.Status.NodeInfo.KubeletVersion
	pid := n.Spec.ProviderID
	switch {
	case strings.Contains(kv, "+rke2"):
		return rep.FlavourRKE2
	case strings.Contains(kv, "+k3s"):
		return rep.FlavourK3s
	case has(n.Labels, "node.openshift.io/os_id") || strings.Contains(n.Status.NodeInfo.OSImage, "Red Hat Enterprise Linux CoreOS"):
		return OpenShift
	case strings.Contains(kv, "-eks-") || strings.HasPrefix(pid, "aws://") && has(n.Labels, "eks.amazonaws.com/nodegroup"):
		return EKS
	case strings.Contains(kv, "-gke.") || strings.HasPrefix(pid, "gce://") && has(n.Labels, "cloud.google.com/gke-nodepool"):
		return GKE
	case strings.HasPrefix(pid, "azure://") && has(n.Labels, "kubernetes.azure.com/cluster"):
		return AKS
	case has(n.Annotations, "kubeadm.alpha.kubernetes.io/cri-socket"):
		return rep.FlavourKubeadm
	}
	return rep.FlavourUnknown
}

func has(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}
