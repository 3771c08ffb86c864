// Package roll tests `kubectl gpu prep --apply --reboot` on the local control plane: the
// cordon, kubectl drain's rules through the real eviction API and disruption controller,
// the Jobs, the resume annotations and the slots are real; the nodes are kwok's, their node
// agent reports and their reboots simulated (hack/testenv/simnodes RollSim: a nouveau blacklist
// that needs a reboot; NotReady, then a new boot ID and Ready).
package roll

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/localcluster"
	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/simnodes"
	"github.com/kubectl-gpu/kubectl-gpu/test/harness"
)

var (
	env *harness.Env
	sim *simnodes.RollSim
)

const apps = "apps"

func TestMain(m *testing.M) {
	os.Exit(harness.MainWith(m, &env, func(ctx context.Context, e *harness.Env) (string, error) {
		if _, err := e.Cluster.AddNodes(ctx, localcluster.NodeSpec{Profile: "a100", Prefix: "roll", Count: 6}); err != nil {
			return "", err
		}
		var err error
		sim, err = simnodes.SimulateRoll(context.Background(), e.Cluster, 2*time.Second)
		return "", err
	}))
}

func rollNodes(n ...int) []string {
	var out []string
	for _, i := range n {
		out = append(out, fmt.Sprintf("roll-%d", i))
	}
	return out
}

