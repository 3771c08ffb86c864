package nodepod

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestEnsureNamespaceRaisesOwnLevel: verify made the tool's namespace restricted; prep needs
// privileged and raises it. A namespace the tool did not make is never relabelled, and a
// higher level is never lowered.
func TestEnsureNamespaceRaisesOwnLevel(t *testing.T) {
	ctx := context.Background()
	ns := func(name string, labels map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	cs := fake.NewClientset(
		ns("ours", map[string]string{LabelManagedBy: ManagedBy, psaEnforce: PSARestricted}),
		ns("theirs", map[string]string{psaEnforce: PSABaseline}),
		ns("ours-privileged", map[string]string{LabelManagedBy: ManagedBy, psaEnforce: PSAPrivileged}),
	)
	for _, tc := range []struct{ ns, psa, want string }{
		{"ours", PSAPrivileged, PSAPrivileged},
		{"theirs", PSAPrivileged, PSABaseline},
		{"ours-privileged", PSARestricted, PSAPrivileged},
	} {
		if err := EnsureNamespaceNoPods(ctx, cs, tc.ns, tc.psa); err != nil {
			t.Fatal(err)
		}
		got, _ := cs.CoreV1().Namespaces().Get(ctx, tc.ns, metav1.GetOptions{})
		if got.Labels[psaEnforce] != tc.want {
			t.Errorf("%s asked for %s: enforce %q, want %q", tc.ns, tc.psa, got.Labels[psaEnforce], tc.want)
		}
	}
}
