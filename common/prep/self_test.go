package prep

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestSelfNode(t *testing.T) {
	nsFile := filepath.Join(t.TempDir(), "namespace")
	if err := os.WriteFile(nsFile, []byte("ops\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset(
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "runbook-job-x7k2p", Namespace: "ops"}, Spec: corev1.PodSpec{NodeName: "gpu-3"}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "runbook-job-x7k2p", Namespace: "default"}, Spec: corev1.PodSpec{NodeName: "gpu-9"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-3"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-5"}},
	)
	for _, tc := range []struct {
		name    string
		in      InCluster
		want    string
		wantErr string
	}{
		{"outside a cluster", InCluster{Hostname: "runbook-job-x7k2p", NamespaceFile: nsFile}, "", ""},
		{"a pod: its node, in its own namespace", InCluster{ServiceHost: "10.96.0.1", Hostname: "runbook-job-x7k2p", NamespaceFile: nsFile}, "gpu-3", ""},
		{"hostNetwork: the hostname is the node's", InCluster{ServiceHost: "10.96.0.1", Hostname: "gpu-5", NamespaceFile: nsFile}, "gpu-5", ""},
		{"a pod that cannot be found", InCluster{ServiceHost: "10.96.0.1", Hostname: "elsewhere", NamespaceFile: nsFile}, "", "pod ops/elsewhere"},
		{"no service account mount", InCluster{ServiceHost: "10.96.0.1", Hostname: "runbook-job-x7k2p", NamespaceFile: filepath.Join(t.TempDir(), "none")}, "", "no namespace file"},
		{"no hostname", InCluster{ServiceHost: "10.96.0.1", NamespaceFile: nsFile}, "", "no hostname"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SelfNode(context.Background(), cs, tc.in)
			if got != tc.want {
				t.Errorf("node %q, want %q", got, tc.want)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want one naming %q", err, tc.wantErr)
			}
		})
	}
}
