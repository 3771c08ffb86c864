package up

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// WriteText shows the plan: per node the host changes (prep's diffs, commands and
// packages) and the roll, the decisions that tie the steps, each release with its action
// and derived values, the verify run, and how it differs from the earlier run's record.
func (p *Plan) WriteText(w io.Writer) {
	fmt.Fprintf(w, "== step 1/3 prep: %s\n", p.prepSummary())
	p.prep.Write(w, &p.prepRq)
	p.writeFromTo(w)
	if len(p.Decisions) > 0 {
		fmt.Fprintln(w, "\n== decisions")
		for _, d := range p.Decisions {
			fmt.Fprintf(w, "  %s: %s\n", d.Decision, d.Reason)
		}
	}
	fmt.Fprintf(w, "\n== step 2/3 %s\n", p.installSummary())
	for _, r := range p.Releases {
		line := fmt.Sprintf("  release %s in namespace %s: %s, chart %s", r.Release, r.Namespace, r.Action, r.Chart)
		if r.From != "" {
			line = fmt.Sprintf("  release %s in namespace %s: %s, chart %s → %s", r.Release, r.Namespace, r.Action, r.From, r.Chart)
		}
		if r.Revision > 0 {
			line += fmt.Sprintf(" (now revision %d)", r.Revision)
		}
		fmt.Fprintln(w, line)
		if r.Action == ActionRollback {
			fmt.Fprintf(w, "    back to revision %d, which ran this chart with these values: Helm's rollback, the history kept\n", r.RollbackTo)
		}
		if r.Recovery != nil {
			fmt.Fprintf(w, "    first: %s\n", r.Recovery.Reason)
		}
		if r.Driver != nil {
			fmt.Fprintf(w, "    %s: the operator's upgrade controller rolls its driver containers node by node\n", r.Driver)
		}
		for _, d := range r.Derived {
			state := ""
			if d.Overridden {
				state = " (overridden by your value)"
			}
			fmt.Fprintf(w, "    %s=%v%s: %s\n", d.Key, d.Value, state, d.Reason)
		}
		for _, l := range r.NodeLabels {
			fmt.Fprintf(w, "    node %s labelled %s=%s: %s\n", l.Node, l.Key, l.Value, l.Reason)
		}
		for _, x := range r.Warnings {
			fmt.Fprintf(w, "    warning: %s\n", x)
		}
	}
	fmt.Fprintf(w, "\n== step 3/3 verify: the CUDA sample (%s) on %s: %s\n", p.VerifyImage, report.Count(len(p.VerifyNodes), "GPU node"), strings.Join(p.VerifyNodes, ", "))
	if p.Recorded != nil {
		if u := p.Recorded.Unfinished(); u != "" && len(p.Differences) == 0 {
			fmt.Fprintf(w, "\nthe earlier run stopped at step %s: this run goes on from what the cluster shows\n", u)
		}
		if len(p.Differences) > 0 {
			fmt.Fprintln(w, "\n== changed since the recorded run")
			for _, d := range p.Differences {
				fmt.Fprintf(w, "  %s\n", d)
			}
		}
	}
}

func (p *Plan) prepSummary() string {
	changes := 0
	for _, n := range p.Nodes {
		changes += len(n.Changes)
	}
	if p.prep.Changes() == 0 {
		return fmt.Sprintf("nothing to change on %s", report.Count(len(p.Nodes), "node"))
	}
	return fmt.Sprintf("%s on %s, %s rebooted", report.Count(changes, "change"), report.Count(len(p.Nodes), "node"), report.Count(len(p.prep.Roll), "node"))
}

func (p *Plan) installSummary() string {
	what := "the GPU Operator"
	if p.Stack == StackDevicePlugin {
		what = "NVIDIA's device plugin"
	}
	return what + ", then wait until it is ready"
}

// Rows are the report's table: one row per node.
func (r *Report) Rows(wide bool) ([]string, [][]string) {
	h := []string{"NODE", "PREP", "VERIFY", "BROKEN LINK"}
	if wide {
		h = append(h, "DETAIL")
	}
	var rows [][]string
	for _, n := range r.Nodes {
		broken := "-"
		if n.Diagnosis != nil && n.Diagnosis.FirstBroken != "" {
			broken = n.Diagnosis.FirstBroken
		}
		row := []string{n.Node, n.Prep, n.Verify, broken}
		if wide {
			row = append(row, n.Detail)
		}
		rows = append(rows, row)
	}
	return h, rows
}