// workloads: a Deployment of 4 under a PodDisruptionBudget of 3 on the roll nodes, a
// DaemonSet, a pod with emptyDir data (roll-1) and a bare pod (roll-2).
func workloads(t *testing.T, ctx context.Context) {
	t.Helper()
	cs := env.Cluster.Client
	_, _ = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: apps}}, metav1.CreateOptions{})
	tol := []corev1.Toleration{{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule, Key: "kwok.x-k8s.io/node"}}
	onRoll := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: rollNodes(0, 1, 2, 3, 4, 5)}}}}}}}
	pod := func(labels map[string]string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
			Tolerations: tol, Affinity: onRoll, Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}}}
	}
	web := map[string]string{"app": "web"}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cs.AppsV1().Deployments(apps).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](4), Selector: &metav1.LabelSelector{MatchLabels: web}, Template: pod(web)}}, metav1.CreateOptions{}))
	must(cs.PolicyV1().PodDisruptionBudgets(apps).Create(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: policyv1.PodDisruptionBudgetSpec{
		MinAvailable: ptr.To(intstr.FromInt32(3)), Selector: &metav1.LabelSelector{MatchLabels: web}}}, metav1.CreateOptions{}))
	ds := map[string]string{"app": "node-exporter"}
	must(cs.AppsV1().DaemonSets(apps).Create(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "node-exporter"}, Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: ds}, Template: pod(ds)}}, metav1.CreateOptions{}))
	cache := map[string]string{"app": "cache"}
	ct := pod(cache)
	ct.Spec.Affinity = nil
	ct.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "roll-1"}
	ct.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	must(cs.AppsV1().Deployments(apps).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "cache"}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: cache}, Template: ct}}, metav1.CreateOptions{}))
	bare := pod(nil)
	bare.Spec.Affinity = nil
	bare.Spec.NodeName = "roll-2"
	must(cs.CoreV1().Pods(apps).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare"}, Spec: bare.Spec}, metav1.CreateOptions{}))
	// Everything running before the roll.
	deadline := time.Now().Add(90 * time.Second)
	for {
		pods, err := cs.CoreV1().Pods(apps).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running >= 4+6+1+1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of the workloads' pods run", running)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// observer watches nodes and the web pods for the whole test and records what must never
// happen: more roll nodes cordoned at once than allowed, fewer healthy web pods than the
// budget, a node's steps out of order or uncordoned before a new boot.
type observer struct {
	mu          sync.Mutex
	maxOut      int
	minHealthy  int
	phases      map[string][]prep.Phase
	bootAtDone  map[string]string
	bootBefore  map[string]string
	uncordonBad []string
	stop        context.CancelFunc
	done        sync.WaitGroup
}

func observe(t *testing.T, nodes []string) *observer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	o := &observer{minHealthy: 1 << 30, phases: map[string][]prep.Phase{}, bootAtDone: map[string]string{}, bootBefore: map[string]string{}, stop: cancel}
	cs := env.Cluster.Client
	want := map[string]bool{}
	for _, n := range nodes {
		want[n] = true
	}
	nw, err := cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pw, err := cs.CoreV1().Pods(apps).Watch(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	cordoned := map[string]bool{}
	healthy := map[string]bool{}
	o.done.Add(2)
	go func() {
		defer o.done.Done()
		for e := range nw.ResultChan() {
			n, ok := e.Object.(*corev1.Node)
			if !ok || !want[n.Name] {
				continue
			}
			o.mu.Lock()
			if _, seen := o.bootBefore[n.Name]; !seen {
				o.bootBefore[n.Name] = n.Status.NodeInfo.BootID
			}
			was := cordoned[n.Name]
			cordoned[n.Name] = n.Spec.Unschedulable
			out := 0
			for _, c := range cordoned {
				if c {
					out++
				}
			}
			o.maxOut = max(o.maxOut, out)
			st := prep.ReadRollState(n)
			if ph := o.phases[n.Name]; st.Phase != "" && (len(ph) == 0 || ph[len(ph)-1] != st.Phase) {
				o.phases[n.Name] = append(ph, st.Phase)
			}
			if was && !n.Spec.Unschedulable {
				if st.Phase != prep.PhaseDone || n.Status.NodeInfo.BootID == o.bootBefore[n.Name] {
					o.uncordonBad = append(o.uncordonBad, fmt.Sprintf("%s uncordoned at phase %q, boot %q", n.Name, st.Phase, n.Status.NodeInfo.BootID))
				}
				o.bootBefore[n.Name] = n.Status.NodeInfo.BootID
			}
			o.mu.Unlock()
		}
	}()
	go func() {
		defer o.done.Done()
		started := false
		for e := range pw.ResultChan() {
			p, ok := e.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			o.mu.Lock()
			healthy[p.Name] = e.Type != watch.Deleted && p.DeletionTimestamp == nil && podReady(p)
			n := 0
			for _, h := range healthy {
				if h {
					n++
				}
			}
			if n >= 4 {
				started = true
			}
			if started {
				o.minHealthy = min(o.minHealthy, n)
			}
			o.mu.Unlock()
		}
	}()
	return o
}

func (o *observer) close() { o.stop(); o.done.Wait() }

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (o *observer) check(t *testing.T, maxOut int) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	t.Logf("observed: at most %d nodes out, at least %d of 4 web pods healthy, steps %v", o.maxOut, o.minHealthy, o.phases)
	if o.maxOut > maxOut {
		t.Errorf("%d roll nodes were out at once, --max-unavailable %d", o.maxOut, maxOut)
	}
	if o.minHealthy < 3 {
		t.Errorf("the PodDisruptionBudget (3 of 4 web pods) was broken: %d healthy at one point", o.minHealthy)
	}
	for _, b := range o.uncordonBad {
		t.Error(b)
	}
	order := map[prep.Phase]int{}
	for i, p := range prep.Phases {
		order[p] = i
	}
	for n, ph := range o.phases {
		for i := 1; i < len(ph); i++ {
			if order[ph[i]] < order[ph[i-1]] && ph[i] != prep.PhaseCordoned {
				t.Errorf("%s: steps out of order: %v", n, ph)
			}
		}
	}
}

func nodeState(t *testing.T, name string) (*corev1.Node, prep.RollState) {
	t.Helper()
	n, err := env.Cluster.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n, prep.ReadRollState(n)
}

func noPrepJobs(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		jobs, _ := env.Cluster.Client.BatchV1().Jobs(nodepod.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: nodepod.Selector(prep.Component)})
		pods, _ := env.Cluster.Client.CoreV1().Pods(nodepod.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: nodepod.Selector(prep.Component)})
		if jobs != nil && pods != nil && len(jobs.Items) == 0 && len(pods.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("prep Jobs or pods left: %d, %d", len(jobs.Items), len(pods.Items))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func rollReport(t *testing.T, stdout string) prep.Report {
	t.Helper()
	var r prep.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("not a report: %v\n%s", err, stdout)
	}
	return r
}

