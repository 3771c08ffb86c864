package up

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
)

// RecordName is the ConfigMap (in the tool's namespace) where up records its plan and
// where each step stands; recordKey is its data key.
const (
	RecordName = "kubectl-gpu-up"
	recordKey  = "record.json"
)

// Record is what a run recorded: the plan's identity (nodes, stack, host installs, each
// release's chart and values) and where each step stands, written before and after each.
type Record struct {
	Stack       Stack           `json:"stack"`
	Nodes       []string        `json:"nodes"`
	HostDriver  string          `json:"hostDriver,omitempty"`
	HostToolkit string          `json:"hostToolkit,omitempty"`
	Releases    []RecordRelease `json:"releases"`
	Steps       []StepRecord    `json:"steps,omitempty"`
}

// RecordRelease is a release of the recorded plan: its chart and a digest of its values.
type RecordRelease struct {
	Release string `json:"release"`
	Chart   string `json:"chart"`
	Values  string `json:"values"`
}

// StepRecord is where one step stands: running (started, not finished: interrupted or
// crashed), done or failed.
type StepRecord struct {
	Step   string    `json:"step"`
	State  string    `json:"state"`
	At     time.Time `json:"at"`
	Detail string    `json:"detail,omitempty"`
}

// Step states.
const (
	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed"
)

func (p *Plan) newRecord(req Request) Record {
	r := Record{Stack: req.Stack, HostDriver: req.Prep.Install.DriverBranch, HostToolkit: req.Prep.Install.ToolkitVersion, Releases: []RecordRelease{}}
	for _, n := range p.Nodes {
		r.Nodes = append(r.Nodes, n.Node)
	}
	for _, rel := range p.Releases {
		b, _ := json.Marshal(rel.Values) // map keys sorted: the same values, the same digest
		sum := sha256.Sum256(b)
		r.Releases = append(r.Releases, RecordRelease{Release: rel.Release, Chart: rel.Chart, Values: "sha256:" + hex.EncodeToString(sum[:8])})
	}
	return r
}

// Step returns the recorded state of a step ("" none).
func (r *Record) Step(name string) StepRecord {
	for _, s := range r.Steps {
		if s.Step == name {
			return s
		}
	}
	return StepRecord{}
}

// Unfinished is the first step the run did not finish ("" none).
func (r *Record) Unfinished() string {
	for _, s := range r.Steps {
		if s.State != StateDone {
			return s.Step
		}
	}
	return ""
}

// Differences says how plan n differs from the recorded one.
func (r *Record) Differences(n Record) []string {
	var out []string
	if r.Stack != n.Stack {
		out = append(out, fmt.Sprintf("stack: %s → %s", r.Stack, n.Stack))
	}
	var added, removed []string
	for _, x := range n.Nodes {
		if !slices.Contains(r.Nodes, x) {
			added = append(added, x)
		}
	}
	for _, x := range r.Nodes {
		if !slices.Contains(n.Nodes, x) {
			removed = append(removed, x)
		}
	}
	if len(added) > 0 {
		out = append(out, "nodes added: "+strings.Join(added, ", "))
	}
	if len(removed) > 0 {
		out = append(out, "nodes no longer chosen: "+strings.Join(removed, ", "))
	}
	if r.HostDriver != n.HostDriver {
		out = append(out, fmt.Sprintf("host driver: %q → %q", r.HostDriver, n.HostDriver))
	}
	if r.HostToolkit != n.HostToolkit {
		out = append(out, fmt.Sprintf("host toolkit: %q → %q", r.HostToolkit, n.HostToolkit))
	}
	old := map[string]RecordRelease{}
	for _, x := range r.Releases {
		old[x.Release] = x
	}
	for _, x := range n.Releases {
		o, ok := old[x.Release]
		switch {
		case !ok:
			out = append(out, "release "+x.Release+": new")
		case o.Chart != x.Chart:
			out = append(out, fmt.Sprintf("release %s: chart %s → %s", x.Release, o.Chart, x.Chart))
		case o.Values != x.Values:
			out = append(out, "release "+x.Release+": other values")
		}
	}
	return out
}

func readRecord(ctx context.Context, cs kubernetes.Interface, ns string) (*Record, error) {
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, RecordName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, cluster.APIError("read ConfigMap "+ns+"/"+RecordName+" (where up records its run)", err)
	}
	var r Record
	if err := json.Unmarshal([]byte(cm.Data[recordKey]), &r); err != nil {
		// A record that does not parse is no record: the plan is shown whole and asked.
		return nil, nil
	}
	return &r, nil
}

// recorder writes the run's record; its writes outlive a Ctrl-C, so that an interrupted
// step is recorded as running.
type recorder struct {
	cs  kubernetes.Interface
	ns  string
	rec Record
}

func (w *recorder) set(ctx context.Context, step, state, detail string) error {
	s := StepRecord{Step: step, State: state, At: time.Now().UTC().Truncate(time.Second), Detail: detail}
	i := slices.IndexFunc(w.rec.Steps, func(x StepRecord) bool { return x.Step == step })
	if i < 0 {
		w.rec.Steps = append(w.rec.Steps, s)
	} else {
		w.rec.Steps[i] = s
	}
	return w.write(context.WithoutCancel(ctx))
}

func (w *recorder) write(ctx context.Context) error {
	b, _ := json.MarshalIndent(w.rec, "", "  ")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: RecordName, Namespace: w.ns,
		Labels: map[string]string{nodepod.LabelManagedBy: nodepod.ManagedBy, nodepod.LabelComponent: "up"}}, Data: map[string]string{recordKey: string(b)}}
	_, err := w.cs.CoreV1().ConfigMaps(w.ns).Update(ctx, cm, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		_, err = w.cs.CoreV1().ConfigMaps(w.ns).Create(ctx, cm, metav1.CreateOptions{})
	}
	if err != nil {
		return cluster.APIError("write ConfigMap "+w.ns+"/"+RecordName+" (where up records its run)", err)
	}
	return nil
}
