package prep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/pkginstall"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// RollOptions is the rolling drain-and-reboot of --reboot.
type RollOptions struct {
	// MaxUnavailable is how many nodes are out (cordoned, drained, rebooting) at once.
	MaxUnavailable int
	// DeleteEmptyDirData and Force are kubectl drain's: evict pods with emptyDir data, and
	// delete pods no controller recreates.
	DeleteEmptyDirData bool
	Force              bool
	// DrainTimeout bounds one node's drain (0: no bound, as kubectl drain).
	DrainTimeout time.Duration
	// RebootTimeout bounds the wait for a node to come back with a new boot ID and Ready.
	RebootTimeout time.Duration
	// SelfNode is the node this command runs on when it runs in a pod ("" otherwise): it is
	// drained only when named.
	SelfNode string
	// Canary is how many nodes go first (at most MaxUnavailable of them at once): every one
	// of them must be done — proven, when Prove is set — before any other node is cordoned.
	// 0: no canary, the slots are filled from the start.
	Canary int `json:"-"`
	// Prove, when set, proves each node back from its reboot and checked, before it is
	// uncordoned and its slot freed (up's CUDA sample on the still cordoned node). A failure
	// stops the node's roll there: it stays cordoned, and no further node is started.
	Prove Prover `json:"-"`
}

// Prover proves one node (see RollOptions.Prove): "" when it passed, else what failed and
// the hint of what to do. status shows a wait of more than a few seconds.
type Prover func(ctx context.Context, node string, status func(state, detail string)) (failure, hint string)

// DefaultRollOptions are the roll's defaults: one node out at a time, ten minutes to drain
// it (kubectl drain has no limit; a roll that never ends holds a node out), fifteen for it to
// come back from its reboot.
func DefaultRollOptions() RollOptions {
	return RollOptions{MaxUnavailable: 1, DrainTimeout: 10 * time.Minute, RebootTimeout: 15 * time.Minute}
}

// NodeRoll is one node's outcome in a roll.
type NodeRoll struct {
	Node string `json:"node"`
	// Phase is the last step finished ("" not started).
	Phase Phase `json:"phase"`
	// ResumedFrom is the step an earlier run had reached.
	ResumedFrom Phase  `json:"resumedFrom,omitempty"`
	Evicted     int    `json:"evicted"`
	BootID      string `json:"bootID,omitempty"`
	Error       string `json:"error,omitempty"`
	Hint        string `json:"hint,omitempty"`
	// BlockedBy are the PodDisruptionBudgets that kept the node's drain from finishing.
	BlockedBy []Budget `json:"blockedBy,omitempty"`
	Duration  string   `json:"duration,omitempty"`
	// Proven: the roll's proof (RollOptions.Prove) passed on the node before its uncordon;
	// Proof is what failed when it did not.
	Proven bool   `json:"proven,omitempty"`
	Proof  string `json:"proof,omitempty"`
	// Check is the node's check after the reboot.
	Check *NodeResult `json:"-"`
}

// IsControlPlane tells whether a node carries a control-plane role label.
func IsControlPlane(n *corev1.Node) bool {
	_, cp := n.Labels["node-role.kubernetes.io/control-plane"]
	_, master := n.Labels["node-role.kubernetes.io/master"]
	return cp || master
}

type roller struct {
	cs    kubernetes.Interface
	req   *Request
	o     RollOptions
	prog  *report.Progress
	nodes *nodeWatch
	// One engine session per step, each node's Job joining when the node gets there: the
	// watches are opened once per roll, not once per node and step.
	apply, reboot, check *nodepod.Session[NodeResult]
	deleter              *nodepod.Deleter
	mu                   sync.Mutex
	bootIDs              map[string]string // the boot each node's reboot Job is for
	changed              map[string]bool   // nodes whose plan has changes to make
}

