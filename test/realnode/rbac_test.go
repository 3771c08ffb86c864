package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
		// doctor with its node agent: both roles bound (the node has no GPU: exit 1).
		{"doctor+doctor-agent", []string{"doctor", nodeName, "--image", agentImage, "-o", "json", "--timeout", "1m"}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.role, func(t *testing.T) {
			// One role, or several ("a+b") bound as one: the first's name, every rule.
			var role rbacv1.ClusterRole
			for i, name := range strings.Split(tc.role, "+") {
				b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "docs", "rbac", name+".yaml"))
				if err != nil {
					t.Fatal(err)
				}
				var r rbacv1.ClusterRole
				if err := yaml.UnmarshalStrict(b, &r); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					role.Name = r.Name
				}
				role.Rules = append(role.Rules, r.Rules...)
			}
			sa := "kubectl-gpu-" + strings.ReplaceAll(tc.role, "+", "-and-")
			if _, err := cs.CoreV1().ServiceAccounts(saNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
				Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: saNS}}}
			if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			kubeconfig := harness.SAKubeconfig(t, ctx, env.Cluster, saNS, sa)
			user := "system:serviceaccount:" + saNS + ":" + sa

			run := func() harness.Result {
				t.Helper()
				ns := fmt.Sprintf("kgpu-rbac-%s-%d", strings.SplitN(tc.role, "+", 2)[0], time.Now().UnixNano()%1e9)
				defer cs.CoreV1().Namespaces().Delete(context.WithoutCancel(ctx), ns, metav1.DeleteOptions{})
				return env.Kubectl(ctx, []string{"KUBECONFIG=" + kubeconfig}, append(append([]string{"gpu"}, tc.args...), "--namespace", ns)...)
			}

			harness.SetRole(t, ctx, env.Cluster.Client, role.Name, role.Rules, user)
			r := run()
			if r.Code != tc.code || !strings.Contains(r.Stdout, `"apiVersion"`) {
				t.Fatalf("with the whole role: exit %d, want %d\n%s%s", r.Code, tc.code, r.Stdout, r.Stderr)
			}
			for i, rule := range role.Rules {
				rest := append(append([]rbacv1.PolicyRule(nil), role.Rules[:i]...), role.Rules[i+1:]...)
				harness.SetRole(t, ctx, env.Cluster.Client, role.Name, rest, user)
				harness.WaitAccess(t, ctx, env.Cluster.Client, user, rule, false)
				r := run()
				lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
				res := rule.Resources[0]
				if r.Code != 2 || r.Stdout != "" || len(lines) != 1 || !strings.Contains(lines[0], "forbidden by RBAC") || !strings.Contains(lines[0], res) {
					t.Errorf("without %v on %s: exit %d, want 2 and one line naming %q\nstdout: %s\nstderr: %s", rule.Verbs, res, r.Code, res, r.Stdout, r.Stderr)
				}
			}
			harness.SetRole(t, ctx, env.Cluster.Client, role.Name, role.Rules, user)
			noneLeft(t, ctx)
		})
	}
}