// TestRoll: the drain refuses a node with emptyDir data, the roll stops there leaving it
// cordoned and the nodes after it untouched; with kubectl's flags the rerun resumes it and
// rolls the rest. Budget, slots and order hold throughout.
func TestRoll(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	workloads(t, ctx)
	nodes := rollNodes(0, 1, 2, 3)
	obs := observe(t, nodes)
	defer obs.close()
	dsBefore := dsPods(t, ctx)

	args := append([]string{"prep"}, nodes...)
	args = append(args, "--apply", "--yes", "--reboot", "--max-unavailable", "2", "--drain-timeout", "90s", "-o", "json")
	r := env.Gpu(ctx, args...)
	if r.Code != 1 {
		t.Fatalf("first roll: exit %d, want 1 (roll-1's emptyDir pod refused)\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	rep := rollReport(t, r.Stdout)
	byNode := map[string]prep.NodeRoll{}
	for _, rl := range rep.Roll {
		byNode[rl.Node] = rl
	}
	if rl := byNode["roll-1"]; !strings.Contains(rl.Error, "--delete-emptydir-data") || rl.Phase != prep.PhaseCordoned || !strings.Contains(rl.Hint, "resume") {
		t.Errorf("roll-1: %+v; want a drain refusal naming --delete-emptydir-data, left cordoned", rl)
	}
	if rl := byNode["roll-0"]; rl.Phase != prep.PhaseDone {
		t.Errorf("roll-0 (in flight beside roll-1): %+v, want done", rl)
	}
	for _, n := range rollNodes(2, 3) {
		if rl := byNode[n]; rl.Phase != "" {
			t.Errorf("%s was started after roll-1 failed: %+v", n, rl)
		}
		if node, st := nodeState(t, n); node.Spec.Unschedulable || st.Phase != "" {
			t.Errorf("%s touched: unschedulable %v, state %+v", n, node.Spec.Unschedulable, st)
		}
	}
	if node, st := nodeState(t, "roll-1"); !node.Spec.Unschedulable || st.Phase != prep.PhaseCordoned || st.Error == "" {
		t.Errorf("roll-1: unschedulable %v, state %+v; want cordoned with the reason", node.Spec.Unschedulable, st)
	}
	noPrepJobs(t)

	// The rerun with kubectl's flags resumes roll-1 and rolls roll-2 (bare pod: --force)
	// and roll-3; roll-0 is done and not rolled again.
	args = append(args[:len(args)-2], "--delete-emptydir-data", "--force", "-o", "json")
	r = env.Gpu(ctx, args...)
	if r.Code != 0 {
		t.Fatalf("resumed roll: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	rep = rollReport(t, r.Stdout)
	rolled := map[string]prep.NodeRoll{}
	for _, rl := range rep.Roll {
		rolled[rl.Node] = rl
	}
	if _, again := rolled["roll-0"]; again {
		t.Error("roll-0 rolled again")
	}
	if rolled["roll-1"].ResumedFrom != prep.PhaseCordoned {
		t.Errorf("roll-1 did not resume after cordoned: %+v", rolled["roll-1"])
	}
	for _, n := range nodes {
		node, st := nodeState(t, n)
		if node.Spec.Unschedulable || st.Phase != prep.PhaseDone || sim.Reboots(n) != 1 {
			t.Errorf("%s: unschedulable %v, state %+v, rebooted %d times; want uncordoned, done, once", n, node.Spec.Unschedulable, st, sim.Reboots(n))
		}
	}
	if _, err := env.Cluster.Client.CoreV1().Pods(apps).Get(ctx, "bare", metav1.GetOptions{}); err == nil {
		t.Error("the bare pod was not deleted with --force")
	}
	for uid, node := range dsBefore {
		if after := dsPods(t, ctx); after[uid] != node {
			t.Errorf("DaemonSet pod %s on %s was evicted", uid, node)
		}
	}
	obs.close()
	obs.check(t, 2)
	noPrepJobs(t)
}

func dsPods(t *testing.T, ctx context.Context) map[string]string {
	pods, err := env.Cluster.Client.CoreV1().Pods(apps).List(ctx, metav1.ListOptions{LabelSelector: "app=node-exporter"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, p := range pods.Items {
		if strings.HasPrefix(p.Spec.NodeName, "roll-") {
			out[string(p.UID)] = p.Spec.NodeName
		}
	}
	return out
}

// TestRollStopsAtFailure: a node that comes back not ready stops the roll there, cordoned
// with the reason; once fixed, the rerun resumes it without a second reboot.
func TestRollStopsAtFailure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sim.FailAfterReboot("roll-4", true)
	args := []string{"prep", "roll-4", "roll-5", "--apply", "--yes", "--reboot", "-o", "json"}
	r := env.Gpu(ctx, args...)
	if r.Code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if node, st := nodeState(t, "roll-4"); !node.Spec.Unschedulable || st.Phase != prep.PhaseRebooted || !strings.Contains(st.Error, "not ready") {
		t.Errorf("roll-4: unschedulable %v, state %+v; want cordoned after rebooted, with the reason", node.Spec.Unschedulable, st)
	}
	if node, st := nodeState(t, "roll-5"); node.Spec.Unschedulable || st.Phase != "" {
		t.Errorf("roll-5 started after roll-4 failed: %+v", st)
	}
	noPrepJobs(t)
	sim.FailAfterReboot("roll-4", false)
	if r := env.Gpu(ctx, args...); r.Code != 0 {
		t.Fatalf("resume: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, n := range []string{"roll-4", "roll-5"} {
		if node, st := nodeState(t, n); node.Spec.Unschedulable || st.Phase != prep.PhaseDone || sim.Reboots(n) != 1 {
			t.Errorf("%s: unschedulable %v, %+v, %d reboots; want done after one reboot", n, node.Spec.Unschedulable, st, sim.Reboots(n))
		}
	}
	noPrepJobs(t)
}

// TestRollInterrupted: Ctrl-C at random points of a roll; each rerun goes on from where the
// nodes stand; in the end every node was rebooted exactly once and nothing is left.
func TestRollInterrupted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	sim.Reset()
	nodes := rollNodes(0, 1, 2, 3)
	obs := observe(t, nodes)
	defer obs.close()
	args := append(append([]string{"gpu", "prep"}, nodes...), "--apply", "--yes", "--reboot", "--max-unavailable", "2", "--delete-emptydir-data", "--force")
	for i := 0; i < 4; i++ {
		cmd := env.Command(ctx, args...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(500+rand.IntN(6000)) * time.Millisecond
		time.Sleep(delay)
		_ = cmd.Process.Signal(os.Interrupt)
		err := cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
			// A SIGINT before kubectl has handed over to the plugin ends kubectl itself, by
			// the signal (a shell shows 130): nothing of the roll has started.
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGINT {
				code = 130
				t.Logf("interrupt %d ended kubectl before the plugin ran", i)
			}
		}
		t.Logf("interrupt %d after %s: exit %d", i, delay, code)
		if code == 130 && stdout.Len() > 0 {
			t.Errorf("exit 130 with a report on stdout: %q", stdout.String())
		}
		if code != 130 && code != 0 {
			t.Fatalf("interrupted roll: exit %d", code)
		}
		noPrepJobs(t)
		if n := outNow(t, nodes); n > 2 {
			t.Errorf("%d nodes out after the interrupt", n)
		}
		// In a pipe too, the last lines name each node the roll left cordoned and how to
		// go on.
		if code == 130 {
			for _, n := range nodes {
				if node, st := nodeState(t, n); node.Spec.Unschedulable && st.Phase != "" && st.Phase != prep.PhaseDone &&
					!strings.Contains(stderr.String(), "node "+n+" left cordoned") {
					t.Errorf("%s was left cordoned at %s, and the interrupted run's output does not say so:\n%s", n, st.Phase, stderr.String())
				}
			}
		}
	}
	r := env.Gpu(ctx, args[1:]...)
	if r.Code != 0 {
		t.Fatalf("final run: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for _, n := range nodes {
		node, st := nodeState(t, n)
		if node.Spec.Unschedulable || st.Phase != prep.PhaseDone || sim.Reboots(n) != 1 {
			t.Errorf("%s: unschedulable %v, %+v, %d reboots; want done after exactly one reboot", n, node.Spec.Unschedulable, st, sim.Reboots(n))
		}
	}
	obs.close()
	obs.check(t, 2)
	noPrepJobs(t)
}

func outNow(t *testing.T, nodes []string) int {
	n := 0
	for _, name := range nodes {
		if node, _ := nodeState(t, name); node.Spec.Unschedulable {
			n++
		}
	}
	return n
}

// TestRollRefusals: bad input and a control-plane node not named: one line, exit 2,
// nothing cordoned.
func TestRollRefusals(t *testing.T) {
	ctx := context.Background()
	cs := env.Cluster.Client
	patch := []byte(`{"metadata":{"labels":{"node-role.kubernetes.io/control-plane":""}}}`)
	if _, err := cs.CoreV1().Nodes().Patch(ctx, "roll-5", "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	defer cs.CoreV1().Nodes().Patch(ctx, "roll-5", "application/merge-patch+json", []byte(`{"metadata":{"labels":{"node-role.kubernetes.io/control-plane":null}}}`), metav1.PatchOptions{})
	sim.Reset()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"prep", "roll-0", "--reboot"}, "only go with --apply"},
		{[]string{"prep", "roll-0", "--install-driver"}, "only go with --apply"},
		{[]string{"prep", "roll-0", "--apply", "--reboot", "--max-unavailable", "0"}, "--max-unavailable must be at least 1"},
		{[]string{"prep", "roll-0", "--apply", "--max-unavailable", "2"}, "only go with --reboot"},
		{[]string{"prep", "roll-0", "--apply", "--install-driver=latest"}, `driver "latest" is not a branch number`},
		{[]string{"prep", "roll-0", "--apply", "--install-toolkit=1.17"}, `toolkit version "1.17" is not a version`},
		{[]string{"prep", "roll-0", "--apply", "--install-toolkit", "--package-repo", "mirror.local/nvidia"}, "is not an http(s) URL"},
		{[]string{"prep", "roll-0", "--apply", "--install-toolkit", "--package-key", "/no/such/key"}, "--package-key"},
		{[]string{"prep", "-l", "node-role.kubernetes.io/control-plane", "--apply", "--yes", "--reboot"}, "roll-5 is a control-plane node"},
	} {
		r := env.Gpu(ctx, tc.args...)
		lines := strings.Split(strings.TrimRight(r.Stderr, "\n"), "\n")
		last := lines[len(lines)-1]
		if r.Code != 2 || r.Stdout != "" || !strings.Contains(last, tc.want) {
			t.Errorf("%v: exit %d stdout %q stderr %q; want exit 2 and %q", tc.args, r.Code, r.Stdout, r.Stderr, tc.want)
		}
	}
	for _, n := range rollNodes(0, 5) {
		if node, st := nodeState(t, n); node.Spec.Unschedulable || st.Unfinished() {
			t.Errorf("%s changed by a refused run: %+v", n, st)
		}
	}
	noPrepJobs(t)
}

// TestRollLeastPrivilege: a user bound to exactly docs/rbac/prep-reboot.yaml rolls a node
// carrying a Deployment's pod, a DaemonSet's pod and a bare pod.
func TestRollLeastPrivilege(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := env.Cluster.Client
	b, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "docs", "rbac", "prep-reboot.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(b, &role); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer cs.RbacV1().ClusterRoles().Delete(context.WithoutCancel(ctx), role.Name, metav1.DeleteOptions{})
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: rbacv1.GroupName, Name: "gpu-roller"}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer cs.RbacV1().ClusterRoleBindings().Delete(context.WithoutCancel(ctx), role.Name, metav1.DeleteOptions{})
	sim.Reset()
	_, _ = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: apps}}, metav1.CreateOptions{})
	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bare-rbac"}, Spec: corev1.PodSpec{NodeName: "roll-3",
		Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}}}
	if _, err := cs.CoreV1().Pods(apps).Create(ctx, bare, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := env.Gpu(ctx, "prep", "roll-3", "--apply", "--yes", "--reboot", "--force", "--as", "gpu-roller", "-o", "json")
	if r.Code != 0 {
		t.Fatalf("as a user with docs/rbac/prep-reboot.yaml: exit %d\n%s", r.Code, r.Stderr)
	}
	if node, st := nodeState(t, "roll-3"); node.Spec.Unschedulable || st.Phase != prep.PhaseDone {
		t.Errorf("roll-3: %+v", st)
	}
	noPrepJobs(t)
}