// open starts what the roll shares: the node watch and the three steps' sessions, at once.
func (r *roller) open(ctx context.Context) error {
	c := *r.req
	c.Progress, c.OnReport = nil, nil
	run := nodepod.Run{Namespace: c.Namespace, Timeout: c.Timeout, KeepFinished: true}
	noBoot := func(string) string { return "" }
	bootID := func(node string) string {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.bootIDs[node]
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	open := func(i int, f func() error) {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f() }()
	}
	open(0, func() (err error) { r.nodes, err = watchNodes(ctx, r.cs); return })
	open(1, func() (err error) {
		r.apply, err = nodepod.Open(ctx, r.cs, run, agentWork(&c, rep.ModeApply, noBoot))
		return
	})
	open(2, func() (err error) {
		r.reboot, err = nodepod.Open(ctx, r.cs, run, agentWork(&c, rep.ModeReboot, bootID))
		return
	})
	open(3, func() (err error) {
		r.check, err = nodepod.Open(ctx, r.cs, run, agentWork(&c, rep.ModeCheck, noBoot))
		return
	})
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	r.deleter = nodepod.NewDeleter(ctx, r.cs, c.Namespace, true, releaseWindow, r.apply.RunID(), r.reboot.RunID(), r.check.RunID())
	return nil
}

// close ends the sessions (deleting what is left of them) and the node watch.
func (r *roller) close() {
	if r.deleter != nil {
		r.deleter.Flush()
	}
	for _, s := range []*nodepod.Session[NodeResult]{r.apply, r.reboot, r.check} {
		if s != nil {
			s.Close()
		}
	}
	if r.nodes != nil {
		r.nodes.stop()
	}
}

// release deletes a node's agent Jobs of the roll once its roll ended: with those of the
// nodes that end within a few seconds, in one request.
func (r *roller) release(node string) {
	var names []string
	for _, s := range []*nodepod.Session[NodeResult]{r.apply, r.reboot, r.check} {
		names = append(names, JobName(node, s.RunID()))
	}
	r.deleter.Add(node, names...)
}

// releaseWindow is how long a finished node's Jobs wait for other nodes' to be deleted with.
const releaseWindow = 5 * time.Second

// Roll takes nodes out one slot at a time (at most MaxUnavailable at once, a freed slot
// starting the next node): cordon, drain by kubectl's rules, apply (install), reboot, wait
// for a new boot ID and Ready, check, uncordon. It stops starting nodes at the first
// failure and leaves that node cordoned with the reason; each step is written on the node
// first, so a rerun resumes. A Ctrl-C returns cliexit.ErrInterrupted once the nodes in
// flight have stopped (their Jobs removed, their state kept).
//
// changed are the nodes whose plan has changes to make: one an earlier run left past its
// install is installed (and rebooted) again instead of only checked.
func Roll(ctx context.Context, cs kubernetes.Interface, req *Request, nodes []string, changed map[string]bool) ([]NodeRoll, error) {
	o := *req.Roll
	if o.MaxUnavailable < 1 {
		o.MaxUnavailable = 1
	}
	if o.RebootTimeout <= 0 {
		o.RebootTimeout = DefaultRollOptions().RebootTimeout
	}
	r := &roller{cs: cs, req: req, o: o, prog: report.ForStream(req.Progress), bootIDs: map[string]string{}, changed: changed}
	defer r.prog.End()
	err := r.open(ctx)
	defer r.close()
	if err != nil {
		return nil, cliexit.InterruptedOr(ctx, err)
	}
	out := make([]NodeRoll, len(nodes))
	for i, n := range nodes {
		out[i] = NodeRoll{Node: n}
	}
	order := r.canaryFirst(nodes)
	var failed atomic.Bool
	var done atomic.Int32
	// The canary: its nodes run to the end before any other node is cordoned.
	canary := min(o.Canary, len(order))
	waves := [][]int{order[:canary], order[canary:]}
	for w, wave := range waves {
		if len(wave) == 0 {
			continue
		}
		if w == 1 && canary > 0 {
			if failed.Load() || ctx.Err() != nil {
				break
			}
			r.prog.Node(fmt.Sprintf("canary done (%s): the other %s, %d at a time", strings.Join(names(nodes, order[:canary]), ", "), report.Count(len(wave), "node"), o.MaxUnavailable))
		}
		r.wave(ctx, nodes, wave, out, &failed, &done)
	}
	if ctx.Err() != nil {
		r.prog.End()
		return out, cliexit.ErrInterrupted
	}
	return out, nil
}

