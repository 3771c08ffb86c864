package helmrelease

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// Client installs, upgrades, recovers and follows one release namespace's Helm releases of
// any chart: the Helm SDK for the release, client-go for the namespace, nodes and objects.
type Client struct {
	Namespace string
	Helm      *Helm
	CS        kubernetes.Interface
	Dyn       dynamic.Interface
	// Log receives what happens on the way (labels applied, warnings); Progress, when set,
	// a live line rewritten in place (a terminal).
	Log      io.Writer
	Progress io.Writer
}

// NewClient returns a Client for the release namespace ns.
func NewClient(g cluster.Getter, ns string, log io.Writer) (*Client, error) {
	h, err := NewHelm(g, ns, nil)
	if err != nil {
		return nil, err
	}
	cs, err := g.Clientset()
	if err != nil {
		return nil, err
	}
	cfg, err := g.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = io.Discard
	}
	return &Client{Namespace: ns, Helm: h, CS: cs, Dyn: dyn, Log: log}, nil
}

// NewOfflineClient is a Client for work that needs no cluster: loading and rendering the
// chart with values that are not derived from nodes (mirror --derive=false on a machine
// outside the cluster). Its CS and Dyn are nil.
func NewOfflineClient(g cluster.Getter, ns string, log io.Writer) (*Client, error) {
	h, err := NewHelm(g, ns, nil)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = io.Discard
	}
	return &Client{Namespace: ns, Helm: h, Log: log}, nil
}

// Document lays the derivation d under the user's values (and, with a mirror, every image
// repository moved there) for chart ch: the values document of an install, its warnings
// written to the Client's Log too.
func (c *Client) Document(ch *chart.Chart, d Derivation, user map[string]any, m RepositoryMapper) (*ValuesDoc, error) {
	values := Merge(&d, user)
	if m != nil {
		mv, _, err := MirrorValues(ch, values, m)
		if err != nil {
			return nil, err
		}
		where := m.String()
		d.Values = append(d.Values, Derived{Key: "*.repository", Value: where, Reason: "--mirror: every image from " + where})
		values = chartutil.CoalesceTables(copyMap(user), chartutil.CoalesceTables(mv, values))
	}
	doc := &ValuesDoc{TypeMeta: report.Meta(ValuesKind), Chart: ch.Metadata.Name + "-" + ch.Metadata.Version,
		Values: values, Derived: d.Values, NodeLabels: d.NodeLabels,
		Warnings: append(d.Warnings, StaleKeys(user, ch.Values, ch.Metadata.Name, ch.Metadata.Version)...)}
	if doc.Derived == nil {
		doc.Derived = []Derived{}
	}
	for _, w := range doc.Warnings {
		fmt.Fprintf(c.Log, "warning: %s\n", w)
	}
	return doc, nil
}

// InstallRequest is one install or upgrade ("helm upgrade --install"), named as Helm names
// its options. The commands bind their flags onto it (helmflags.BindInstall); a program
// fills it. It is read, never changed.
type InstallRequest struct {
	ReleaseName string
	Wait        bool
	Timeout     time.Duration
	// Atomic, or AtomicDefault: atomic for a first install unless the user said otherwise.
	Atomic        bool
	AtomicDefault bool
	DryRun        bool
	ReuseValues   bool
	ResetValues   bool
	// LabelNodes applies the node labels the derived values need (mixed clusters).
	LabelNodes bool
	// ValuesCommand is the command that shows the values (named in warnings).
	ValuesCommand string
}

// Validate checks the request: options that exclude each other, a timeout.
func (r InstallRequest) Validate() error {
	switch {
	case r.ReuseValues && r.ResetValues:
		return cliexit.Usagef("--reuse-values and --reset-values exclude each other")
	case r.Timeout <= 0:
		return cliexit.Usagef("--timeout must be positive")
	}
	return nil
}

// helm is the request as Helm runs it against the release's current revision: a first
// install atomic when AtomicDefault, and an atomic one waits (Helm's rule).
func (r InstallRequest) helm(cur *release.Release) InstallRequest {
	if cur == nil && r.AtomicDefault {
		r.Atomic = true // first install: no half-installed release
	}
	r.Wait = r.Wait || r.Atomic
	return r
}

// InstallChart installs or upgrades a release of any chart with doc's values, as Install
// does without the operator's own checks.
func (c *Client) InstallChart(ctx context.Context, ch *chart.Chart, doc *ValuesDoc, req InstallRequest) (*release.Release, error) {
	cur, err := c.Helm.Current(req.ReleaseName)
	if err != nil {
		return nil, err
	}
	return c.InstallChartOver(ctx, ch, doc, req, cur)
}