const blockedNS = "blocked"

// blockedWorkload: a Deployment of 3 pods, one on each of roll-0..2 (a topology spread over
// those nodes), in namespace ns, under a PodDisruptionBudget with spec budget that allows no
// eviction while the 3 are all there is (maxUnavailable: 0, or minAvailable: 3).
func blockedWorkload(t *testing.T, ctx context.Context, ns string, budget policyv1.PodDisruptionBudgetSpec) {
	t.Helper()
	cs := env.Cluster.Client
	_, _ = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	labels := map[string]string{"app": "gpu-web"}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
		Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule, Key: "kwok.x-k8s.io/node"}},
		Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: rollNodes(0, 1, 2)}}}}}}},
		TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
			WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
		Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}}}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "gpu-web"}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](3), Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	budget.Selector = &metav1.LabelSelector{MatchLabels: labels}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "gpu-web-pdb"},
		Spec: budget}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBudget(t, ctx, ns, 3, 0)
}

// waitBudget waits for the budget's status to show healthy pods and allowed disruptions.
func waitBudget(t *testing.T, ctx context.Context, ns string, healthy, allowed int32) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		pdb, err := env.Cluster.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "gpu-web-pdb", metav1.GetOptions{})
		if err == nil && pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.CurrentHealthy == healthy && pdb.Status.DisruptionsAllowed == allowed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("budget not at %d healthy, %d allowed: %+v %v", healthy, allowed, pdb, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// refusedEvictions is the API server's own count of evictions it refused with 429 (its
// apiserver_request_total metric), so the test counts what reached the server.
func refusedEvictions(t *testing.T, ctx context.Context) int {
	t.Helper()
	b, err := env.Cluster.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "apiserver_request_total{") && strings.Contains(l, `code="429"`) &&
			strings.Contains(l, `resource="pods"`) && strings.Contains(l, `subresource="eviction"`) {
			var v float64
			if _, err := fmt.Sscan(l[strings.LastIndex(l, " ")+1:], &v); err == nil {
				n += int(v)
			}
		}
	}
	return n
}

