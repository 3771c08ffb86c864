// Package up is `kubectl gpu up`: the runbook as one plan on the library entry points —
// prep's host changes with the rolling reboot, the GPU software's release (the GPU
// Operator, or the device plugin), and verify on every GPU node — shown first, asked once,
// and resumable: where a run stands is on the nodes (the roll's annotations) and in one
// ConfigMap of the tool's namespace.
package up

import (
	"context"
	"encoding/json"
	"io"
	"reflect"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/release"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	dp "github.com/kubectl-gpu/kubectl-gpu/common/deviceplugin"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	rep "github.com/kubectl-gpu/kubectl-gpu/common/nodereport"
	op "github.com/kubectl-gpu/kubectl-gpu/common/operator"
	"github.com/kubectl-gpu/kubectl-gpu/common/prep"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
	"github.com/kubectl-gpu/kubectl-gpu/common/verify"
)

// Kinds of the documents.
const (
	PlanKind   = "UpPlan"
	ReportKind = "UpReport"
)

// Stack is the GPU software up installs.
type Stack string

// The stacks: the GPU Operator (its ClusterPolicy), or the runbook's path without it —
// host driver and toolkit, NVIDIA's device plugin chart.
const (
	StackOperator     Stack = "operator"
	StackDevicePlugin Stack = "device-plugin"
)

// Request is one `up`: what a program (or the command's flags) asks of MakePlan and Run.
// Neither changes it.
type Request struct {
	// Names, Selector: the nodes (default: those that look like GPU nodes). They are
	// passed to prep and to verify.
	Names    []string
	Selector string
	Stack    Stack
	// Prep is the host step: its Install (--host-driver, --host-toolkit) and Roll (always
	// set by the command: the nodes whose changes need a reboot are rolled). Apply is
	// implied; Names and Selector are the Request's.
	Prep prep.Request
	// Operator (StackOperator) or DevicePlugin (StackDevicePlugin): the chart, the user's
	// values and the mirror. Their nodes are the plan's (see MakePlan).
	Operator     op.ValuesRequest
	DevicePlugin dp.Request
	// Install is Helm's part: release name (the operator's), timeout of the install and
	// of the wait until the GPU software is ready.
	Install helmrelease.InstallRequest
	// Verify is the last step; Names and Selector are the Request's GPU nodes.
	Verify verify.Request
	// Canary is how many rolled nodes go first, each done (and proven, on day two) before
	// any other node is drained (--canary; 0: none).
	Canary int
	// Decisions made by the caller (the command's --mirror) to show with the plan's own.
	Decisions []Decision
	// Progress receives a line as each step starts and ends, and the steps' own progress.
	Progress io.Writer
}

// Clients are what up talks to: the cluster, and Helm in the release's namespace.
type Clients struct {
	CS      kubernetes.Interface
	Dynamic dynamic.Interface
	Release *op.Client
}

// Decision ties two steps: what is decided, and why.
type Decision struct {
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
}

// NodePlan is one node's part of the plan.
type NodePlan struct {
	Node string `json:"node"`
	// GPUs on the node's PCI bus (as the agent found them).
	GPUs    int          `json:"gpus"`
	Changes []rep.Change `json:"changes,omitempty"`
	// Reboot says why the node is rolled (drained and rebooted); "" it is not.
	Reboot string `json:"reboot,omitempty"`
	// Resumes names the step the node's unfinished roll goes on after: where an earlier run
	// stopped, or "cordoned" when its plan has changes again past its install (a new target:
	// it is installed and rebooted again for them; prep.ResumeAfter).
	Resumes string `json:"resumes,omitempty"`
	// Problem is why the agent could not plan the node.
	Problem string `json:"problem,omitempty"`
	// Versions are the host driver and toolkit moved from the installed version to the
	// target; Evicts the GPU pods the drain of a rolled node evicts.
	Versions []VersionChange `json:"versions,omitempty"`
	Evicts   []Eviction      `json:"evicts,omitempty"`
}

