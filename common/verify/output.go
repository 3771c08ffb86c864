package verify

import (
	"encoding/xml"
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

type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes the report as JUnit XML: one testcase per node.
func (r *Report) WriteJUnit(w io.Writer) error {
	s := junitSuite{Name: "kubectl-gpu verify", Tests: r.Summary.Nodes, Failures: r.Summary.Failed}
	var total float64
	for _, it := range r.Items {
		c := junitCase{Name: it.Node, Classname: "gpu.verify", Time: strconv.FormatFloat(it.DurationSeconds, 'f', 1, 64)}
		total += it.DurationSeconds
		if it.Result != Passed {
			c.Failure = &junitFailure{Message: it.Detail, Type: string(it.Reason), Text: it.Hint}
		} else {
			c.SystemOut = it.Detail
		}
		s.Cases = append(s.Cases, c)
	}
	s.Time = strconv.FormatFloat(total, 'f', 1, 64)
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(junitSuites{Suites: []junitSuite{s}}); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}
