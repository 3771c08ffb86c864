package flavour

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

func TestOf(t *testing.T) {
	node := func(kubelet, provider string, labels, ann map[string]string) *corev1.Node {
		return &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: labels, Annotations: ann},
			Spec:       corev1.NodeSpec{ProviderID: provider},
			Status:     corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KubeletVersion: kubelet}},
		}
	}
	tests := []struct {
		name string
		node *corev1.Node
		want Flavour
	}{
		{"rke2", node("v1.31.4+rke2r1", "", nil, nil), rep.FlavourRKE2},
		{"k3s", node("v1.31.4+k3s1", "k3s://n", nil, nil), rep.FlavourK3s},
		{"eks by version", node("v1.30.4-eks-a737599", "aws:///us-east-1a/i-1", nil, nil), EKS},
		{"eks by label", node("v1.30.4", "aws:///us-east-1a/i-1", map[string]string{"eks.amazonaws.com/nodegroup": "gpu"}, nil), EKS},
		{"plain aws is not eks", node("v1.30.4", "aws:///us-east-1a/i-1", nil, nil), rep.FlavourUnknown},
		{"gke", node("v1.30.5-gke.1014001", "gce://p/z/n", nil, nil), GKE},
		{"aks", node("v1.30.3", "azure:///subscriptions/x", map[string]string{"kubernetes.azure.com/cluster": "mc"}, nil), AKS},
		{"openshift", node("v1.29.8+f10c92d", "", map[string]string{"node.openshift.io/os_id": "rhcos"}, nil), OpenShift},
		{"kubeadm", node("v1.36.3", "", nil, map[string]string{"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock"}), rep.FlavourKubeadm},
		{"unknown", node("v1.36.3", "", nil, nil), rep.FlavourUnknown},
		{"prep annotation wins", node("v1.36.3+k3s1", "", nil, map[string]string{Annotation: "rke2"}), rep.FlavourRKE2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Of(tt.node); got != tt.want {
				t.Fatalf("Of() = %q, want %q", got, tt.want)
			}
		})
	}
}