// wave rolls the nodes at the indexes, MaxUnavailable at a time (a freed slot starting the
// next), until the first failure.
func (r *roller) wave(ctx context.Context, nodes []string, wave []int, out []NodeRoll, failed *atomic.Bool, done *atomic.Int32) {
	sem := make(chan struct{}, r.o.MaxUnavailable)
	var wg sync.WaitGroup
start:
	for _, i := range wave {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break start
		}
		if failed.Load() || ctx.Err() != nil {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			n := nodes[i]
			out[i] = r.node(ctx, n)
			r.prog.Clear(n)
			if out[i].Error != "" {
				failed.Store(true)
			}
			if out[i].Phase == PhaseDone {
				done.Add(1)
			}
			r.prog.Status("roll", fmt.Sprintf("%d/%d nodes done", done.Load(), len(nodes)), "")
		}()
	}
	wg.Wait()
}

// canaryFirst orders the roll: the nodes an earlier run left part-way (they are out
// already) first, then the others as given.
func (r *roller) canaryFirst(nodes []string) []int {
	order := make([]int, len(nodes))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return r.unfinished(nodes[order[a]]) && !r.unfinished(nodes[order[b]])
	})
	return order
}

func (r *roller) unfinished(name string) bool {
	n := r.nodes.get(name)
	return n != nil && ReadRollState(n).Unfinished()
}

func names(nodes []string, idx []int) []string {
	var out []string
	for _, i := range idx {
		out = append(out, nodes[i])
	}
	return out
}

// resumeHint is a stopped node's hint: the failure's own (when it has one) and how to go on,
// said once.
func resumeHint(hint string, phase Phase) string {
	resume := "the node stays cordoned: fix it, then run the same command again to resume (it goes on from " + orStart(phase) + ")"
	switch {
	case hint != "" && strings.Contains(hint, "run the same command again"):
		return hint + " (the node stays cordoned; the roll resumes from " + orStart(phase) + ")"
	case hint != "":
		return hint + "; " + resume
	}
	return resume
}

// TellLeftCordoned, when err is an interrupt of a command with a roll, writes its last
// lines (on a terminal and in a pipe alike, the report is not printed after a Ctrl-C):
// each node an unfinished roll keeps cordoned, as the nodes say it now (this run's roll or
// an earlier one the run had not resumed yet), and how to go on. names limits it to the
// command's nodes when they are known.
func TellLeftCordoned(ctx context.Context, cs kubernetes.Interface, req *Request, names []string, err error) {
	if req.Roll == nil || req.Progress == nil || !errors.Is(err, cliexit.ErrInterrupted) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	list, lerr := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if lerr != nil {
		fmt.Fprintf(req.Progress, "interrupted: could not read which nodes stay cordoned (%v): see kubectl get nodes\n", lerr)
		return
	}
	var rolls []NodeRoll
	for i := range list.Items {
		n := &list.Items[i]
		if names != nil && !slices.Contains(names, n.Name) {
			continue
		}
		if st := ReadRollState(n); st.Unfinished() && n.Spec.Unschedulable {
			rolls = append(rolls, NodeRoll{Node: n.Name, Phase: st.Phase})
		}
	}
	sort.Slice(rolls, func(i, j int) bool { return rolls[i].Node < rolls[j].Node })
	for _, l := range LeftCordoned(rolls) {
		fmt.Fprintln(req.Progress, l)
	}
}

// TellInstallsFinish, when err is an interrupt of an apply that installs packages, says that
// an agent whose package manager had started lets it finish before its pod goes (the pod's
// grace period): killed mid-way it would leave dpkg's work half done.
func TellInstallsFinish(req *Request, err error) {
	if !req.Install.Any() || req.Progress == nil || !errors.Is(err, cliexit.ErrInterrupted) {
		return
	}
	fmt.Fprintf(req.Progress, "interrupted: an agent whose package install had started finishes it before its pod goes (up to %s); the next run sees what it installed\n", pkginstall.InstallGrace)
}

