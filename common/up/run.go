package up

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/doctor"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
)

// The steps, in order.
const (
	StepPrep    = "prep"
	StepInstall = "install"
	StepVerify  = "verify"
)

// Step outcomes.
const (
	Done       = "done"
	Skipped    = "skipped"
	Failed     = "failed"
	NotStarted = "not-started"
)

// Report is the `UpReport`: per step and per node what was done and how long it took, and
// the final verify result with each failed node's diagnosis.
type Report struct {
	report.TypeMeta `json:",inline"`
	Stack           Stack         `json:"stack"`
	Steps           []StepResult  `json:"steps"`
	Nodes           []NodeResult  `json:"nodes"`
	Releases        []ReleasePlan `json:"releases"`
	// Resumed names the step an earlier run did not finish ("" it finished, or none ran).
	Resumed string  `json:"resumed,omitempty"`
	Summary Summary `json:"summary"`
}

// StepResult is one step's outcome.
type StepResult struct {
	Step            string  `json:"step"`
	Result          string  `json:"result"`
	Detail          string  `json:"detail,omitempty"`
	DurationSeconds float64 `json:"durationSeconds"`
}

// NodeResult is one node's outcome of the whole run.
type NodeResult struct {
	Node string `json:"node"`
	// Prep: ready, changed (applied in place), rebooted, failed, not-started.
	Prep   string `json:"prep"`
	Verify string `json:"verify"`
	Detail string `json:"detail,omitempty"`
	// Hint says what to do about a failure.
	Hint string `json:"hint,omitempty"`
	// Diagnosis of a node verify failed on: doctor's verdict and first broken link.
	Diagnosis *Diagnosis `json:"diagnosis,omitempty"`
}

// Diagnosis is doctor's answer for a node.
type Diagnosis struct {
	Verdict     doctor.Verdict `json:"verdict"`
	FirstBroken string         `json:"firstBroken,omitempty"`
	Detail      string         `json:"detail,omitempty"`
	Fix         string         `json:"fix,omitempty"`
}

// Summary counts the GPU nodes.
type Summary struct {
	Nodes    int `json:"nodes"`
	Verified int `json:"verified"`
	Failed   int `json:"failed"`
}

// Verify results of a node beyond verify's own.
const (
	VerifyNotRun = "not-run"
)

// Run carries out the plan: the host step (prep's apply and roll), the release (install or
// upgrade, then the wait until the GPU software is ready), verify on every GPU node, and
// doctor on each node verify failed on. Before and after each step it records where the
// run stands. A step that fails stops the run (the steps after it are not started) except
// verify, whose failed nodes leave the others verified. Ctrl-C: cliexit.ErrInterrupted,
// with the step recorded as running; the same request plans again from the cluster and
// goes on.
func Run(ctx context.Context, c Clients, req Request, p *Plan) (*Report, error) {
	r := &Report{TypeMeta: report.Meta(ReportKind), Stack: p.Stack, Releases: p.Releases}
	if p.Recorded != nil {
		r.Resumed = p.Recorded.Unfinished()
	}
	w := &recorder{cs: c.CS, ns: req.Prep.Namespace, rec: p.record}
	if p.Recorded != nil && len(p.Differences) == 0 {
		w.rec.Steps = p.Recorded.Steps
	}
	nodes := map[string]*NodeResult{}
	for _, n := range p.Nodes {
		r.Nodes = append(r.Nodes, NodeResult{Node: n.Node, Prep: "ready", Verify: VerifyNotRun})
	}
	for i := range r.Nodes {
		nodes[r.Nodes[i].Node] = &r.Nodes[i]
	}
	steps := []struct {
		name string
		run  func(context.Context) (result, detail string, err error)
	}{
		{StepPrep, func(ctx context.Context) (string, string, error) { return p.runPrep(ctx, c, req, nodes) }},
		{StepInstall, func(ctx context.Context) (string, string, error) { return p.runInstall(ctx, c, req, w, nodes) }},
		{StepVerify, func(ctx context.Context) (string, string, error) { return p.runVerify(ctx, c, req, nodes) }},
	}
	stopped := false
	for _, s := range steps {
		if stopped {
			r.Steps = append(r.Steps, StepResult{Step: s.name, Result: NotStarted})
			continue
		}
		progress(req.Progress, "up: %s ...", s.name)
		if err := w.set(ctx, s.name, StateRunning, ""); err != nil {
			return nil, err
		}
		start := time.Now()
		result, detail, err := s.run(ctx)
		if errors.Is(err, cliexit.ErrInterrupted) || ctx.Err() != nil {
			return nil, cliexit.ErrInterrupted
		}
		if err != nil {
			result, detail = Failed, cliexit.OneLine(err.Error())
		}
		state := StateDone
		if result == Failed {
			state, stopped = StateFailed, s.name != StepVerify
		}
		if err := w.set(ctx, s.name, state, detail); err != nil {
			return nil, err
		}
		d := time.Since(start).Seconds()
		r.Steps = append(r.Steps, StepResult{Step: s.name, Result: result, Detail: detail, DurationSeconds: float64(int(d*10)) / 10})
		progress(req.Progress, "up: %s %s (%.0fs)%s", s.name, result, d, prefixed(": ", detail))
	}
	for _, n := range r.Nodes {
		if slices.Contains(p.VerifyNodes, n.Node) {
			r.Summary.Nodes++
			switch n.Verify {
			case string(verify.Passed):
				r.Summary.Verified++
			default:
				r.Summary.Failed++
			}
		}
	}
	return r, nil
}

