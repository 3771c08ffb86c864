package operator

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/release"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
)

// Client is the Helm release client with the operator's own verbs: its values derived from
// the nodes, its install checks, its status, wait and uninstall.
type Client struct{ *helmrelease.Client }

// NewClient returns a Client for the release namespace ns.
func NewClient(g cluster.Getter, ns string, log io.Writer) (*Client, error) {
	c, err := helmrelease.NewClient(g, ns, log)
	if err != nil {
		return nil, err
	}
	return &Client{c}, nil
}

// NewOfflineClient is a Client for work that needs no cluster (helmrelease.NewOfflineClient).
func NewOfflineClient(g cluster.Getter, ns string, log io.Writer) (*Client, error) {
	c, err := helmrelease.NewOfflineClient(g, ns, log)
	if err != nil {
		return nil, err
	}
	return &Client{c}, nil
}

// ValuesRequest is what decides the values of an install.
type ValuesRequest struct {
	Source helmrelease.ChartSource
	// User values (-f, --set…), already merged by Helm's rules; they win over derived ones.
	User map[string]any
	// Derive values from the cluster's GPU nodes.
	Derive bool
	// DRA renders the GPUCluster (DRA) stack instead of the ClusterPolicy, after checking
	// its prerequisites on the cluster.
	DRA bool
	// Mirror, when set, moves every repository of the chart's values to it (air-gapped
	// sites, MirrorValues); the result is laid under the user's values like a derived
	// value.
	Mirror helmrelease.RepositoryMapper
	// Nodes, when set, are the nodes values are derived from in place of the cluster's
	// (kubectl gpu up: the nodes as its host changes will leave them).
	Nodes []corev1.Node
	// UpgradePolicy, when set, derives the driver's upgradePolicy from the roll's options,
	// so that the operator's driver upgrade takes nodes out as up's own roll does.
	UpgradePolicy *UpgradePolicy
}

// Values loads the chart and computes the install's values, each derived one with its
// reason; warnings are written to the Client's Log too.
func (c *Client) Values(ctx context.Context, req ValuesRequest) (*chart.Chart, *helmrelease.ValuesDoc, error) {
	// The chart is loaded while the nodes are listed; its error is said first.
	type loaded struct {
		ch  *chart.Chart
		err error
	}
	lc := make(chan loaded, 1)
	go func() {
		ch, err := c.Helm.LoadChart(Source(req.Source))
		lc <- loaded{ch, err}
	}()
	need := req.Derive || req.DRA
	nodes := &corev1.NodeList{Items: req.Nodes}
	var listErr error
	if need && req.Nodes == nil {
		nodes, listErr = c.CS.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	}
	l := <-lc
	if l.err != nil {
		return nil, nil, l.err
	}
	if listErr != nil {
		return nil, nil, cluster.APIError("list nodes", listErr)
	}
	ch := l.ch
	var d helmrelease.Derivation
	if need {
		if req.Derive {
			d = Derive(nodes.Items)
		}
		if req.DRA {
			sv, err := c.CS.Discovery().ServerVersion()
			if err != nil {
				return nil, nil, cluster.APIError("read the server version", err)
			}
			warnings, err := c.DRAPrerequisites(ctx, sv.GitVersion, nodes.Items)
			if err != nil {
				return nil, nil, err
			}
			d.Values = append(d.Values, DRAValues()...)
			if !derivedFalse(d.Values, "driver.enabled") {
				d.Values = append(d.Values, helmrelease.Derived{Key: "driver.nvidiaDriverCRD.enabled", Value: true,
					Reason: "--dra with the operator's driver: the GPUCluster stack deploys it through NVIDIADriver resources (the chart requires this key)"})
			}
			d.Warnings = append(d.Warnings, warnings...)
		}
	}
	if req.UpgradePolicy != nil && !derivedFalse(d.Values, "driver.enabled") {
		d.Values = append(d.Values, req.UpgradePolicy.Derived()...)
	}
	doc, err := c.Document(ch, d, req.User, req.Mirror)
	if err != nil {
		return nil, nil, err
	}
	return ch, doc, nil
}

func derivedFalse(vs []helmrelease.Derived, key string) bool {
	for _, v := range vs {
		if v.Key == key && v.Value == false {
			return true
		}
	}
	return false
}

