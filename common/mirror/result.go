package mirror

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// ResultKind is the kind of what a copy, an archive or a push from an archive did.
const ResultKind = "MirrorResult"

// Result is what mirror --to, --to-archive or --from-archive did.
type Result struct {
	report.TypeMeta `json:",inline"`
	// Mirror is the registry written (--to); Archive the OCI layout written or read.
	Mirror  string       `json:"mirror,omitempty"`
	Archive string       `json:"archive,omitempty"`
	Images  []CopyResult `json:"images"`
	// Chart is the (first) chart pushed or written; Charts every one of them.
	Chart  *CopyResult  `json:"chart,omitempty"`
	Charts []CopyResult `json:"charts,omitempty"`
	// ValuesFile is the values file written for the mirror; Use the commands that use it.
	ValuesFile string   `json:"valuesFile,omitempty"`
	Use        []string `json:"use,omitempty"`
}

// WriteText prints the result for a terminal.
func (r *Result) WriteText(w io.Writer) error {
	if r.Mirror == "" {
		fmt.Fprintf(w, "%d images in the OCI layout %s", len(r.Images), r.Archive)
		for _, c := range r.Charts {
			fmt.Fprintf(w, ", and the chart %s", c.Mirror)
		}
		fmt.Fprintln(w)
		return nil
	}
	copied, present := 0, 0
	for _, c := range r.Images {
		switch {
		case c.Error != "":
		case c.Skipped:
			present++
		default:
			copied++
		}
	}
	fmt.Fprintf(w, "%d images copied, %d already in the mirror (of %d)\n", copied, present, len(r.Images))
	for _, c := range r.Images {
		if c.Error != "" {
			fmt.Fprintf(w, "  %s: %s\n", c.Image, c.Error)
		}
	}
	for _, c := range r.Charts {
		state := "pushed to"
		if c.Skipped {
			state = "already in the mirror at"
		}
		fmt.Fprintf(w, "%s %s %s\n", c.Image, state, c.Mirror)
	}
	if r.ValuesFile != "" {
		fmt.Fprintf(w, "values for the mirror written to %s; use the mirror with:\n", r.ValuesFile)
	} else if len(r.Use) > 0 {
		fmt.Fprintln(w, "use the mirror with:")
	}
	for _, u := range r.Use {
		fmt.Fprintf(w, "  %s\n", u)
	}
	return nil
}

func newResult() *Result { return &Result{TypeMeta: report.Meta(ResultKind)} }

// addChart records a chart pushed or written.
func (r *Result) addChart(c CopyResult) {
	r.Charts = append(r.Charts, c)
	r.Chart = &r.Charts[0]
}

// ToMirror copies the list's images into the mirror and pushes its charts there, then (for
// the GPU Operator) writes the values that make the install req describes use the mirror to
// valuesOut (atomically) and names the commands that use it. A partial copy returns the
// result with the failures (and no values).
func ToMirror(ctx context.Context, c *op.Client, l *List, req op.ValuesRequest, t Target, valuesOut string, o CopyOptions) (*Result, error) {
	r := newResult()
	r.Mirror = t.String()
	var err error
	if r.Images, err = Copy(ctx, l.Refs(), t, o); err != nil {
		if r.Images == nil {
			return nil, err
		}
		return r, err
	}
	dir, err := os.MkdirTemp("", "kubectl-gpu-chart-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	for _, ch := range l.charts {
		tgz, err := PackageChart(ch, dir)
		if err != nil {
			return r, err
		}
		cr, err := PushChart(ctx, tgz, t, o)
		r.addChart(cr)
		if err != nil {
			return r, err
		}
	}
	plain := ""
	if t.Insecure {
		plain = " --plain-http"
	}
	if l.devicePlugin {
		dcgm := ""
		if len(l.charts) > 1 {
			dcgm = " --dcgm-exporter"
		}
		r.Use = append(r.Use, fmt.Sprintf("kubectl gpu device-plugin install --mirror %s%s%s", t.String(), plain, dcgm))
		return r, r.useOwn(l, t)
	}
	vals, err := InstallValues(ctx, c, req, t)
	if err != nil {
		return r, err
	}
	b, err := yaml.Marshal(vals)
	if err != nil {
		return r, err
	}
	b = append([]byte("# The GPU Operator's images from the mirror "+t.String()+" (kubectl gpu mirror).\n"), b...)
	if err := writeAtomic(valuesOut, b); err != nil {
		return r, cliexit.Usagef("cannot write --values-out: %v", err)
	}
	r.ValuesFile = valuesOut
	r.Use = append(r.Use, fmt.Sprintf("kubectl gpu operator install --chart %s --version %s%s -f %s", t.ChartRef(), l.charts[0].Metadata.Version, plain, valuesOut))
	return r, r.useOwn(l, t)
}

// useOwn adds the prep and verify commands that use the mirror's copies of their images.
func (r *Result) useOwn(l *List, t Target) error {
	for _, use := range []struct{ from, cmd string }{{agentFrom, "kubectl gpu prep --image "}, {verifyFrom, "kubectl gpu verify --image "}} {
		for _, im := range l.Images {
			if im.From != use.from {
				continue
			}
			m, err := t.Map(im.Ref)
			if err != nil {
				return err
			}
			r.Use = append(r.Use, use.cmd+m)
		}
	}
	return nil
}

// ToArchiveAll writes the list's images into the OCI layout dir, and its chart into the
// layout's charts/ directory.
func ToArchiveAll(ctx context.Context, l *List, dir string, o CopyOptions) (*Result, error) {
	if err := ToArchive(ctx, l.Refs(), dir, o); err != nil {
		return nil, err
	}
	r := newResult()
	r.Archive = dir
	for _, im := range l.Images {
		r.Images = append(r.Images, CopyResult{Image: im.Ref})
	}
	for _, ch := range l.charts {
		tgz, err := PackageChart(ch, filepath.Join(dir, ArchiveCharts))
		if err != nil {
			return r, err
		}
		r.addChart(CopyResult{Image: "chart " + ch.Metadata.Name + " " + ch.Metadata.Version, Mirror: tgz})
	}
	return r, nil
}

// FromArchiveAll pushes an OCI layout written by ToArchiveAll into the mirror: its images,
// then the chart it carries.
func FromArchiveAll(ctx context.Context, dir string, t Target, o CopyOptions) (*Result, error) {
	r := newResult()
	r.Mirror, r.Archive = t.String(), dir
	var err error
	if r.Images, err = FromArchive(ctx, dir, t, o); err != nil {
		if r.Images == nil {
			return nil, err
		}
		return r, err
	}
	for _, tgz := range ChartsInArchive(dir) {
		cr, err := PushChart(ctx, tgz, t, o)
		r.addChart(cr)
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
