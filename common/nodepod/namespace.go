// Package nodepod holds what the commands that run pods on nodes share: the namespace the
// tool owns, the labels that mark its objects, and their clean-up.
package nodepod

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
)

// Labels on every object kubectl-gpu creates.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "kubectl-gpu"
	LabelComponent = "app.kubernetes.io/component"
	LabelNode      = "gpu.kubectl-gpu.io/node"
	LabelRun       = "gpu.kubectl-gpu.io/run"

	// DefaultNamespace is the namespace the tool owns.
	DefaultNamespace = "kubectl-gpu"
)

// Pod Security levels for the namespace label pod-security.kubernetes.io/enforce.
const (
	PSAPrivileged = "privileged"
	PSABaseline   = "baseline"
	PSARestricted = "restricted"
)

const (
	psaEnforce = "pod-security.kubernetes.io/enforce"
	psaWarn    = "pod-security.kubernetes.io/warn"
	psaAudit   = "pod-security.kubernetes.io/audit"
)

// psaRank orders the levels by what they allow; no label allows everything (privileged).
func psaRank(level string) int {
	switch level {
	case PSARestricted:
		return 0
	case PSABaseline:
		return 1
	}
	return 2
}

// Selector selects the objects of one component (such as "verify" or "prep").
func Selector(component string) string {
	return LabelManagedBy + "=" + ManagedBy + "," + LabelComponent + "=" + component
}

// EnsureNamespace creates ns when it does not exist, labelled as the tool's with the Pod
// Security level psa, and waits until its default service account exists (pods are refused
// before). An existing namespace the tool created whose Pod Security level is lower than psa
// (verify made it restricted, prep needs privileged) has its level raised; any other
// existing namespace is used as it is: when its label forbids what the pods need, the pod
// creation error names the label to set.
func EnsureNamespace(ctx context.Context, cs kubernetes.Interface, ns, psa string) error {
	return ensureNamespace(ctx, cs, ns, psa, true)
}

// EnsureNamespaceNoPods is EnsureNamespace for a caller that creates no pods itself (such as
// a Helm release whose controllers do): it does not wait for the service account.
func EnsureNamespaceNoPods(ctx context.Context, cs kubernetes.Interface, ns, psa string) error {
	return ensureNamespace(ctx, cs, ns, psa, false)
}

func ensureNamespace(ctx context.Context, cs kubernetes.Interface, ns, psa string, waitSA bool) error {
	cur, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err == nil {
		if cur.Labels[LabelManagedBy] != ManagedBy || psaRank(cur.Labels[psaEnforce]) >= psaRank(psa) {
			return nil
		}
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q,%q:%q,%q:%q}}}`, psaEnforce, psa, psaWarn, psa, psaAudit, psa)
		if _, err := cs.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return cluster.APIError(fmt.Sprintf("raise the Pod Security level of namespace %s to %s", ns, psa), err)
		}
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return cluster.APIError("get namespace "+ns, err)
	}
	obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns,
		Labels: map[string]string{
			LabelManagedBy: ManagedBy,
			psaEnforce:     psa,
			psaWarn:        psa,
			psaAudit:       psa,
		},
	}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return cluster.APIError("create namespace "+ns, err)
	}
	if !waitSA {
		return nil
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return cluster.APIError(fmt.Sprintf("wait for the default service account of namespace %s", ns), err)
	}
	return nil
}