// Install installs or upgrades the release with doc's values: the namespace is created
// with the privileged Pod Security label and node labels applied when asked. Wait is
// Helm's (resources ready); WaitReady follows the operator itself.
// It refuses, changing nothing, when another device plugin runs in the cluster and the
// operator's own is not turned off.
func (c *Client) Install(ctx context.Context, ch *chart.Chart, doc *helmrelease.ValuesDoc, req helmrelease.InstallRequest) (*release.Release, error) {
	// The release's history is read while the cluster is searched for another plugin.
	other := make(chan error, 1)
	go func() { other <- c.CheckNoOtherDevicePlugin(ctx, doc.Values, req.ReleaseName) }()
	cur, err := c.Helm.Current(req.ReleaseName)
	if oerr := <-other; oerr != nil {
		return nil, oerr
	}
	if err != nil {
		return nil, err
	}
	return c.InstallChartOver(ctx, ch, doc, req, cur)
}

// Status collects the release's, the ClusterPolicy's (or GPUCluster's), the operands' and
// the validators' state.
func (c *Client) Status(ctx context.Context, releaseName string) (*Status, error) {
	rel, err := c.Helm.ReleaseStatus(releaseName)
	if err != nil {
		return nil, err
	}
	return CollectStatus(ctx, c.CS, c.Dyn, c.Namespace, rel)
}

// WaitDriverUpgrade follows the driver upgrade of the given nodes only (the others are held
// back, such as by the skip label) until each is upgrade-done, showing each one's state and
// what holds it; not done in time is exit 1 naming them.
func (c *Client) WaitDriverUpgrade(ctx context.Context, releaseName string, nodes []string, timeout time.Duration) (*Status, error) {
	st, err := helmrelease.Follow(ctx, c.Client, timeout, func(ctx context.Context) (*Status, string, bool, error) {
		st, err := c.Status(ctx, releaseName)
		if err != nil {
			return nil, "", false, err
		}
		var only []DriverUpgradeNode
		for _, n := range st.DriverUpgrade {
			if slices.Contains(nodes, n.Node) {
				only = append(only, n)
			}
		}
		done := true
		for _, n := range only {
			done = done && n.Finished()
		}
		return st, DriverUpgradeSummary(only, time.Now()), done, nil
	})
	if errors.Is(err, helmrelease.ErrNotReadyInTime) {
		return st, cliexit.Failuresf("the operator's driver upgrade of %s did not finish within %s: %s", strings.Join(nodes, ", "), timeout, st.Hint)
	}
	return st, err
}

// WaitReady follows the status every two seconds until it is ready or timeout passes,
// showing what it waits for (a live line on Progress, else one line per change on Log).
// It returns the last status; not ready in time is exit 1 naming the failing component.
func (c *Client) WaitReady(ctx context.Context, releaseName string, timeout time.Duration) (*Status, error) {
	st, err := helmrelease.Follow(ctx, c.Client, timeout, func(ctx context.Context) (*Status, string, bool, error) {
		st, err := c.Status(ctx, releaseName)
		if err != nil {
			return nil, "", false, err
		}
		return st, st.Summary(), st.Ready, nil
	})
	if errors.Is(err, helmrelease.ErrNotReadyInTime) {
		return st, cliexit.Failuresf("the GPU Operator is not ready after %s: %s: %s", timeout, st.Failing, st.Hint)
	}
	return st, err
}

// CRDGroups are the API groups of the CRDs the chart installs.
var CRDGroups = []string{"nvidia.com", "nfd.k8s-sigs.io"}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// Uninstall removes the release and, with removeCRDs, the chart's CRDs (and so every
// ClusterPolicy, GPUCluster, NVIDIADriver, NFD rule). Nodes are left as they are. It
// returns the CRDs removed.
func (c *Client) Uninstall(ctx context.Context, releaseName string, timeout time.Duration, removeCRDs bool) ([]string, error) {
	if err := c.Helm.Uninstall(releaseName, timeout); err != nil {
		return nil, err
	}
	if !removeCRDs {
		return nil, nil
	}
	list, err := c.Dyn.Resource(crdGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cluster.APIError("list CustomResourceDefinitions", err)
	}
	var removed []string
	for _, crd := range list.Items {
		for _, g := range CRDGroups {
			if strings.HasSuffix(crd.GetName(), "."+g) {
				if err := c.Dyn.Resource(crdGVR).Delete(ctx, crd.GetName(), metav1.DeleteOptions{}); err != nil {
					return removed, cluster.APIError("delete CRD "+crd.GetName(), err)
				}
				removed = append(removed, crd.GetName())
			}
		}
	}
	return removed, nil
}
