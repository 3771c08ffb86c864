package prep

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// Kind of the prep document.
const Kind = "PrepReport"

// Report is the `kubectl gpu prep` document.
type Report struct {
	report.TypeMeta `json:",inline"`
	Mode            rep.Mode     `json:"mode"`
	Items           []NodeResult `json:"items"`
	// Roll is where each node of a --reboot roll got to.
	Roll    []NodeRoll `json:"roll,omitempty"`
	Summary Summary    `json:"summary"`
}

// Summary counts the nodes.
type Summary struct {
	Nodes    int `json:"nodes"`
	Ready    int `json:"ready"`
	NotReady int `json:"notReady"`
	// NotStarted counts the nodes a roll did not reach (it stopped at another node first):
	// neither ready nor not ready, and a failure of the run.
	NotStarted int `json:"notStarted,omitempty"`
	// NoGPU counts the nodes with no NVIDIA GPU on the PCI bus: reported, and not a failure
	// of the run unless every node is one.
	NoGPU int `json:"noGPU"`
}

// Failed tells whether the run found failures (exit 1): a node with GPUs that is not ready,
// or no node with GPUs at all.
func (s Summary) Failed() bool {
	return s.NotReady > s.NoGPU || s.NotStarted > 0 || s.Nodes > 0 && s.NoGPU == s.Nodes
}

// NewReport sums the results up.
func NewReport(mode rep.Mode, results []NodeResult) *Report {
	r := &Report{TypeMeta: report.Meta(Kind), Mode: mode, Items: results}
	for _, it := range results {
		r.Summary.Nodes++
		if it.NotStarted {
			r.Summary.NotStarted++
			continue
		}
		if it.Ready() {
			r.Summary.Ready++
		} else {
			r.Summary.NotReady++
			if it.NoGPU() {
				r.Summary.NoGPU++
			}
		}
	}
	return r
}

// NoGPU tells whether the agent found no NVIDIA GPU on the node's PCI bus.
func (n NodeResult) NoGPU() bool {
	if n.Report == nil || len(n.Report.GPUs) > 0 {
		return false
	}
	c, ok := n.Report.Get(rep.CheckPCI)
	return ok && c.Status == rep.Fail
}

// Ready tells whether the node has a report with no failed check.
func (n NodeResult) Ready() bool { return n.Error == "" && n.Report != nil && n.Report.Ready() }

// column summarises the checks of one area for the matrix.
func (n NodeResult) column(ids ...string) string {
	worst := ""
	rank := map[rep.Status]int{rep.OK: 1, rep.Skipped: 0, rep.Fixed: 1, rep.Warn: 2, rep.Fail: 3}
	for _, id := range ids {
		if c, ok := n.Report.Get(id); ok && (worst == "" || rank[c.Status] > rank[rep.Status(worst)]) {
			worst = string(c.Status)
		}
	}
	if worst == "" {
		return "-"
	}
	return worst
}

// Rows prints the readiness matrix.
func (r *Report) Rows(wide bool) ([]string, [][]string) {
	header := []string{"NODE", "FLAVOUR", "GPUS", "DRIVER", "TOOLKIT", "CONTAINERD", "KERNEL", "SWAP", "READY"}
	if wide {
		header = append(header, "OS", "KERNEL-VERSION", "AGENT")
	}
	var rows [][]string
	for _, n := range r.Items {
		if n.Report == nil {
			ready := "Error"
			if n.NotStarted {
				ready = "NotStarted"
			}
			row := []string{n.Node, "-", "-", "-", "-", "-", "-", "-", ready}
			if wide {
				row = append(row, "-", "-", "-")
			}
			rows = append(rows, row)
			continue
		}
		x := n.Report
		driver := n.column(rep.CheckDriver, rep.CheckNouveau, rep.CheckSecureBoot)
		if x.DriverVersion != "" && driver == "ok" {
			driver = x.DriverVersion
		}
		toolkit := n.column(rep.CheckToolkit)
		if x.ToolkitVersion != "" && toolkit == "ok" {
			toolkit = x.ToolkitVersion
		}
		ready := "True"
		if !n.Ready() {
			ready = "False"
		}
		row := []string{n.Node, string(x.Flavour), strconv.Itoa(len(x.GPUs)), driver, toolkit,
			n.column(rep.CheckContainerd, rep.CheckSystemdCgroup, rep.CheckNvidiaRuntime, rep.CheckCgroupDriver),
			n.column(rep.CheckModules, rep.CheckSysctl, rep.CheckHeaders), n.column(rep.CheckSwap), ready}
		if wide {
			row = append(row, x.OS, x.Kernel, x.AgentVersion)
		}
		rows = append(rows, row)
	}
	return header, rows
}

