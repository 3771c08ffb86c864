package realnode

import (
	"context"
	"fmt"
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
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

// TestLeastPrivilege: each command run as a ServiceAccount bound to exactly its ClusterRole
// in docs/rbac succeeds (the same exit code as an admin's run: prep exits 1 here because the
// machine has no GPU); with any one rule of the role removed it fails with exit 2 and one
// line naming the missing permission. Every run uses a namespace that does not exist yet, so
// creating it is part of what the role must allow.
func TestLeastPrivilege(t *testing.T) {
	need(t)
	ctx := ctxT(t, 15*time.Minute)
	cs := env.Cluster.Client
	const saNS = "kubectl-gpu-rbac"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: saNS}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	cases := []struct {
		role string
		args []string
		code int
	}{
		{"nodes", []string{"nodes", "-o", "json"}, 0},
		{"verify", []string{"verify", nodeName, "--image", "localhost/kubectl-gpu-test/cuda-vectoradd-standin:pass", "--runtime-class", "nvidia", "-o", "json", "--timeout", "1m"}, 0},
		{"prep", []string{"prep", nodeName, "--image", agentImage, "-o", "json", "--timeout", "1m"}, 1},
		// No release in that namespace: the status says so and exits 1, after every read.
		{"operator-status", []string{"operator", "status", "-o", "json"}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.role, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "docs", "rbac", tc.role+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var role rbacv1.ClusterRole
			if err := yaml.UnmarshalStrict(b, &role); err != nil {
				t.Fatal(err)
			}
			sa := "kubectl-gpu-" + tc.role
			if _, err := cs.CoreV1().ServiceAccounts(saNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
				Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: saNS}}}
			if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			kubeconfig := saKubeconfig(t, ctx, saNS, sa)
			user := "system:serviceaccount:" + saNS + ":" + sa

			run := func() harness.Result {
				t.Helper()
				ns := fmt.Sprintf("kgpu-rbac-%s-%d", tc.role, time.Now().UnixNano()%1e9)
				defer cs.CoreV1().Namespaces().Delete(context.WithoutCancel(ctx), ns, metav1.DeleteOptions{})
				return env.Kubectl(ctx, []string{"KUBECONFIG=" + kubeconfig}, append(append([]string{"gpu"}, tc.args...), "--namespace", ns)...)
			}

			setRole(t, ctx, role.Name, role.Rules, user)
			r := run()
			if r.Code != tc.code || !strings.Contains(r.Stdout, `"apiVersion"`) {
				t.Fatalf("with the whole role: exit %d, want %d\n%s%s", r.Code, tc.code, r.Stdout, r.Stderr)
			}
			for i, rule := range role.Rules {
				rest := append(append([]rbacv1.PolicyRule(nil), role.Rules[:i]...), role.Rules[i+1:]...)
				setRole(t, ctx, role.Name, rest, user)
				waitAccess(t, ctx, user, rule, false)
				r := run()
				lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
				res := rule.Resources[0]
				if r.Code != 2 || r.Stdout != "" || len(lines) != 1 || !strings.Contains(lines[0], "forbidden by RBAC") || !strings.Contains(lines[0], res) {
					t.Errorf("without %v on %s: exit %d, want 2 and one line naming %q\nstdout: %s\nstderr: %s", rule.Verbs, res, r.Code, res, r.Stdout, r.Stderr)
				}
			}
			setRole(t, ctx, role.Name, role.Rules, user)
			noneLeft(t, ctx)
		})
	}
}

// setRole creates or replaces the ClusterRole with rules.
func setRole(t *testing.T, ctx context.Context, name string, rules []rbacv1.PolicyRule, user string) {
	t.Helper()
	roles := env.Cluster.Client.RbacV1().ClusterRoles()
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
		waitAccess(t, ctx, user, r, true)
	}
}

// waitAccess waits until the API server's authorizer allows (or denies) the rule's first
// verb on its first resource to user.
func waitAccess(t *testing.T, ctx context.Context, user string, rule rbacv1.PolicyRule, allowed bool) {
	t.Helper()
	res, sub, _ := strings.Cut(rule.Resources[0], "/")
	for i := 0; ; i++ {
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: user, Groups: []string{"system:serviceaccounts", "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Verb: rule.Verbs[0], Group: rule.APIGroups[0], Resource: res, Subresource: sub, Namespace: "x"},
		}}
		got, err := env.Cluster.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
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

// saKubeconfig writes a kubeconfig with a token of the ServiceAccount.
func saKubeconfig(t *testing.T, ctx context.Context, ns, sa string) string {
	t.Helper()
	tok, err := env.Cluster.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: env.Cluster.Config.Host, CertificateAuthority: filepath.Join(env.Cluster.Dir, "pki", "ca.crt")}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: sa}
	cfg.CurrentContext = "local"
	path := filepath.Join(t.TempDir(), sa+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