func (p *Plan) runPrep(ctx context.Context, c Clients, req Request, nodes map[string]*NodeResult) (string, string, error) {
	if p.prep.Changes() == 0 {
		return Skipped, "nothing to change on any node", nil
	}
	rq := p.prepRq
	rq.Roll = p.rollOptions(c, req)
	pr, err := prep.Apply(ctx, c.CS, &rq, p.prep)
	if pr == nil {
		return Failed, "", err
	}
	rolled, proven := map[string]bool{}, map[string]bool{}
	for _, rl := range pr.Roll {
		rolled[rl.Node], proven[rl.Node] = true, rl.Proven
	}
	var failed []string
	for _, it := range pr.Items {
		n := nodes[it.Node]
		if n == nil {
			continue
		}
		switch {
		case it.NotStarted:
			n.Prep, n.Detail, n.Hint = NotStarted, it.Error, it.Hint
		case !it.Ready():
			n.Prep, n.Detail, n.Hint = Failed, prepFailure(it), it.Hint
			failed = append(failed, it.Node)
		case rolled[it.Node]:
			n.Prep = "rebooted"
			if proven[it.Node] {
				n.Detail = "verified on the node still cordoned, before its uncordon"
			}
		case it.Report != nil && len(it.Report.Changes) > 0:
			n.Prep = "changed"
		}
	}
	if len(failed) > 0 {
		if derr := p.diagnose(ctx, c, req, nodes, failed); derr != nil {
			return Failed, "", derr
		}
		untouched := 0
		for _, it := range pr.Items {
			if it.NotStarted {
				untouched++
			}
		}
		detail := fmt.Sprintf("%s not ready after the host step (%s): fix it, then run the same command again", report.Count(len(failed), "node"), strings.Join(failed, ", "))
		if untouched > 0 {
			detail += fmt.Sprintf("; the roll stopped there: %s not started", report.Count(untouched, "node"))
		}
		return Failed, detail, err
	}
	if err != nil { // the report is complete, an annotation failed
		return Failed, "", err
	}
	changed := 0
	for _, n := range nodes {
		if n.Prep == "changed" || n.Prep == "rebooted" {
			changed++
		}
	}
	return Done, fmt.Sprintf("%s changed, %s rebooted", report.Count(changed, "node"), report.Count(len(pr.Roll), "node")), nil
}

func prepFailure(it prep.NodeResult) string {
	if it.Error != "" {
		return it.Error
	}
	if it.Report != nil {
		for _, c := range it.Report.Checks {
			if c.Status == "fail" {
				return c.ID + ": " + c.Message
			}
		}
	}
	return "not ready"
}

