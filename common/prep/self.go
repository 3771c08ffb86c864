package prep

import (
	"context"
	"fmt"
	"os"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// InCluster is what a command running in a pod knows of itself.
type InCluster struct {
	// ServiceHost is $KUBERNETES_SERVICE_HOST: "" outside a cluster.
	ServiceHost string
	// Hostname is the pod's name, or with hostNetwork the node's.
	Hostname string
	// NamespaceFile holds the pod's namespace (the service account's mount).
	NamespaceFile string
}

// ThisProcess is the running command's InCluster.
func ThisProcess() InCluster {
	h, _ := os.Hostname()
	return InCluster{ServiceHost: os.Getenv("KUBERNETES_SERVICE_HOST"), Hostname: h,
		NamespaceFile: "/var/run/secrets/kubernetes.io/serviceaccount/namespace"}
}

// SelfNode is the node this command runs on when it runs in a pod, so that a roll drains it
// only when named: the node of the pod its hostname names in its namespace, or, for a pod
// with hostNetwork (whose hostname is the node's), the node of that name. "" outside a
// cluster; an error when it runs in a pod whose node cannot be told.
func SelfNode(ctx context.Context, cs kubernetes.Interface, in InCluster) (string, error) {
	if in.ServiceHost == "" {
		return "", nil
	}
	if in.Hostname == "" {
		return "", fmt.Errorf("this command runs in a pod (KUBERNETES_SERVICE_HOST is set) but has no hostname to find it by")
	}
	why := "no namespace file " + in.NamespaceFile
	if b, err := os.ReadFile(in.NamespaceFile); err == nil {
		ns := strings.TrimSpace(string(b))
		p, err := cs.CoreV1().Pods(ns).Get(ctx, in.Hostname, metav1.GetOptions{})
		if err == nil && p.Spec.NodeName != "" {
			return p.Spec.NodeName, nil
		}
		why = fmt.Sprintf("pod %s/%s: %v", ns, in.Hostname, err)
		if err == nil {
			why = fmt.Sprintf("pod %s/%s has no node", ns, in.Hostname)
		}
	}
	if _, err := cs.CoreV1().Nodes().Get(ctx, in.Hostname, metav1.GetOptions{}); err == nil {
		return in.Hostname, nil
	}
	return "", fmt.Errorf("this command runs in a pod (KUBERNETES_SERVICE_HOST is set) whose node cannot be told (%s)", why)
}
