package harness

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
)

// Least-privilege helpers: a ClusterRole set rule by rule, the authorizer waited for, a
// ServiceAccount's kubeconfig.

// SetRole creates or replaces the ClusterRole with rules.
func SetRole(t testing.TB, ctx context.Context, cs kubernetes.Interface, name string, rules []rbacv1.PolicyRule, user string) {
	t.Helper()
	roles := cs.RbacV1().ClusterRoles()
	cur, err := roles.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = roles.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{})
	} else if err == nil {
		cur.Rules = rules
		_, err = roles.Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	// The authorizer sees the change through its informer: wait until the first permission
	// of every rule is allowed.
	for _, r := range rules {
		WaitAccess(t, ctx, cs, user, r, true)
	}
}

// WaitAccess waits until the API server's authorizer allows (or denies) the rule's first
// verb on its first resource to user.
func WaitAccess(t testing.TB, ctx context.Context, cs kubernetes.Interface, user string, rule rbacv1.PolicyRule, allowed bool) {
	t.Helper()
	res, sub, _ := strings.Cut(rule.Resources[0], "/")
	for i := 0; ; i++ {
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: user, Groups: []string{"system:serviceaccounts", "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Verb: rule.Verbs[0], Group: rule.APIGroups[0], Resource: res, Subresource: sub, Namespace: "x"},
		}}
		got, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Allowed == allowed {
			return
		}
		if i > 100 {
			t.Fatalf("%s still %v for %s after 10 s", rule.Resources[0], got.Status.Allowed, user)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// SAKubeconfig writes a kubeconfig with a token of the ServiceAccount.
func SAKubeconfig(t testing.TB, ctx context.Context, c *localcluster.Cluster, ns, sa string) string {
	t.Helper()
	tok, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: c.Config.Host, CertificateAuthority: filepath.Join(c.Dir, "pki", "ca.crt")}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: sa}
	cfg.CurrentContext = "local"
	path := filepath.Join(t.TempDir(), sa+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// RoleUser is a ServiceAccount bound to one of docs/rbac's ClusterRoles.
type RoleUser struct {
	Role rbacv1.ClusterRole
	// Kubeconfig is the ServiceAccount's; User its name for the authorizer.
	Kubeconfig, User string
}

// BindDocRole reads docs/rbac/NAME.yaml and binds its ClusterRole (created by SetRole) to a
// ServiceAccount of namespace kubectl-gpu-rbac, all removed at the end of the test.
func BindDocRole(t testing.TB, ctx context.Context, c *localcluster.Cluster, name string) RoleUser {
	t.Helper()
	cs := c.Client
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "docs", "rbac", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var u RoleUser
	if err := yaml.UnmarshalStrict(b, &u.Role); err != nil {
		t.Fatal(err)
	}
	const saNS = "kubectl-gpu-rbac"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: saNS}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	sa := "kubectl-gpu-" + name
	if _, err := cs.CoreV1().ServiceAccounts(saNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: u.Role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: u.Role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: saNS}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), u.Role.Name, metav1.DeleteOptions{})
		_ = cs.RbacV1().ClusterRoles().Delete(context.Background(), u.Role.Name, metav1.DeleteOptions{})
	})
	u.Kubeconfig = SAKubeconfig(t, ctx, c, saNS, sa)
	u.User = "system:serviceaccount:" + saNS + ":" + sa
	return u
}