// TestRollBlockedByBudget: a budget that allows no eviction stops the roll at the first
// node with the budget named (what it needs and has, the pods it holds, what to do) in the
// report and while it waits; the drain asks the API server no more than once per pod per
// EvictRetryDelay; the nodes not reached are "not started". Relaxed while a second run
// waits, the drain goes on within one retry interval and the roll finishes.
func TestRollBlockedByBudget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cs := env.Cluster.Client
	// TestRoll's budget (3 of 4 web pods) is not this test's: without it, every refused
	// eviction the server counts is this budget's.
	_ = cs.PolicyV1().PodDisruptionBudgets(apps).Delete(ctx, "web", metav1.DeleteOptions{})
	sim.Reset()
	blockedWorkload(t, ctx, blockedNS, policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(0))})
	defer cs.CoreV1().Namespaces().Delete(context.WithoutCancel(ctx), blockedNS, metav1.DeleteOptions{})
	nodes := rollNodes(0, 1, 2)
	const timeout = 12 * time.Second
	args := append(append([]string{"prep"}, nodes...), "--apply", "--yes", "--reboot", "--max-unavailable", "1",
		"--delete-emptydir-data", "--force", "--drain-timeout", timeout.String(), "-o", "json")

	before := refusedEvictions(t, ctx)
	r := env.Gpu(ctx, args...)
	refused := refusedEvictions(t, ctx) - before
	t.Logf("the API server refused %d evictions during the %s drain", refused, timeout)
	if r.Code != 1 {
		t.Fatalf("blocked roll: exit %d, want 1\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	rp := rollReport(t, r.Stdout)
	var first prep.NodeRoll
	for _, rl := range rp.Roll {
		if rl.Error != "" {
			first = rl
		}
	}
	if first.Node == "" || len(first.BlockedBy) != 1 {
		t.Fatalf("no node stopped by a budget: %+v\n%s", rp.Roll, r.Stderr)
	}
	b := first.BlockedBy[0]
	if b.Name != blockedNS+"/gpu-web-pdb" || b.Needs != 3 || b.Has != 3 || len(b.Pods) != 1 || !strings.HasPrefix(b.Pods[0], blockedNS+"/gpu-web-") || b.MaxUnavailable != "0" {
		t.Errorf("budget %+v; want blocked/gpu-web-pdb needing 3, having 3, holding one gpu-web pod, maxUnavailable 0", b)
	}
	for _, want := range []string{"PodDisruptionBudget blocked/gpu-web-pdb (needs 3 healthy pods, has 3)", b.Pods[0], "--drain-timeout 12s ran out"} {
		if !strings.Contains(first.Error, want) {
			t.Errorf("error %q lacks %q", first.Error, want)
		}
	}
	if strings.Contains(first.Hint, "--delete-emptydir-data") || !strings.Contains(first.Hint, "kubectl edit pdb gpu-web-pdb -n blocked") || !strings.Contains(first.Hint, "resume") {
		t.Errorf("hint %q: want the budget's fix and the resume, not kubectl drain's flags", first.Hint)
	}
	if rp.Summary.NotStarted != 2 || rp.Summary.NotReady != 1 || rp.Summary.Ready != 0 {
		t.Errorf("summary %+v; want 1 not ready, 2 not started", rp.Summary)
	}
	// kubectl drain's pace: one eviction per pod per EvictRetryDelay, and one more.
	if limit := int(timeout/prep.EvictRetryDelay) + 1 + 1; refused > limit || refused == 0 {
		t.Errorf("the API server refused %d evictions in %s; want between 1 and %d (one per %s, plus one)", refused, timeout, limit, prep.EvictRetryDelay)
	}
	// In a pipe, the wait is said as plain lines, no more than one per node every few seconds.
	waits := 0
	for _, l := range strings.Split(r.Stderr, "\n") {
		if strings.HasPrefix(l, first.Node+": draining") {
			waits++
		}
	}
	if !strings.Contains(r.Stderr, " pod(s) left, blocked by PodDisruptionBudget blocked/gpu-web-pdb (needs 3 healthy pods, has 3) holds "+b.Pods[0]) ||
		waits > int(timeout/report.PlainEvery)+1 {
		t.Errorf("%d wait lines; want the budget named, at most one per %s:\n%s", waits, report.PlainEvery, r.Stderr)
	}
	for _, it := range rp.Items {
		if it.Node != first.Node && !it.NotStarted {
			t.Errorf("%s: %+v; want not started", it.Node, it)
		}
	}
	if node, st := nodeState(t, first.Node); !node.Spec.Unschedulable || st.Phase != prep.PhaseCordoned {
		t.Errorf("%s: unschedulable %v, %+v; want left cordoned", first.Node, node.Spec.Unschedulable, st)
	}
	noPrepJobs(t)

	// Ctrl-C while the drain waits: exit 130 at once, no report, no node counted done.
	args[len(args)-3] = "2m"
	cmd := env.Command(ctx, append([]string{"gpu"}, args...)...)
	var out, errOut harness.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); !strings.Contains(errOut.String(), "blocked by PodDisruptionBudget"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the run never said it was blocked:\n%s", errOut.String())
		}
	}
	_ = cmd.Process.Signal(os.Interrupt)
	sent := time.Now()
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 || out.String() != "" {
		t.Errorf("interrupted while blocked: %v, stdout %q; want exit 130 and nothing on stdout", err, out.String())
	}
	// The helper's retry sleeps EvictRetryDelay; the roll does not wait for it.
	if d := time.Since(sent); d > prep.EvictRetryDelay*4/5 {
		t.Errorf("exit %s after Ctrl-C; the drain's wait must not hold it", d.Round(time.Millisecond))
	} else {
		t.Logf("exit %s after Ctrl-C", d.Round(time.Millisecond))
	}
	if !strings.Contains(errOut.String(), "roll: 0/3 nodes done") || strings.Contains(errOut.String(), "roll: 1/3 nodes done") {
		t.Errorf("after Ctrl-C the roll must count no node done:\n%s", errOut.String())
	}
	noPrepJobs(t)

	// The rerun waits on the budget; relaxed meanwhile, the drain goes on within one retry
	// interval and the roll finishes.
	cmd = env.Command(ctx, append([]string{"gpu"}, args...)...)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	stderr, perr := cmd.StderrPipe()
	if perr != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(perr)
	}
	blocked := make(chan struct{})
	var errText strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			errText.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "blocked by PodDisruptionBudget") {
				once.Do(func() { close(blocked) })
			}
		}
	}()
	select {
	case <-blocked:
	case <-time.After(time.Minute):
		t.Fatal("the rerun never said it was blocked")
	}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(blockedNS).Patch(ctx, "gpu-web-pdb", "application/merge-patch+json",
		[]byte(`{"spec":{"maxUnavailable":1}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBudget(t, ctx, blockedNS, 3, 1)
	allowed := time.Now()
	evictedAt := waitPodGone(t, ctx, b.Pods[0])
	// One retry interval, and the eviction's own round trip. A changed budget spec is refused,
	// until the disruption controller has observed it, with the API server's own Retry-After of
	// 10 s (kubernetes pkg/registry/core/pod/storage/eviction.go), which client-go honours as
	// kubectl does: an eviction sent in that window waits the server's interval, not ours.
	const serverRetryAfter = 10 * time.Second
	if d := evictedAt.Sub(allowed); d > max(prep.EvictRetryDelay, serverRetryAfter)+3*time.Second {
		t.Errorf("the pod went %s after the budget allowed it; want within one retry interval (%s, or the server's %s)", d.Round(time.Millisecond), prep.EvictRetryDelay, serverRetryAfter)
	} else {
		t.Logf("the pod went %s after the budget allowed it", d.Round(time.Millisecond))
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("resumed roll: %v\n%s\n%s", err, stdout.String(), errText.String())
	}
	for _, n := range nodes {
		if node, st := nodeState(t, n); node.Spec.Unschedulable || st.Phase != prep.PhaseDone || sim.Reboots(n) != 1 {
			t.Errorf("%s: unschedulable %v, %+v, %d reboots; want done after one reboot", n, node.Spec.Unschedulable, st, sim.Reboots(n))
		}
	}
	noPrepJobs(t)
}

// waitPodGone returns when the pod (namespace/name) got its deletion timestamp or was gone.
func waitPodGone(t *testing.T, ctx context.Context, pod string) time.Time {
	t.Helper()
	ns, name, _ := strings.Cut(pod, "/")
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		p, err := env.Cluster.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || p.DeletionTimestamp != nil {
			return time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s still there a minute after the budget allowed its eviction", pod)
	return time.Time{}
}

// TestRollBudgetScaledUp: a budget that needs every pod there is (minAvailable: 3 of 3)
// blocks the drain until the workload is scaled up mid-wait: then the drain goes on within
// one retry interval and the roll finishes.
func TestRollBudgetScaledUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := env.Cluster.Client
	_ = cs.PolicyV1().PodDisruptionBudgets(apps).Delete(ctx, "web", metav1.DeleteOptions{})
	sim.Reset()
	const ns = "scaled"
	blockedWorkload(t, ctx, ns, policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(3))})
	defer cs.CoreV1().Namespaces().Delete(context.WithoutCancel(ctx), ns, metav1.DeleteOptions{})
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=roll-0"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("want one gpu-web pod on roll-0: %v %v", pods, err)
	}
	held := ns + "/" + pods.Items[0].Name
	cmd := env.Command(ctx, "gpu", "prep", "roll-0", "--apply", "--yes", "--reboot", "--delete-emptydir-data", "--force", "--drain-timeout", "2m", "-o", "json")
	var out, errOut harness.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); !strings.Contains(errOut.String(), "blocked by PodDisruptionBudget "+ns+"/gpu-web-pdb"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("the run never said it was blocked:\n%s", errOut.String())
		}
	}
	if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, "gpu-web", "application/merge-patch+json", []byte(`{"spec":{"replicas":4}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitBudget(t, ctx, ns, 4, 1)
	allowed := time.Now()
	if d := waitPodGone(t, ctx, held).Sub(allowed); d > prep.EvictRetryDelay+3*time.Second {
		t.Errorf("the pod went %s after the scale-up allowed it; want within one retry interval (%s)", d.Round(time.Millisecond), prep.EvictRetryDelay)
	} else {
		t.Logf("the pod went %s after the scale-up allowed it", d.Round(time.Millisecond))
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("roll after the scale-up: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	if node, st := nodeState(t, "roll-0"); node.Spec.Unschedulable || st.Phase != prep.PhaseDone || sim.Reboots("roll-0") != 1 {
		t.Errorf("roll-0: unschedulable %v, %+v, %d reboots; want done after one reboot", node.Spec.Unschedulable, st, sim.Reboots("roll-0"))
	}
	noPrepJobs(t)
}