func (p *Plan) runInstall(ctx context.Context, c Clients, req Request, w *recorder, nodes map[string]*NodeResult) (string, string, error) {
	rederived := ""
	if p.prep.Changes() > 0 {
		// The values again, from the nodes as the host step really left them (what the
		// plan could not foresee: the toolkit's CDI support, versions as installed).
		again := &Plan{Stack: p.Stack}
		var err error
		if p.Stack == StackOperator {
			err = again.planOperator(ctx, c, req, nil)
		} else {
			err = again.planDevicePlugin(ctx, c, req, nil)
		}
		if err != nil {
			return Failed, "", fmt.Errorf("derive the values again after the host step: %w", err)
		}
		for i := range again.Releases {
			if i < len(p.Releases) && !sameValues(again.Releases[i].Values, p.Releases[i].Values) {
				rederived = "; values derived again after the host step differ from the plan's: " + changedKeys(p.Releases[i], again.Releases[i])
			}
		}
		p.Releases, p.charts, p.docs, p.dpPlan = again.Releases, again.charts, again.docs, again.dpPlan
		w.rec.Releases = again.newRecord(req).Releases
	}
	var changed []string
	for _, rp := range p.Releases {
		if rp.Action == ActionUnchanged {
			continue
		}
		// A release an interrupted or failed operation left where Helm neither installs nor
		// upgrades (pending, uninstalling): put right first, as the plan said.
		if err := c.Release.Recover(ctx, rp.Release, rp.Recovery, req.Install.Timeout); err != nil {
			return Failed, "", err
		}
		changed = append(changed, rp.Release)
	}
	if len(p.DriverCanary) > 0 && len(changed) > 0 {
		// The controller must skip the others before the chart moves the driver.
		if err := p.holdDriverUpgrade(ctx, c); err != nil {
			return Failed, "", err
		}
	}
	rolledBack := 0
	for i, rp := range p.Releases {
		if rp.Action != ActionRollback {
			continue
		}
		rel, err := c.Release.Rollback(ctx, rp.Release, rp.RollbackTo, req.Install.Timeout)
		if err != nil {
			return Failed, "", err
		}
		p.Releases[i].Revision = rel.Version
		rolledBack++
	}
	if len(changed) > rolledBack {
		ir := req.Install
		// The node labels the derived values need were in the plan: applied (--label-nodes).
		ir.Wait, ir.DryRun, ir.AtomicDefault, ir.LabelNodes = false, false, true, true
		switch p.Stack {
		case StackOperator:
			rel, err := c.Release.Install(ctx, p.charts[0], p.docs[0], ir)
			if err != nil {
				return Failed, "", err
			}
			p.Releases[0].Revision = rel.Version
		case StackDevicePlugin:
			rels, err := dp.Install(ctx, c.Release.Client, p.dpPlan, ir)
			if err != nil {
				return Failed, "", err
			}
			for i, rel := range rels {
				p.Releases[i].Revision = rel.Version
			}
		}
	}
	canary := ""
	if len(p.DriverCanary) > 0 || len(p.DriverHeld) > 0 {
		d, err := p.followDriverCanary(ctx, c, req, nodes)
		if err != nil {
			return Failed, "", err
		}
		canary = d
	}
	detail, err := p.waitReady(ctx, c, req)
	detail = canary + detail
	if err != nil {
		return Failed, detail, err
	}
	if len(changed) == 0 {
		return Skipped, "release already deployed with these values; " + detail + rederived, nil
	}
	var revs []string
	for _, rp := range p.Releases {
		revs = append(revs, fmt.Sprintf("%s revision %d", rp.Release, rp.Revision))
	}
	return Done, strings.Join(revs, ", ") + "; " + detail + rederived, nil
}

// changedKeys names the derived values whose value or presence differs between a and b.
func changedKeys(a, b ReleasePlan) string {
	old := map[string]any{}
	for _, d := range a.Derived {
		old[d.Key] = d.Value
	}
	var out []string
	seen := map[string]bool{}
	for _, d := range b.Derived {
		seen[d.Key] = true
		if v, ok := old[d.Key]; !ok || fmt.Sprint(v) != fmt.Sprint(d.Value) {
			out = append(out, fmt.Sprintf("%s=%v (%s)", d.Key, d.Value, d.Reason))
		}
	}
	for _, d := range a.Derived {
		if !seen[d.Key] {
			out = append(out, d.Key+" no longer derived")
		}
	}
	if len(out) == 0 {
		return "values of the chart"
	}
	return strings.Join(out, ", ")
}

