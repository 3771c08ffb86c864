package prep

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
)

// tooMany is the eviction API's refusal as the API server makes it (registry/core/pod/
// storage/eviction.go): 429 with a DisruptionBudget cause.
func tooMany(msg string) error {
	err := apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
	err.ErrStatus.Details.Causes = append(err.ErrStatus.Details.Causes, metav1.StatusCause{Type: policyv1.DisruptionBudgetCause, Message: msg})
	return err
}

func TestRefusal(t *testing.T) {
	for _, tc := range []struct {
		err  error
		ok   bool
		want Budget
	}{
		{tooMany("The disruption budget gpu-web-pdb needs 3 healthy pods and has 3 currently"), true,
			Budget{Name: "web/gpu-web-pdb", Needs: 3, Has: 3, Message: "needs 3 healthy pods and has 3 currently"}},
		{tooMany("The disruption budget db is still being processed by the server."), true,
			Budget{Name: "web/db", Message: "is still being processed by the server."}},
		{fmt.Errorf("evict: %w", tooMany("The disruption budget x does not allow evicting pods currently")), true,
			Budget{Name: "web/x", Message: "does not allow evicting pods currently"}},
		{apierrors.NewTooManyRequests("slow down", 1), false, Budget{}},
		{apierrors.NewNotFound(policyv1.Resource("poddisruptionbudget"), "x"), false, Budget{}},
		{errors.New("boom"), false, Budget{}},
		{nil, false, Budget{}},
	} {
		got, ok := refusal("web", tc.err)
		if ok != tc.ok || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("refusal(%v) = %+v, %v; want %+v, %v", tc.err, got, ok, tc.want, tc.ok)
		}
	}
}

// TestDrainWatch: a refusal marks the pod blocked by its budget; a later eviction or the
// pod's going clears it; the error and the hint name the budget, its pods and what to do.
func TestDrainWatch(t *testing.T) {
	w := &drainWatch{left: map[string]bool{"web/a": true, "web/b": true, "web/c": true}, blocked: map[string]Budget{}}
	refused := tooMany("The disruption budget gpu-web-pdb needs 3 healthy pods and has 3 currently")
	w.evicted("web", "a", refused)
	w.evicted("web", "b", refused)
	w.evicted("web", "c", nil)
	state, detail := w.status(time.Now().Add(25 * time.Second))
	if want := "draining: 3 pod(s) left, blocked by PodDisruptionBudget web/gpu-web-pdb (needs 3 healthy pods, has 3) holds web/a, web/b"; state != want {
		t.Errorf("state %q, want %q", state, want)
	}
	if !strings.HasSuffix(detail, "s left of --drain-timeout") {
		t.Errorf("detail %q", detail)
	}
	w.evicted("web", "b", nil) // allowed now
	w.gone(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "c"}})
	bs := w.budgets()
	if len(bs) != 1 || strings.Join(bs[0].Pods, ",") != "web/a" || w.podsLeft() != 2 {
		t.Fatalf("budgets %+v, %d left", bs, w.podsLeft())
	}
	e := &DrainError{Err: errors.New(`error when evicting pods/"a" -n "web": global timeout reached: 30s`), Budgets: bs, Timeout: 30 * time.Second}
	if want := "PodDisruptionBudget web/gpu-web-pdb (needs 3 healthy pods, has 3) allows no eviction of web/a (--drain-timeout 30s ran out)"; e.Error() != want {
		t.Errorf("error %q, want %q", e.Error(), want)
	}
	for _, want := range []string{"scale up the workload", "kubectl edit pdb gpu-web-pdb -n web", "move the pod", "every 5s"} {
		if !strings.Contains(e.Hint(), want) {
			t.Errorf("hint %q lacks %q", e.Hint(), want)
		}
	}
	e.Budgets[0].MaxUnavailable = "0"
	if h := e.Hint(); !strings.Contains(h, "no voluntary disruption at all (maxUnavailable: 0)") || strings.Contains(h, "scale up") {
		t.Errorf("hint for a maxUnavailable: 0 budget: %q", h)
	}
	plain := &DrainError{Err: errors.New("cannot delete Pods with local storage (use --delete-emptydir-data to override): apps/cache")}
	if !strings.Contains(plain.Error(), "--delete-emptydir-data") || !strings.Contains(plain.Hint(), "--force") {
		t.Errorf("a drain refused by kubectl's rules: %q / %q", plain.Error(), plain.Hint())
	}
}

// TestNotStartedCountedApart: nodes a roll never reached are "not started", neither ready
// nor not ready, and still fail the run.
func TestNotStartedCountedApart(t *testing.T) {
	ok := rep.New("v0", rep.ModeApply)
	r := NewReport(rep.ModeApply, []NodeResult{
		{Node: "roll-0", Error: "drain: x", Hint: "h"},
		{Node: "roll-1", NotStarted: true, Error: "not started: the roll stopped at node roll-0"},
		{Node: "roll-2", Report: ok},
	})
	if s := r.Summary; s.Ready != 1 || s.NotReady != 1 || s.NotStarted != 1 || !s.Failed() {
		t.Errorf("summary %+v", s)
	}
	_, rows := r.Rows(false)
	if got := rows[1][len(rows[1])-1]; got != "NotStarted" {
		t.Errorf("READY of a node not started: %q", got)
	}
	var b bytes.Buffer
	r.WriteFindings(&b)
	if !strings.Contains(b.String(), "3 nodes: 1 ready, 1 not ready, 1 not started") {
		t.Errorf("summary line:\n%s", b.String())
	}
	if only := NewReport(rep.ModeApply, []NodeResult{{Node: "a", NotStarted: true}}).Summary; !only.Failed() {
		t.Error("a run whose only node was not started did not fail")
	}
}