// ReleasePlan is a Helm release of the plan.
type ReleasePlan struct {
	Release   string `json:"release"`
	Namespace string `json:"namespace"`
	Chart     string `json:"chart"`
	// From is the chart the deployed release runs when the plan moves it to another;
	// Driver the driver version the operator's driver containers move from and to (an
	// upgrade of a release whose values change driver.version).
	From   string         `json:"from,omitempty"`
	Driver *VersionChange `json:"driver,omitempty"`
	// Action: install, upgrade, reinstall (an earlier install or uninstall was interrupted),
	// rollback (to revision RollbackTo, which ran this chart with these values) or unchanged
	// (deployed with these values).
	Action     string `json:"action"`
	RollbackTo int    `json:"rollbackTo,omitempty"`
	// Recovery is what the release's state needs first (an interrupted or failed operation
	// left it so), the way Helm allows it.
	Recovery *helmrelease.Recovery `json:"recovery,omitempty"`
	Revision int                   `json:"revision,omitempty"`
	Values   map[string]any        `json:"values"`
	Derived  []helmrelease.Derived `json:"derived,omitempty"`
	// NodeLabels are the labels the derived values need on nodes (mixed clusters): the
	// install applies them.
	NodeLabels []helmrelease.NodeLabel `json:"nodeLabels,omitempty"`
	Warnings   []string                `json:"warnings,omitempty"`
}

// Release actions.
const (
	ActionInstall   = "install"
	ActionUpgrade   = "upgrade"
	ActionReinstall = "reinstall"
	// ActionRollback: back to an earlier revision that ran the same chart and values
	// (RollbackTo), by Helm's rollback.
	ActionRollback  = "rollback"
	ActionUnchanged = "unchanged"
)

// Plan is the `UpPlan`: every step for the whole cluster, the decisions that tie them,
// and where an earlier run stands. MakePlan makes it; Run carries it out.
type Plan struct {
	report.TypeMeta `json:",inline"`
	Stack           Stack         `json:"stack"`
	Nodes           []NodePlan    `json:"nodes"`
	Decisions       []Decision    `json:"decisions"`
	Releases        []ReleasePlan `json:"releases"`
	// Canary are the rolled nodes that go first: the others are drained only after each of
	// them is done. ProveRolled: each rolled node is verified before it is uncordoned (the
	// GPU software is deployed already; see the decisions).
	Canary      []string `json:"canary,omitempty"`
	ProveRolled bool     `json:"proveRolled,omitempty"`
	// DriverCanary are the GPU nodes the operator's own driver upgrade goes to first;
	// DriverHeld the others, held back (the controller's skip label) until the canary is
	// upgraded and verified — by this run, or by an earlier one this run goes on from.
	DriverCanary []string `json:"driverCanary,omitempty"`
	DriverHeld   []string `json:"driverHeld,omitempty"`
	// VerifyNodes are the GPU nodes verify runs on at the end.
	VerifyNodes []string `json:"verifyNodes"`
	VerifyImage string   `json:"verifyImage"`
	// Recorded is the earlier run's record (nil: none); Differences how this plan differs
	// from it (new nodes, other flags).
	Recorded    *Record  `json:"recorded,omitempty"`
	Differences []string `json:"differences,omitempty"`

	prep   *prep.Plan
	prepRq prep.Request
	charts []*chart.Chart
	docs   []*helmrelease.ValuesDoc
	dpPlan *dp.Plan
	record Record
}

// Changes counts what the plan changes: the host changes, rolled nodes and releases to
// install or upgrade. Zero: the cluster is up, and Run only verifies.
func (p *Plan) Changes() int {
	n := p.prep.Changes()
	if len(p.DriverCanary) == 0 {
		n += len(p.DriverHeld) // an earlier run's hold, released after its canary is verified
	}
	for _, r := range p.Releases {
		if r.Action != ActionUnchanged {
			n++
		}
	}
	return n
}