// InstallChartOver is InstallChart over the release's current revision cur (read already).
func (c *Client) InstallChartOver(ctx context.Context, ch *chart.Chart, doc *ValuesDoc, req InstallRequest, cur *release.Release) (*release.Release, error) {
	if !req.DryRun {
		if err := nodepod.EnsureNamespaceNoPods(ctx, c.CS, c.Namespace, nodepod.PSAPrivileged); err != nil {
			return nil, err
		}
		if req.LabelNodes {
			if err := c.LabelNodes(ctx, doc.NodeLabels); err != nil {
				return nil, err
			}
		} else if len(doc.NodeLabels) > 0 {
			what := req.ValuesCommand
			if what == "" {
				what = "kubectl gpu operator values"
			}
			verb := "need"
			if len(doc.NodeLabels) == 1 {
				verb = "needs"
			}
			fmt.Fprintf(c.Log, "warning: %s %s a label for the derived values (see '%s'); pass --label-nodes to apply them\n", report.Count(len(doc.NodeLabels), "GPU node"), verb, what)
		}
	}
	rel, err := c.Helm.InstallOrUpgrade(ctx, ch, doc.Values, req.helm(cur), cur)
	if err != nil {
		return nil, err
	}
	return rel, nil
}

// LabelNodes applies node labels, one merge patch each.
func (c *Client) LabelNodes(ctx context.Context, labels []NodeLabel) error {
	for _, l := range labels {
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, l.Key, l.Value)
		if _, err := c.CS.CoreV1().Nodes().Patch(ctx, l.Node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return cluster.APIError("label node "+l.Node, err)
		}
		fmt.Fprintf(c.Log, "labelled node %s %s=%s\n", l.Node, l.Key, l.Value)
	}
	return nil
}

// ErrNotReadyInTime is what Follow returns, with the last state, when timeout passed.
var ErrNotReadyInTime = errors.New("not ready in time")

// Follow reads a state every two seconds until it says ready or timeout passes, showing what
// it waits for: its summary as a live line on the Client's Progress (a terminal), else a
// line on its Log whenever the summary changes. Ctrl-C is exit 130; timeout passed returns
// the last state (read once more) with ErrNotReadyInTime.
func Follow[S any](ctx context.Context, c *Client, timeout time.Duration, read func(context.Context) (state S, summary string, ready bool, err error)) (S, error) {
	var zero S
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	defer func() {
		if c.Progress != nil && last != "" {
			fmt.Fprint(c.Progress, "\r\033[K")
		}
	}()
	for {
		st, s, ready, err := read(wctx)
		switch {
		case err != nil && wctx.Err() == nil && !nearDeadline(err):
			return zero, err
		case err != nil:
			// The time ran out during the read (the client's rate limiter says so before
			// the deadline passes): the timeout's answer below, not the read's error.
			<-wctx.Done()
		case err == nil && ready:
			return st, nil
		case err == nil && s != last:
			if c.Progress != nil {
				fmt.Fprintf(c.Progress, "\r\033[Kwaiting: %s", nodepod.Fit(s, 160))
			} else {
				fmt.Fprintf(c.Log, "waiting: %s\n", s)
			}
			last = s
		}
		select {
		case <-wctx.Done():
		case <-time.After(2 * time.Second):
			continue
		}
		break
	}
	if ctx.Err() != nil {
		return zero, cliexit.ErrInterrupted
	}
	st, _, _, err := read(context.WithoutCancel(ctx))
	if err != nil {
		return zero, err
	}
	return st, ErrNotReadyInTime
}

// nearDeadline tells whether a read failed because the wait's deadline was about to pass:
// client-go's rate limiter refuses a request it could not send before it.
func nearDeadline(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "would exceed context deadline")
}

// ManifestSummary counts the rendered objects of a release by kind.
func ManifestSummary(rel *release.Release) string {
	counts := map[string]int{}
	for _, doc := range strings.Split(rel.Manifest, "\n---") {
		for _, line := range strings.Split(doc, "\n") {
			if strings.HasPrefix(line, "kind: ") {
				counts[strings.TrimPrefix(line, "kind: ")]++
				break
			}
		}
	}
	var kinds []string
	for k := range counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	for _, k := range kinds {
		fmt.Fprintf(&b, "#   %-32s %d\n", k, counts[k])
	}
	return b.String()
}
