package fault

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// clusterObjects lists what a command could have created anywhere: namespaces, pods, Jobs,
// secrets (Helm's release records), node annotations of ours.
func clusterObjects(t *testing.T, ctx context.Context) string {
	t.Helper()
	cs := env.Cluster.Client
	var l []string
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nss.Items {
		l = append(l, "ns/"+n.Name)
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		l = append(l, "pod/"+p.Namespace+"/"+p.Name)
	}
	jobs, err := cs.BatchV1().Jobs("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs.Items {
		l = append(l, "job/"+j.Namespace+"/"+j.Name)
	}
	secrets, err := cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		l = append(l, "secret/"+s.Namespace+"/"+s.Name)
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		for k := range n.Annotations {
			if strings.HasPrefix(k, "gpu.kubectl-gpu.io/") {
				l = append(l, "annotation/"+n.Name+"/"+k)
			}
		}
	}
	sort.Strings(l)
	return strings.Join(l, "\n")
}

func writeKubeconfig(t *testing.T, mutate func(*clientcmdapi.Config)) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(env.Cluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	mutate(cfg)
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBadInput: wrong input across the commands. Each case gets its exact exit code, one
// line on stderr naming the problem, nothing on stdout, and nothing created or changed in
// the cluster.
func TestBadInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	garbled := filepath.Join(dir, "garbled")
	if err := os.WriteFile(garbled, []byte("apiVersion: v1\nclusters: [this is: not a kubeconfig\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreachable := writeKubeconfig(t, func(c *clientcmdapi.Config) {
		for _, cl := range c.Clusters {
			cl.Server = "https://127.0.0.1:1"
		}
	})
	expired := writeKubeconfig(t, func(c *clientcmdapi.Config) {
		for _, a := range c.AuthInfos {
			a.ClientCertificate, a.ClientKey, a.Token = "", "", "expired-or-revoked-token"
		}
	})
	emptyContext := writeKubeconfig(t, func(c *clientcmdapi.Config) { c.CurrentContext = "" })
	chart := os.Getenv("KGPU_GPU_OPERATOR_CHART")

	cases := []struct {
		name  string
		kcfg  string // KUBECONFIG; "" = the cluster's
		args  []string
		code  int
		words string
		chart bool // needs the real chart
	}{
		{"no kubeconfig", filepath.Join(dir, "missing"), []string{"nodes"}, 2, "", false},
		{"garbled kubeconfig", garbled, []string{"nodes"}, 2, "kubeconfig", false},
		{"no current context", emptyContext, []string{"nodes"}, 2, "", false},
		{"wrong context", "", []string{"nodes", "--context", "nope"}, 2, `"nope"`, false},
		{"unreachable: nodes", unreachable, []string{"nodes"}, 2, "unreachable", false},
		{"unreachable: verify", unreachable, []string{"verify"}, 2, "unreachable", false},
		{"unreachable: prep", unreachable, []string{"prep"}, 2, "unreachable", false},
		{"expired credentials: nodes", expired, []string{"nodes"}, 2, "credentials", false},
		{"expired credentials: verify", expired, []string{"verify"}, 2, "credentials", false},
		{"expired credentials: operator status", expired, []string{"operator", "status"}, 2, "credentials", false},
		{"RBAC: nodes", "", []string{"nodes", "--as", "nobody"}, 2, "forbidden by RBAC", false},
		{"RBAC: verify", "", []string{"verify", "--as", "nobody"}, 2, "forbidden by RBAC", false},
		{"RBAC: prep", "", []string{"prep", "--as", "nobody"}, 2, "forbidden by RBAC", false},
		{"RBAC: operator status", "", []string{"operator", "status", "--as", "nobody"}, 2, "forbidden", false},
		{"unknown node: nodes", "", []string{"nodes", "no-such-node"}, 2, "no-such-node", false},
		{"unknown node: verify", "", []string{"verify", "no-such-node"}, 2, "no-such-node", false},
		{"unknown node: prep", "", []string{"prep", "no-such-node"}, 2, "no-such-node", false},
		{"empty selector: verify", "", []string{"verify", "-l", "nothing=here"}, 2, "nothing=here", false},
		{"empty selector: prep", "", []string{"prep", "-l", "nothing=here"}, 2, "nothing=here", false},
		{"bad selector", "", []string{"nodes", "-l", "a=(b"}, 2, "selector", false},
		{"bad -o: nodes", "", []string{"nodes", "-o", "xml"}, 2, "xml", false},
		{"bad -o: verify", "", []string{"verify", "-o", "xml"}, 2, "xml", false},
		{"bad -o: prep", "", []string{"prep", "-o", "xml"}, 2, "xml", false},
		{"bad -o: version", "", []string{"version", "-o", "xml"}, 2, "xml", false},
		{"bad -o: operator status", "", []string{"operator", "status", "-o", "xml"}, 2, "xml", false},
		{"bad --gpus", "", []string{"verify", "--gpus", "-3"}, 2, "--gpus", false},
		{"bad --timeout", "", []string{"verify", "--timeout", "0s"}, 2, "--timeout", false},
		{"--yes without --apply", "", []string{"prep", "--yes"}, 2, "--apply", false},
		{"unknown flag", "", []string{"nodes", "--frobnicate"}, 2, "frobnicate", false},
		{"unknown command", "", []string{"frobnicate"}, 2, "frobnicate", false},
		{"missing chart", "", []string{"operator", "install", "--chart", filepath.Join(dir, "no-chart.tgz")}, 2, "no-chart.tgz", false},
		{"bad --set", "", []string{"operator", "install", "--chart", chart, "--set", "driver.enabled"}, 2, "--set", true},
		{"bad --set list index", "", []string{"operator", "install", "--chart", chart, "--set", "toolkit.env[99999999]=x"}, 2, "", true},
		{"unreadable -f", "", []string{"operator", "install", "--chart", chart, "-f", filepath.Join(dir, "none.yaml")}, 2, "none.yaml", true},
		{"wrong chart version", "", []string{"operator", "install", "--chart", chart, "--version", "v0.0.1"}, 2, "v0.0.1", true},
	}
	before := clusterObjects(t, ctx)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.chart && chart == "" {
				t.Skip("KGPU_GPU_OPERATOR_CHART is not set (.ci/run sets it from ../shared/testdata/charts)")
			}
			cmd := env.Command(ctx, append([]string{"gpu"}, tc.args...)...)
			if tc.kcfg != "" {
				cmd.Env = append(cmd.Env, "KUBECONFIG="+tc.kcfg)
			}
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			_ = cmd.Run()
			code := cmd.ProcessState.ExitCode()
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if code != tc.code || stdout.String() != "" || len(lines) != 1 || !strings.HasPrefix(lines[0], "error: ") || !strings.Contains(lines[0], tc.words) {
				t.Fatalf("exit %d (want %d), want one stderr line naming %q and no stdout\nstdout: %s\nstderr: %s", code, tc.code, tc.words, stdout.String(), stderr.String())
			}
			t.Logf("%s", lines[0])
			if after := clusterObjects(t, ctx); after != before {
				t.Fatalf("the cluster changed:\n%s", diffLines(before, after))
			}
		})
	}
}

func diffLines(a, b string) string {
	in := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		in[l]--
	}
	for _, l := range strings.Split(b, "\n") {
		in[l]++
	}
	var d []string
	for l, n := range in {
		if n != 0 {
			d = append(d, fmt.Sprintf("%+d %s", n, l))
		}
	}
	sort.Strings(d)
	return strings.Join(d, "\n")
}