// prepRequest is the Request's prep step.
func (r *Request) prepRequest() prep.Request {
	pr := r.Prep
	pr.Names, pr.Selector, pr.All, pr.Apply = r.Names, r.Selector, false, true
	pr.PlanOut, pr.Confirm = nil, nil
	if pr.Progress == nil {
		pr.Progress = r.Progress
	}
	return pr
}

// Validate refuses what no cluster can satisfy.
func (r *Request) Validate() error {
	switch {
	case r.Stack != StackOperator && r.Stack != StackDevicePlugin:
		return cliexit.Usagef("--stack %q: use operator or device-plugin", r.Stack)
	case r.Prep.Roll == nil:
		return cliexit.Usagef("up rolls the nodes whose changes need a reboot: the prep request needs its Roll options")
	case r.Install.Timeout <= 0:
		return cliexit.Usagef("--timeout must be positive")
	case r.Canary < 0:
		return cliexit.Usagef("--canary must not be negative (0: no canary)")
	}
	if r.Stack == StackDevicePlugin {
		return r.DevicePlugin.Validate()
	}
	return nil
}

// MakePlan reads the nodes once (prep's agents in plan mode, then one node list), derives
// the release's values from the nodes as the host changes will leave them, and compares it
// all with the cluster's release and the earlier run's record. It changes nothing on any
// node; like prep's plan it creates and removes the agents' Jobs.
func MakePlan(ctx context.Context, c Clients, req Request) (*Plan, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	p := &Plan{TypeMeta: report.Meta(PlanKind), Stack: req.Stack, prepRq: req.prepRequest(), Decisions: []Decision{}, Releases: []ReleasePlan{}}
	pp, err := prep.MakePlan(ctx, c.CS, &p.prepRq)
	prep.TellLeftCordoned(ctx, c.CS, &p.prepRq, nil, err)
	if err != nil {
		if pp != nil && pp.Report != nil {
			return nil, cliexit.Failuresf("the host step's plan failed: nothing was changed on any node; %s", planFailures(pp.Report))
		}
		return nil, err
	}
	p.prep = pp
	list, err := c.CS.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return nil, cluster.APIError("list nodes", err)
	}
	rolled := map[string]bool{}
	for _, n := range pp.Roll {
		rolled[n] = true
	}
	byNode := map[string]*rep.Report{}
	for _, it := range pp.Report.Items {
		np := NodePlan{Node: it.Node, Problem: it.Error}
		if it.Report != nil {
			byNode[it.Node] = it.Report
			np.GPUs, np.Changes = len(it.Report.GPUs), it.Report.Changes
			np.Versions = versionChanges(it.Report, req.Prep.Install.Branch())
			if rolled[it.Node] {
				np.Reboot = it.Report.Reboot
			}
		}
		if rolled[it.Node] {
			st := prep.ReadRollState(pp.Objects[it.Node])
			np.Resumes = string(prep.ResumeAfter(st, it.Error == "" && prep.ChangesToMake(it.Report)))
			if np.Reboot == "" {
				np.Reboot = "an earlier roll stopped on it"
			}
		}
		if np.GPUs > 0 || np.Problem != "" || it.Report == nil {
			p.VerifyNodes = append(p.VerifyNodes, it.Node)
		}
		p.Nodes = append(p.Nodes, np)
	}
	if len(pp.Roll) > 0 {
		ev, err := evictions(ctx, c.CS, pp.Roll)
		if err != nil {
			return nil, err
		}
		for i := range p.Nodes {
			p.Nodes[i].Evicts = ev[p.Nodes[i].Node]
		}
	}
	if len(p.VerifyNodes) == 0 {
		return nil, cliexit.Usagef("none of the %d node(s) has an NVIDIA GPU on its PCI bus: name the GPU nodes, or pass -l SELECTOR", len(pp.Nodes))
	}
	expected := Expected(list.Items, byNode, req.Prep.Install.Branch())
	p.Decisions = append(p.Decisions, decisions(req, pp, byNode)...)
	p.Decisions = append(p.Decisions, req.Decisions...)
	switch req.Stack {
	case StackOperator:
		if err := p.planOperator(ctx, c, req, expected); err != nil {
			return nil, err
		}
	case StackDevicePlugin:
		if err := p.planDevicePlugin(ctx, c, req, expected); err != nil {
			return nil, err
		}
	}
	p.planCanary(req)
	held, err := heldNodes(ctx, c)
	if err != nil {
		return nil, err
	}
	p.planDriverCanary(req, held)
	p.VerifyImage = req.Verify.Image
	p.record = p.newRecord(req)
	rec, err := readRecord(ctx, c.CS, req.Prep.Namespace)
	if err != nil {
		return nil, err
	}
	if rec != nil {
		p.Recorded = rec
		p.Differences = rec.Differences(p.record)
	}
	return p, nil
}