// WriteSummary prints the steps, every failed node's reason and fix, and the count.
func (r *Report) WriteSummary(w io.Writer) {
	fmt.Fprintln(w)
	for _, s := range r.Steps {
		fmt.Fprintf(w, "%-8s %-11s %6.1fs  %s\n", s.Step, s.Result, s.DurationSeconds, s.Detail)
	}
	for _, n := range r.Nodes {
		if n.Detail == "" && n.Diagnosis == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s: %s\n", n.Node, n.Detail)
		if n.Diagnosis != nil {
			fmt.Fprintf(w, "  doctor: %s, first broken link %s: %s\n", n.Diagnosis.Verdict, n.Diagnosis.FirstBroken, n.Diagnosis.Detail)
			if n.Diagnosis.Fix != "" {
				fmt.Fprintf(w, "  fix: %s\n", n.Diagnosis.Fix)
			}
		} else if n.Hint != "" {
			fmt.Fprintf(w, "  fix: %s\n", n.Hint)
		}
	}
	fmt.Fprintf(w, "\nup: %d of %s verified\n", r.Summary.Verified, report.Count(r.Summary.Nodes, "GPU node"))
}

// WriteJUnit writes one test case per step and one per node (its prep and verify).
func (r *Report) WriteJUnit(w io.Writer) error {
	s := report.JUnitSuite{Name: "kubectl-gpu up"}
	for _, st := range r.Steps {
		c := report.JUnitCase{Name: st.Step, Classname: "gpu.up.step", Time: strconv.FormatFloat(st.DurationSeconds, 'f', 1, 64), SystemOut: st.Detail}
		switch st.Result {
		case Failed:
			c.Failure = &report.JUnitFailure{Message: st.Detail, Type: Failed}
			s.Failures++
		case NotStarted:
			c.Skipped = &struct{}{}
			s.Skipped++
		}
		s.Cases = append(s.Cases, c)
	}
	for _, n := range r.Nodes {
		c := report.JUnitCase{Name: n.Node, Classname: "gpu.up.node", Time: "0", SystemOut: "prep " + n.Prep + ", verify " + n.Verify}
		if n.Prep == Failed || n.Verify != VerifyNotRun && n.Verify != "Passed" || n.Prep == NotStarted {
			text := n.Hint
			if n.Diagnosis != nil {
				text = fmt.Sprintf("doctor: %s, first broken link %s: %s; fix: %s", n.Diagnosis.Verdict, n.Diagnosis.FirstBroken, n.Diagnosis.Detail, n.Diagnosis.Fix)
			}
			c.Failure = &report.JUnitFailure{Message: n.Detail, Type: "prep " + n.Prep + ", verify " + n.Verify, Text: text}
			s.Failures++
		}
		s.Cases = append(s.Cases, c)
	}
	s.Tests = len(s.Cases)
	return report.WriteJUnit(w, s)
}

// writeFromTo shows, per node, what the host step moves from what to what and the GPU pods
// its drain evicts (nothing when no node has either).
func (p *Plan) writeFromTo(w io.Writer) {
	var lines []string
	for _, n := range p.Nodes {
		var parts []string
		for _, v := range n.Versions {
			parts = append(parts, v.String())
		}
		if n.Reboot != "" {
			parts = append(parts, "rebooted")
		}
		if len(n.Versions) == 0 && len(n.Evicts) == 0 {
			continue
		}
		lines = append(lines, fmt.Sprintf("  %s: %s", n.Node, strings.Join(parts, ", ")))
		for _, v := range n.Versions {
			if v.Back != "" {
				lines = append(lines, fmt.Sprintf("    back: the same command with %s reinstalls %s %s, pinned", v.Back, v.What, v.From))
			}
		}
		for _, e := range n.Evicts {
			l := fmt.Sprintf("    evicts %s (%s)", e.Pod, report.Count(int(e.GPUs), "GPU"))
			if len(e.Budgets) > 0 {
				l += ": " + strings.Join(e.Budgets, ", ")
			}
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintln(w, "\n== from → to")
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}
