package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/up"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/simnodes"
)

// BenchmarkUp100: `kubectl gpu up` (its library entry points, in process, to count their API
// requests) over 100 simulated nodes whose change needs a reboot, with the real GPU Operator
// chart, against the same steps one after the other as the commands run them, in the same
// run: prep --apply --reboot, operator install then its ready wait, verify. Both roll 10
// nodes at a time (the reboot simulated as in BenchmarkRoll100), install with
// nfd.enabled=false (kwok would run NFD's worker on every node of the cluster), and wait
// for ClusterPolicy, which simnodes.PlayOperator marks ready. Between runs the nodes need
// their reboot again and the release and up's record are removed (not timed).
// Goal: ≤ 1.05×. Requests are the clientset's (Helm's own client is not counted).
func BenchmarkUp100(b *testing.B) { benchUp(b, false) }

// BenchmarkUpUpgrade100: day two — the release deployed, up moves it (a new value) and rolls
// the 100 nodes canary first (one node, then the others 10 at a time), each node verified
// while still cordoned before its uncordon, then verifies every node; against the commands an
// admin runs for the same canary-first upgrade one after the other: prep --apply --reboot on
// the canary, verify it, prep --apply --reboot on the others, verify them, operator upgrade
// and its ready wait, verify every node. up verifies each node in its slot (100 CUDA sample
// pods more than the commands' two runs over the waves). Between runs the nodes need their
// reboot again and up's record is removed (not timed); the release stays, each run moving it
// to a new value. Goal: ≤ 1.05×.
func BenchmarkUpUpgrade100(b *testing.B) { benchUp(b, true) }