func planFailures(r *prep.Report) string {
	var s []string
	for _, it := range r.Items {
		if it.Error != "" {
			s = append(s, "node "+it.Node+": "+it.Error)
		}
	}
	return strings.Join(s, "; ")
}

func (p *Plan) planOperator(ctx context.Context, c Clients, req Request, nodes []corev1.Node) error {
	vr := req.Operator
	vr.Derive, vr.Nodes = true, nodes
	if o := req.Prep.Roll; o != nil {
		vr.UpgradePolicy = &op.UpgradePolicy{MaxUnavailable: o.MaxUnavailable, Force: o.Force, DeleteEmptyDirData: o.DeleteEmptyDirData, DrainTimeout: o.DrainTimeout}
	}
	ch, doc, err := c.Release.Values(ctx, vr)
	if err != nil {
		return err
	}
	if err := c.Release.CheckNoOtherDevicePlugin(ctx, doc.Values, req.Install.ReleaseName); err != nil {
		return err
	}
	rp, err := releasePlan(c.Release, req.Install.ReleaseName, ch, doc.Values)
	if err != nil {
		return err
	}
	rp.Derived, rp.NodeLabels, rp.Warnings = doc.Derived, doc.NodeLabels, doc.Warnings
	p.Releases = append(p.Releases, rp)
	p.charts, p.docs = append(p.charts, ch), append(p.docs, doc)
	return nil
}

func (p *Plan) planDevicePlugin(ctx context.Context, c Clients, req Request, nodes []corev1.Node) error {
	dr := req.DevicePlugin
	dr.Nodes = nodes
	plan, err := dp.Values(ctx, c.Release.Client, dr)
	if err != nil {
		return err
	}
	if len(plan.OtherDevicePlugins) > 0 {
		var s []string
		for _, a := range plan.OtherDevicePlugins {
			s = append(s, a.String())
		}
		return cliexit.Usagef("%s already allocates GPUs: --stack device-plugin would advertise them twice; use --stack operator, or remove it (nothing was changed)", strings.Join(s, ", "))
	}
	if len(plan.UnreadyNodes) > 0 && req.Prep.Install.DriverBranch != "" && req.Prep.Install.ToolkitVersion != "" {
		// The host step installs both; a node part-way through it (installed, not yet
		// rebooted) is checked again after the host step, before the install.
		for _, n := range plan.UnreadyNodes {
			p.Decisions = append(p.Decisions, Decision{Decision: "node " + n.Node + " is checked again for the device plugin after the host step",
				Reason: "as planned it is not ready yet: " + strings.Join(n.Reasons, "; ")})
		}
		plan.UnreadyNodes = nil
	}
	if len(plan.UnreadyNodes) > 0 {
		n := plan.UnreadyNodes[0]
		return cliexit.Usagef("node %s will not be ready for the device plugin after the host step (%s): --stack device-plugin needs the driver and the toolkit on the host — pass --host-driver and --host-toolkit, or use --stack operator (nothing was changed)",
			n.Node, strings.Join(n.Reasons, "; "))
	}
	if plan.CreateRuntimeClass != "" {
		p.Decisions = append(p.Decisions, Decision{Decision: "RuntimeClass nvidia is created", Reason: plan.CreateRuntimeClass})
	}
	for i, r := range plan.Releases {
		rp, err := releasePlan(c.Release, r.Release, plan.Chart(i), r.Values)
		if err != nil {
			return err
		}
		rp.Derived, rp.NodeLabels, rp.Warnings = r.Derived, r.NodeLabels, r.Warnings
		p.Releases = append(p.Releases, rp)
	}
	// The stack's releases are installed together: a rollback only when no other release
	// of it is installed or upgraded.
	mixed := false
	for _, rp := range p.Releases {
		mixed = mixed || rp.Action == ActionInstall || rp.Action == ActionUpgrade || rp.Action == ActionReinstall
	}
	for i := range p.Releases {
		if mixed && p.Releases[i].Action == ActionRollback {
			p.Releases[i].Action, p.Releases[i].RollbackTo = ActionUpgrade, 0
		}
	}
	p.dpPlan = plan
	return nil
}