// TestNoEmptyHintLine: an error without a hint prints no arrow with nothing after it.
func TestNoEmptyHintLine(t *testing.T) {
	var b bytes.Buffer
	NewReport(rep.ModeCheck, []NodeResult{{Node: "gpu-1", Error: "the agent stopped: exit 1"}}).WriteFindings(&b)
	if strings.Contains(b.String(), "→ \n") || strings.Contains(b.String(), "→\n") {
		t.Errorf("an empty hint line:\n%q", b.String())
	}
}

// TestFailureLineWithoutReport: a node with neither a report nor an error (the run ended
// on a refusal) has no line, and no panic.
func TestFailureLineWithoutReport(t *testing.T) {
	if l := failureLine(NodeResult{Node: "n"}); l != "" {
		t.Errorf("line %q", l)
	}
	if failedChecks(nil) != "" {
		t.Error("failedChecks(nil)")
	}
}

// TestLeftCordoned: after a Ctrl-C the last lines name each node the roll left cordoned and
// the command that goes on; a roll that left none says nothing.
func TestLeftCordoned(t *testing.T) {
	got := strings.Join(LeftCordoned([]NodeRoll{{Node: "a", Phase: PhaseDone}, {Node: "b", Phase: PhaseCordoned}, {Node: "c"}}), "\n")
	if !strings.Contains(got, "node b left cordoned (its roll stopped at cordoned)") || strings.Contains(got, "node a") || strings.Contains(got, "node c") || !strings.Contains(got, "run the same command again") {
		t.Errorf("%q", got)
	}
	if l := LeftCordoned([]NodeRoll{{Node: "a", Phase: PhaseDone}}); len(l) != 0 {
		t.Errorf("%q", l)
	}
}

// TestTellInstallsFinish: an interrupted apply that installs packages says its agents finish
// the install they started; one without installs, or not interrupted, says nothing.
func TestTellInstallsFinish(t *testing.T) {
	var b strings.Builder
	req := &Request{Progress: &b}
	TellInstallsFinish(req, cliexit.ErrInterrupted)
	req.Install.ToolkitVersion = "1.17.8"
	TellInstallsFinish(req, errors.New("other"))
	if b.Len() != 0 {
		t.Fatalf("said %q", b.String())
	}
	TellInstallsFinish(req, fmt.Errorf("roll: %w", cliexit.ErrInterrupted))
	if !strings.Contains(b.String(), "finishes it before its pod goes (up to 10m0s)") {
		t.Errorf("%q", b.String())
	}
}

// TestResumeHintOnce: a failure whose own hint already says to run the command again says
// it once, with where the roll goes on.
func TestResumeHintOnce(t *testing.T) {
	h := resumeHint("move the pod yourself; then run the same command again", PhaseCordoned)
	if strings.Count(h, "run the same command again") != 1 || !strings.Contains(h, "resumes from") {
		t.Errorf("%q", h)
	}
	if h := resumeHint("", PhaseCordoned); !strings.Contains(h, "stays cordoned") {
		t.Errorf("%q", h)
	}
}

// TestRollResultsOnePrefix: a stopped node's error is the roll's own words, printed after the
// node's name with no second prefix ("roll-0: drain: …", not "roll-0: roll: drain: …").
func TestRollResultsOnePrefix(t *testing.T) {
	res := rollResults([]NodeRoll{{Node: "roll-0", Phase: PhaseCordoned, Error: "drain: the drain timed out"}, {Node: "roll-1"}})
	var b bytes.Buffer
	NewReport(rep.ModeApply, res).WriteFindings(&b)
	if strings.Contains(b.String(), "roll: ") || !strings.Contains(b.String(), "roll-0: drain: the drain timed out") {
		t.Errorf("findings:\n%s", b.String())
	}
}

// TestWriteChangesGroupsNodes: nodes with the same changes are shown once under their names
// (a 1000-node plan shows each kind of node once); the count is over every node.
func TestWriteChangesGroupsNodes(t *testing.T) {
	same := func() *rep.Report {
		r := rep.New("v0", rep.ModePlan)
		r.Changes = []rep.Change{{Check: rep.CheckSysctl, File: "/etc/sysctl.d/99-kubectl-gpu.conf", Diff: "+net.ipv4.ip_forward = 1\n"}}
		return r
	}
	other := rep.New("v0", rep.ModePlan)
	other.Changes = []rep.Change{{Check: rep.CheckSwap, Command: []string{"swapoff", "-a"}}}
	var items []NodeResult
	for i := 0; i < 5; i++ {
		items = append(items, NodeResult{Node: fmt.Sprintf("gpu-%d", i), Report: same()})
	}
	items = append(items, NodeResult{Node: "odd", Report: other})
	var b bytes.Buffer
	n := NewReport(rep.ModePlan, items).WriteChanges(&b)
	got := b.String()
	if n != 6 || strings.Count(got, "+net.ipv4.ip_forward = 1") != 1 || !strings.Contains(got, "=== gpu-0, gpu-1, gpu-2 and 2 more nodes (the same changes on 5 nodes)") || !strings.Contains(got, "=== odd\n$ swapoff -a") {
		t.Errorf("%d changes:\n%s", n, got)
	}
}