// LeftCordoned says, after an interrupted roll, each node it left cordoned and where it
// stopped, then the command that goes on (nothing when it left none).
func LeftCordoned(rolls []NodeRoll) []string {
	var out []string
	for _, rl := range rolls {
		if rl.Phase != "" && rl.Phase != PhaseDone {
			out = append(out, fmt.Sprintf("interrupted: node %s left cordoned (its roll stopped at %s)", rl.Node, rl.Phase))
		}
	}
	if len(out) > 0 {
		out = append(out, "run the same command again to go on: each node resumes where it stopped, and is uncordoned when it is done")
	}
	return out
}

// record writes where the node's roll stands (outliving a Ctrl-C), in one patch with
// what else the step changes on the node: the report annotations of the agent that just
// ran (annotations), the cordon or uncordon (spec).
func (r *roller) record(ctx context.Context, node string, st *RollState, annotations, spec map[string]any) error {
	st.Time = time.Now().UTC().Format(time.RFC3339)
	b, _ := json.Marshal(st)
	ann := map[string]any{RollAnnotation: string(b)}
	for k, v := range annotations {
		ann[k] = v
	}
	patch := map[string]any{"metadata": map[string]any{"annotations": ann}}
	if spec != nil {
		patch["spec"] = spec
	}
	pb, _ := json.Marshal(patch)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	err := nodepod.Retry(ctx, func(ctx context.Context) error {
		_, err := r.cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, pb, metav1.PatchOptions{})
		return err
	})
	if err != nil {
		return cluster.APIError("record the roll on node "+node, err)
	}
	return nil
}

// bootID is the node's boot as last seen.
func (r *roller) bootID(name string) string {
	if n := r.nodes.get(name); n != nil {
		return n.Status.NodeInfo.BootID
	}
	return ""
}

func orStart(p Phase) string {
	if p == "" {
		return "the start"
	}
	return "after " + string(p)
}

func failedChecks(r *rep.Report) string {
	if r == nil {
		return ""
	}
	var ids []string
	for _, c := range r.Checks {
		if c.Status == rep.Fail {
			ids = append(ids, c.ID+" ("+c.Message+")")
		}
	}
	return strings.Join(ids, ", ")
}

// waitBoot waits for the node to report a boot ID other than old, and Ready, as the roll's
// node watch sees it.
func (r *roller) waitBoot(ctx context.Context, node, old string, status func(state, detail string)) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.o.RebootTimeout)
	defer cancel()
	deadline := time.Now().Add(r.o.RebootTimeout)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		changed := r.nodes.next()
		n := r.nodes.get(node)
		state := "rebooting: waiting for a new boot ID (was " + old + ")"
		if old == "" {
			state = "rebooting: waiting for the node to report a boot ID and Ready"
		}
		if n != nil {
			boot := n.Status.NodeInfo.BootID
			if boot != old && boot != "" {
				if nodeReady(n) {
					return boot, nil
				}
				state = "rebooted (boot " + boot + "): waiting for Ready"
			}
		}
		status(state, fmt.Sprintf("%s left of --reboot-timeout", time.Until(deadline).Round(time.Second)))
		select {
		case <-changed:
		case <-tick.C:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return "", fmt.Errorf("not back with a new boot ID and Ready within %s", r.o.RebootTimeout)
			}
			return "", ctx.Err()
		}
	}
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// RollNodes picks, among the planned nodes, those the roll takes: a node whose changes
// need a reboot, and a node an earlier roll left unfinished.
func RollNodes(plan []NodeResult, nodes map[string]*corev1.Node) []string {
	var out []string
	for _, p := range plan {
		n := nodes[p.Node]
		if p.Report != nil && p.Report.Reboot != "" || n != nil && ReadRollState(n).Unfinished() {
			out = append(out, p.Node)
		}
	}
	sort.Strings(out)
	return out
}
