package helmrelease

import (
	"fmt"
	"io"

	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// ValuesKind is the kind of the values document.
const ValuesKind = "OperatorValues"

// ValuesDoc is `kubectl gpu operator values`: the final values and why each derived key
// has its value.
type ValuesDoc struct {
	report.TypeMeta `json:",inline"`
	Chart           string         `json:"chart"`
	Values          map[string]any `json:"values"`
	Derived         []Derived      `json:"derived"`
	NodeLabels      []NodeLabel    `json:"nodeLabels,omitempty"`
	Warnings        []string       `json:"warnings,omitempty"`
}

// WriteText prints the values as a values file with the reasons as comments.
func (d *ValuesDoc) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "# Values for %s\n", d.Chart)
	for _, v := range d.Derived {
		state := "derived"
		if v.Overridden {
			state = "derived, overridden"
		}
		fmt.Fprintf(w, "# %s (%s): %s\n", v.Key, state, v.Reason)
	}
	for _, l := range d.NodeLabels {
		fmt.Fprintf(w, "# node %s needs label %s=%s: %s (--label-nodes applies it)\n", l.Node, l.Key, l.Value, l.Reason)
	}
	if len(d.Derived) == 0 {
		fmt.Fprintln(w, "# nothing derived: the chart's defaults fit the cluster")
	}
	if len(d.Values) == 0 {
		fmt.Fprintln(w, "{}")
		return nil
	}
	b, err := yaml.Marshal(d.Values)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