func benchUp(b *testing.B, dayTwo bool) {
	const n, slots = 100, 10
	chart := os.Getenv("KGPU_GPU_OPERATOR_CHART")
	if chart == "" {
		b.Skip("KGPU_GPU_OPERATOR_CHART is not set")
	}
	if n > Nodes {
		b.Skipf("cluster has %d nodes", Nodes)
	}
	ctx := context.Background()
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	sim, err := simnodes.SimulateRoll(wctx, env.Cluster, 2*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	if err := simnodes.PlayOperator(wctx, env.Cluster); err != nil {
		b.Fatal(err)
	}
	setOutcomes(b)
	nodes := benchNodes(n)
	flags := cluster.NewConfigFlags()
	flags.KubeConfig = &env.Cluster.Kubeconfig
	getter := cluster.NewGetter(flags)
	dyn, err := dynamic.NewForConfig(env.Cluster.Config)
	if err != nil {
		b.Fatal(err)
	}
	helm, err := op.NewClient(getter, op.DefaultNamespace, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	user := map[string]any{"nfd": map[string]any{"enabled": false}}
	roll := &prep.RollOptions{MaxUnavailable: slots, RebootTimeout: 5 * time.Minute, DrainTimeout: time.Minute}
	if dayTwo {
		roll.Canary = up.DefaultCanary
	}
	// move makes each day-two run an upgrade of the release: a label of its DaemonSets.
	move := func(run int) {
		user["daemonsets"] = map[string]any{"labels": map[string]any{"bench-run": fmt.Sprint(run)}}
	}
	prepReq := prep.Request{Namespace: nodepod.DefaultNamespace, Names: nodes, Image: "agent:bench", Timeout: 5 * time.Minute, Apply: true, Roll: roll}
	verifyReq := verify.Request{Namespace: nodepod.DefaultNamespace, Names: nodes, Image: verify.DefaultImage, Timeout: 5 * time.Minute}
	install := helmrelease.InstallRequest{ReleaseName: op.DefaultReleaseName, Timeout: 5 * time.Minute, AtomicDefault: true}
	installRelease := func() {
		ch, doc, err := helm.Values(ctx, op.ValuesRequest{Source: helmrelease.ChartSource{Chart: chart}, Derive: true, User: user})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := helm.Install(ctx, ch, doc, install); err != nil {
			b.Fatal(err)
		}
		if _, err := helm.WaitReady(ctx, op.DefaultReleaseName, install.Timeout); err != nil {
			b.Fatal(err)
		}
	}
	verifyNodes := func(cs kubernetes.Interface, names []string) {
		vr := verifyReq
		vr.Names = names
		plan, err := verify.Prepare(ctx, cs, &vr)
		if err != nil {
			b.Fatal(err)
		}
		v, err := verify.Run(ctx, cs, &vr, plan)
		if err != nil || v.Summary.Passed != len(names) {
			b.Fatalf("verify: %v %+v", err, v.Summary)
		}
	}
	prepNodes := func(cs kubernetes.Interface, names []string) {
		pr := prepReq
		pr.Names = names
		r, err := prep.Run(ctx, cs, &pr)
		if err != nil || len(r.Roll) != len(names) || r.Summary.Ready != len(names) {
			first := ""
			for _, it := range r.Items {
				if !it.Ready() {
					first = fmt.Sprintf("%s: %s %s", it.Node, it.Error, it.Hint)
					break
				}
			}
			b.Fatalf("prep: %v; %d rolled, %d of %d ready; first not ready %s", err, len(r.Roll), r.Summary.Ready, r.Summary.Nodes, first)
		}
	}
	run := 0
	if dayTwo {
		helm.CS = env.Cluster.Client
		move(run)
		installRelease()
	}
	reset := func() {
		sim.Reset()
		if dayTwo {
			run++
			move(run)
		} else if _, err := helm.Uninstall(ctx, op.DefaultReleaseName, 5*time.Minute, false); err != nil && !isNotInstalled(err) {
			b.Fatal(err)
		}
		_ = env.Cluster.Client.CoreV1().ConfigMaps(nodepod.DefaultNamespace).Delete(ctx, up.RecordName, metav1.DeleteOptions{})
		waitJobsGone(b)
	}
	steps := func() (time.Duration, int64) {
		cs, ct := countingClient(b)
		helm.CS = cs
		t0 := time.Now()
		if dayTwo {
			prepNodes(cs, nodes[:roll.Canary])
			verifyNodes(cs, nodes[:roll.Canary])
			prepNodes(cs, nodes[roll.Canary:])
			verifyNodes(cs, nodes[roll.Canary:])
		} else {
			prepNodes(cs, nodes)
		}
		installRelease()
		verifyNodes(cs, nodes)
		return time.Since(t0), ct.n.Load()
	}
	ours := func() (time.Duration, int64) {
		cs, ct := countingClient(b)
		helm.CS = cs
		req := up.Request{Names: nodes, Stack: up.StackOperator, Prep: prepReq, Verify: verifyReq, Install: install,
			Operator: op.ValuesRequest{Source: helmrelease.ChartSource{Chart: chart}, User: user}}
		req.Prep.Names, req.Verify.Names = nil, nil
		if dayTwo {
			req.Canary = roll.Canary
		}
		c := up.Clients{CS: cs, Dynamic: dyn, Release: helm}
		t0 := time.Now()
		p, err := up.MakePlan(ctx, c, req)
		if err != nil {
			b.Fatal(err)
		}
		if dayTwo && (!p.ProveRolled || len(p.Canary) != roll.Canary || p.Releases[0].Action != up.ActionUpgrade) {
			b.Fatalf("up's plan: prove %v, canary %v, release %s; want a day-two upgrade", p.ProveRolled, p.Canary, p.Releases[0].Action)
		}
		r, err := up.Run(ctx, c, req, p)
		if err != nil || r.Summary.Verified != n {
			b.Fatalf("up: %v %+v", err, r)
		}
		return time.Since(t0), ct.n.Load()
	}
	var tOurs, tSteps time.Duration
	var rOurs, rSteps int64
	for i := 0; i < b.N; i++ {
		reset()
		s, sr := steps()
		reset()
		u, ur := ours()
		tSteps += s
		tOurs += u
		rSteps += sr
		rOurs += ur
		b.Logf("run %d: up %s (%d requests), the steps one after the other %s (%d requests): %.3f×", i, u.Round(time.Millisecond), ur, s.Round(time.Millisecond), sr, float64(u)/float64(s))
	}
	nf := float64(b.N)
	b.ReportMetric(tOurs.Seconds()/nf, "up-s/op")
	b.ReportMetric(tSteps.Seconds()/nf, "steps-s/op")
	b.ReportMetric(float64(tOurs)/float64(tSteps), "ratio")
	b.ReportMetric(float64(rOurs)/nf/n, "up-requests/node")
	b.ReportMetric(float64(rSteps)/nf/n, "steps-requests/node")
	reset()
	if dayTwo {
		if _, err := helm.Uninstall(ctx, op.DefaultReleaseName, 5*time.Minute, false); err != nil {
			b.Fatal(err)
		}
	}
}

func isNotInstalled(err error) bool {
	return strings.Contains(err.Error(), "not found") || strings.Contains(err.Error(), "no release")
}