func (p *Plan) waitReady(ctx context.Context, c Clients, req Request) (string, error) {
	switch p.Stack {
	case StackOperator:
		st, err := c.Release.WaitReady(ctx, p.Releases[0].Release, req.Install.Timeout)
		if err != nil {
			if st != nil {
				return st.Summary(), err
			}
			return "", err
		}
		return st.ReadyWhat() + " ready", nil
	default:
		st, err := dp.WaitReady(ctx, c.Release.Client, p.dpPlan.ReleaseNames(), req.Install.Timeout)
		if err != nil {
			if st != nil {
				return st.Summary(), err
			}
			return "", err
		}
		return st.Summary(), nil
	}
}

// advertiseWait bounds how long the verify step waits (within --timeout) for the GPU nodes
// to advertise their GPUs: the GPU software was just installed or upgraded, and a device
// plugin registers with its kubelet, which then updates the node, a little after its pod is
// ready.
var advertiseWait = 2 * time.Minute

func (p *Plan) runVerify(ctx context.Context, c Clients, req Request, nodes map[string]*NodeResult) (string, string, error) {
	vr := req.Verify
	vr.Names, vr.Selector = nil, req.Selector
	wait, waited := min(advertiseWait, req.Install.Timeout), ""
	plan, err := awaitAdvertised(ctx, c, &vr, p.VerifyNodes, wait, func(missing []string, left time.Duration) {
		if w := strings.Join(missing, ", "); w != waited {
			progress(req.Progress, "up: waiting for %s to advertise GPUs (%s left)", w, left.Round(time.Second))
			waited = w
		}
	})
	if err != nil && !errors.Is(err, verify.ErrNoGPUs) {
		return Failed, "", err
	}
	var vrep *verify.Report
	if plan != nil && len(plan.Targets) > 0 {
		if vrep, err = verify.Run(ctx, c.CS, &vr, plan); err != nil {
			return Failed, "", err
		}
	}
	var failed []string
	seen := map[string]bool{}
	if vrep != nil {
		for _, it := range vrep.Items {
			seen[it.Node] = true
			n := nodes[it.Node]
			if n == nil {
				continue
			}
			n.Verify = string(it.Result)
			if it.Result != verify.Passed {
				n.Detail, n.Hint = it.Detail, it.Hint
				failed = append(failed, it.Node)
			}
		}
	}
	for _, name := range p.VerifyNodes {
		if !seen[name] {
			n := nodes[name]
			n.Verify = string(verify.Failed)
			n.Detail = "no allocatable " + string(vr.Default().Resource) + ": the GPU software does not advertise the node's GPUs (waited " + wait.String() + ")"
			failed = append(failed, name)
		}
	}
	if len(failed) == 0 {
		return Done, fmt.Sprintf("%s passed", report.Count(len(p.VerifyNodes), "node")), nil
	}
	slices.Sort(failed)
	if err := p.diagnose(ctx, c, req, nodes, failed); err != nil {
		return Failed, "", err
	}
	return Failed, fmt.Sprintf("%d of %s failed (%s)", len(failed), report.Count(len(p.VerifyNodes), "node"), strings.Join(failed, ", ")), nil
}

// diagnose runs doctor with the node agent (prep's read-only check, the run's namespace and
// image) on the failed nodes — the host links as the nodes are now, XIDs and CDI included —
// and puts its verdict and first broken link in their results. Only a Ctrl-C is an error: a
// diagnosis that could not be made leaves the failure as it was.
func (p *Plan) diagnose(ctx context.Context, c Clients, req Request, nodes map[string]*NodeResult, failed []string) error {
	if len(failed) == 0 {
		return nil
	}
	agent := &doctor.Agent{Namespace: req.Prep.Namespace, Image: req.Prep.Image, Timeout: req.Prep.Timeout, Parallel: req.Prep.Parallel}
	d, err := doctor.Diagnose(ctx, c.CS, c.Dynamic, doctor.Request{Names: failed, Agent: agent})
	if err != nil {
		if ctx.Err() != nil {
			return cliexit.ErrInterrupted
		}
		return nil
	}
	for _, dn := range d.Items {
		if n := nodes[dn.Node]; n != nil {
			n.Diagnosis = &Diagnosis{Verdict: dn.Verdict, FirstBroken: dn.FirstBroken, Fix: dn.Fix, Detail: linkDetail(dn)}
		}
	}
	return nil
}

func linkDetail(n doctor.Node) string {
	for _, l := range n.Links {
		if l.Name == n.FirstBroken {
			return l.Detail
		}
	}
	return ""
}

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}