// WriteFindings prints every failed check with its remediation, and the changes.
func (r *Report) WriteFindings(w io.Writer) {
	if len(r.Roll) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		fmt.Fprintln(tw, "ROLL\tPHASE\tEVICTED\tBOOT-ID\tDURATION\tRESULT")
		for _, rl := range r.Roll {
			result := "done"
			switch {
			case rl.Error != "":
				result = "failed"
			case rl.Phase != PhaseDone:
				result = "not started"
			}
			if rl.ResumedFrom != "" {
				result += " (resumed after " + string(rl.ResumedFrom) + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", rl.Node, dash(string(rl.Phase)), rl.Evicted, dash(rl.BootID), dash(rl.Duration), result)
		}
		tw.Flush()
	}
	for _, n := range r.Items {
		if n.Error != "" {
			fmt.Fprintf(w, "\n%s: %s\n", n.Node, n.Error)
			if n.Hint != "" {
				fmt.Fprintf(w, "    → %s\n", n.Hint)
			}
			continue
		}
		var lines []string
		for _, c := range n.Report.Checks {
			if c.Status == rep.Fail || c.Status == rep.Fixed {
				l := fmt.Sprintf("  %-26s %-5s %s", c.ID, c.Status, c.Message)
				if c.Remediation != "" && c.Status == rep.Fail {
					l += "\n    → " + c.Remediation
				}
				lines = append(lines, l)
			}
		}
		if n.Report.Reboot != "" && len(r.Roll) == 0 {
			lines = append(lines, "  reboot needed: "+n.Report.Reboot+"\n    → kubectl gpu prep "+n.Node+" --apply --reboot drains and reboots it")
		}
		if len(lines) > 0 {
			fmt.Fprintf(w, "\n%s:\n%s\n", n.Node, strings.Join(lines, "\n"))
		}
	}
	fmt.Fprintf(w, "\n%s: %d ready, %d not ready", report.Count(r.Summary.Nodes, "node"), r.Summary.Ready, r.Summary.NotReady)
	if r.Summary.NotStarted > 0 {
		fmt.Fprintf(w, ", %d not started (the roll stopped before them)", r.Summary.NotStarted)
	}
	if r.Summary.NoGPU > 0 {
		fmt.Fprintf(w, " (%d without an NVIDIA GPU: not counted as failures unless every node is)", r.Summary.NoGPU)
	}
	fmt.Fprintln(w)
}

// WriteChanges shows each node's changes (diffs, commands, packages, the reboot they need)
// and returns how many changes there are over all nodes. Nodes whose changes are the same
// are shown once, under their names (a large cluster's plan shows each kind of node once).
func (r *Report) WriteChanges(w io.Writer) int {
	total := 0
	var order []string
	groups := map[string][]string{}
	for _, n := range r.Items {
		if n.Report == nil || len(n.Report.Changes) == 0 {
			continue
		}
		var b strings.Builder
		total += writeNodeChanges(&b, n.Report)
		text := b.String()
		if _, ok := groups[text]; !ok {
			order = append(order, text)
		}
		groups[text] = append(groups[text], n.Node)
	}
	for _, text := range order {
		fmt.Fprintf(w, "\n=== %s\n%s", groupName(groups[text]), text)
	}
	return total
}

// groupName names the nodes that share one set of changes.
func groupName(nodes []string) string {
	switch {
	case len(nodes) == 1:
		return nodes[0]
	case len(nodes) <= 4:
		return fmt.Sprintf("%s (the same changes on %d nodes)", strings.Join(nodes, ", "), len(nodes))
	}
	return fmt.Sprintf("%s and %d more nodes (the same changes on %d nodes)", strings.Join(nodes[:3], ", "), len(nodes)-3, len(nodes))
}

// writeNodeChanges writes one node's changes and returns how many there are.
func writeNodeChanges(w io.Writer, r *rep.Report) int {
	total := 0
	for _, c := range r.Changes {
		switch {
		case c.File != "" && c.Diff == "":
			fmt.Fprintf(w, "write %s\n", c.File)
		case c.File != "":
			fmt.Fprintf(w, "%s", c.Diff)
		case len(c.Command) > 0:
			fmt.Fprintf(w, "$ %s\n", strings.Join(c.Command, " "))
		}
		if c.Note != "" {
			fmt.Fprintf(w, "  # %s\n", c.Note)
		}
		for _, p := range c.Packages {
			if p.Replaces != "" {
				fmt.Fprintf(w, "  + %s %s (replaces %s)\n", p.Name, p.Version, p.Replaces)
			} else {
				fmt.Fprintf(w, "  + %s %s\n", p.Name, p.Version)
			}
		}
		if c.Note == "" || c.File != "" || len(c.Packages) > 0 {
			total++
		}
	}
	if r.Reboot != "" {
		fmt.Fprintf(w, "  reboot needed: %s\n", r.Reboot)
	}
	return total
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
