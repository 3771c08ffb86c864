package verify

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// Rows prints the report as a table; each failed node's hint follows under the table.
func (r *Report) Rows(wide bool) ([]string, [][]string) {
	header := []string{"NODE", "GPUS", "RESULT", "DURATION", "DETAIL"}
	if wide {
		header = append(header, "REASON", "CLAIM", "SHARING", "POD")
	}
	rows := make([][]string, 0, len(r.Items))
	for _, it := range r.Items {
		row := []string{it.Node, strconv.FormatInt(it.GPUs, 10), string(it.Result),
			(time.Duration(it.DurationSeconds * float64(time.Second))).Round(100 * time.Millisecond).String(), it.Detail}
		if wide {
			sharing := it.Sharing
			if sharing == "" {
				sharing = "-"
			}
			row = append(row, dashIfEmpty(string(it.Reason)), string(it.Claim), sharing, it.Pod)
		}
		rows = append(rows, row)
	}
	return header, rows
}

// WriteSummary prints the summary line and one hint per failed node.
func (r *Report) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "\n%s: %d passed, %d failed\n", report.Count(r.Summary.Nodes, "node"), r.Summary.Passed, r.Summary.Failed)
	var shared []string
	for _, it := range r.Items {
		if it.Result != Passed && it.Hint != "" {
			fmt.Fprintf(w, "  %s: %s\n", it.Node, it.Hint)
		}
		if it.Result == Passed && it.Sharing != "" {
			shared = append(shared, it.Node+" ("+it.Sharing+")")
		}
	}
	if len(shared) > 0 {
		fmt.Fprintf(w, "  note: %s share their GPUs: a pass there proves the pod reached a GPU, not that it is isolated from the other replicas\n", strings.Join(shared, ", "))
	}
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteJUnit writes the report as JUnit XML: one testcase per node.
func (r *Report) WriteJUnit(w io.Writer) error {
	s := report.JUnitSuite{Name: "kubectl-gpu verify", Tests: r.Summary.Nodes, Failures: r.Summary.Failed}
	var total float64
	for _, it := range r.Items {
		c := report.JUnitCase{Name: it.Node, Classname: "gpu.verify", Time: strconv.FormatFloat(it.DurationSeconds, 'f', 1, 64)}
		total += it.DurationSeconds
		if it.Result != Passed {
			c.Failure = &report.JUnitFailure{Message: it.Detail, Type: string(it.Reason), Text: it.Hint}
		} else {
			c.SystemOut = it.Detail
		}
		s.Cases = append(s.Cases, c)
	}
	s.Time = strconv.FormatFloat(total, 'f', 1, 64)
	return report.WriteJUnit(w, s)
}