// releasePlan compares the values with the release in the cluster.
func releasePlan(c *op.Client, name string, ch *chart.Chart, values map[string]any) (ReleasePlan, error) {
	rp := ReleasePlan{Release: name, Namespace: c.Namespace, Chart: ch.Metadata.Name + "-" + ch.Metadata.Version, Values: values, Action: ActionInstall}
	hist, err := c.Helm.History(name)
	if err != nil {
		return rp, err
	}
	if len(hist) == 0 {
		return rp, nil
	}
	cur := hist[len(hist)-1]
	if cur.Info == nil || cur.Info.Status == release.StatusUninstalled {
		return rp, nil
	}
	rp.Revision = cur.Version
	rp.Recovery = helmrelease.RecoveryOf(hist)
	if cur.Chart != nil && cur.Chart.Metadata != nil {
		if from := cur.Chart.Metadata.Name + "-" + cur.Chart.Metadata.Version; from != rp.Chart {
			rp.From = from
		}
		rp.Driver = operatorDriver(cur.Config, cur.Chart.Values, values, ch.Values)
	}
	switch {
	case rp.Recovery != nil && rp.Recovery.Do == helmrelease.RecoverUninstall:
		rp.Action = ActionReinstall
	case cur.Info.Status == release.StatusDeployed && cur.Chart != nil && cur.Chart.Metadata != nil &&
		cur.Chart.Metadata.Name == ch.Metadata.Name && cur.Chart.Metadata.Version == ch.Metadata.Version && sameValues(cur.Config, values):
		rp.Action = ActionUnchanged
	case rp.Recovery == nil && cur.Info.Status == release.StatusDeployed:
		rp.Action = ActionUpgrade
		// Back to what an earlier revision ran (the same chart and values): Helm's
		// rollback, the history kept.
		for i := len(hist) - 2; i >= 0; i-- {
			h := hist[i]
			if h.Info != nil && (h.Info.Status == release.StatusSuperseded || h.Info.Status == release.StatusDeployed) && sameChart(h.Chart, ch) && sameValues(h.Config, values) {
				rp.Action, rp.RollbackTo = ActionRollback, h.Version
				break
			}
		}
	default:
		rp.Action = ActionUpgrade
	}
	return rp, nil
}

func sameChart(a, b *chart.Chart) bool {
	return a != nil && b != nil && a.Metadata != nil && b.Metadata != nil && a.Metadata.Name == b.Metadata.Name && a.Metadata.Version == b.Metadata.Version
}

// sameValues compares values as Helm stores them (JSON).
func sameValues(a, b map[string]any) bool {
	norm := func(m map[string]any) any {
		var out any
		bs, _ := json.Marshal(m)
		_ = json.Unmarshal(bs, &out)
		if out == nil {
			out = map[string]any{}
		}
		return out
	}
	return reflect.DeepEqual(norm(a), norm(b))
}
