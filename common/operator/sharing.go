package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
	"github.com/kubectl-gpu/kubectl-gpu/common/gpusoftware"
	"github.com/kubectl-gpu/kubectl-gpu/common/helmrelease"
	"github.com/kubectl-gpu/kubectl-gpu/common/inventory"
	"github.com/kubectl-gpu/kubectl-gpu/common/report"
)

// Chart/ClusterPolicy keys and the node label of the device plugin's config.
const (
	DefaultSharingConfigMap = "kubectl-gpu-device-plugin-config"
	LabelDevicePluginConfig = inventory.LabelDevicePluginCfg
)

// SharingRequest is one `operator sharing`.
type SharingRequest struct {
	Strategy string
	Replicas int
	// Selector picks the nodes that get this profile (per-node, through the
	// nvidia.com/device-plugin.config label); empty makes it the default of every node.
	Selector string
	// Rename advertises the shared GPUs as nvidia.com/gpu.shared (renameByDefault).
	Rename    bool
	ConfigMap string
	DryRun    bool
}

// SharingPlan is what `operator sharing` changes: shown with --dry-run, then applied.
type SharingPlan struct {
	report.TypeMeta `json:",inline"`
	ConfigMap       string            `json:"configMap"`
	Namespace       string            `json:"namespace"`
	Profile         string            `json:"profile"`
	Config          string            `json:"config"`
	Data            map[string]string `json:"data"`
	// PolicyPatch is the merge patch of ClusterPolicy cluster-policy.
	PolicyPatch string `json:"clusterPolicyPatch"`
	// NodeLabels are the nodes labelled nvidia.com/device-plugin.config=Profile.
	NodeLabels []string `json:"nodeLabels,omitempty"`
	Warnings   []string `json:"warnings,omitempty"`
	Applied    bool     `json:"applied"`
}

// SharingKind is the kind of the sharing document.
const SharingKind = "SharingPlan"

// Sharing writes the device plugin's sharing config into a ConfigMap of the release
// namespace (other profiles in it are kept), points ClusterPolicy cluster-policy at it (as
// the default profile, or with a selector as a per-node profile through the
// nvidia.com/device-plugin.config label), and labels the selected nodes. It refuses MPS on
// MIG nodes, a selector that matches no GPU node and a missing ClusterPolicy; with DryRun it
// only says what it would do.
func (c *Client) Sharing(ctx context.Context, req SharingRequest) (*SharingPlan, error) {
	if req.ConfigMap == "" {
		req.ConfigMap = DefaultSharingConfigMap
	}
	sel, err := inventory.ParseSelector(req.Selector)
	if err != nil {
		return nil, err
	}
	nodes, err := c.CS.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, cluster.APIError("list nodes", err)
	}
	var gpuNodes, mig []string
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if !inventory.IsGPUNode(n) {
			continue
		}
		gpuNodes = append(gpuNodes, n.Name)
		if inventory.MIGEnabled(n) {
			mig = append(mig, n.Name)
		}
	}
	switch {
	case len(gpuNodes) == 0 && req.Selector != "":
		return nil, cliexit.Usagef("no GPU node matches %q: check it with 'kubectl gpu nodes -l %s'", req.Selector, req.Selector)
	case len(gpuNodes) == 0:
		return nil, cliexit.Usagef("no GPU node in the cluster: run 'kubectl gpu nodes --all'")
	case req.Strategy == gpusoftware.SharingMPS && len(mig) > 0:
		return nil, cliexit.Usagef("MPS cannot share GPUs split with MIG (%s): choose nodes without MIG (-l), or time-slicing", strings.Join(mig, ", "))
	}
	if _, err := c.Dyn.Resource(gpusoftware.ClusterPolicyGVR).Get(ctx, gpusoftware.ClusterPolicyName, metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) || gpusoftware.IsNoResource(err) {
			return nil, cliexit.Usagef("ClusterPolicy %s does not exist: sharing is the device plugin's, configured through the GPU Operator's ClusterPolicy ('kubectl gpu operator install' first)", gpusoftware.ClusterPolicyName)
		}
		return nil, cluster.APIError("get ClusterPolicy "+gpusoftware.ClusterPolicyName, err)
	}
	profile := gpusoftware.ProfileName(req.Strategy, req.Replicas)
	b, err := yaml.Marshal(gpusoftware.SharingConfig(req.Strategy, req.Replicas, req.Rename))
	if err != nil {
		return nil, err
	}
	plan := &SharingPlan{TypeMeta: report.Meta(SharingKind), ConfigMap: req.ConfigMap, Namespace: c.Namespace, Profile: profile, Config: string(b), Data: map[string]string{}}
	cur, err := c.CS.CoreV1().ConfigMaps(c.Namespace).Get(ctx, req.ConfigMap, metav1.GetOptions{})
	switch {
	case err == nil:
		for k, v := range cur.Data {
			plan.Data[k] = v
			plan.Warnings = append(plan.Warnings, gpusoftware.IgnoredKeys(k, v)...)
		}
	case !apierrors.IsNotFound(err):
		return nil, cluster.APIError("get ConfigMap "+req.ConfigMap+" in namespace "+c.Namespace, err)
	}
	plan.Data[profile] = string(b)
	dp := map[string]any{"name": req.ConfigMap}
	if req.Selector == "" {
		dp["default"] = profile
	} else {
		plan.NodeLabels = gpuNodes
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"devicePlugin": map[string]any{"config": dp}}})
	plan.PolicyPatch = string(patch)
	if req.DryRun {
		return plan, nil
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: req.ConfigMap, Namespace: c.Namespace,
		Labels: map[string]string{"app.kubernetes.io/managed-by": "kubectl-gpu"}}, Data: plan.Data}
	if cur != nil && err == nil {
		cm.ResourceVersion = cur.ResourceVersion
		_, err = c.CS.CoreV1().ConfigMaps(c.Namespace).Update(ctx, cm, metav1.UpdateOptions{})
	} else {
		_, err = c.CS.CoreV1().ConfigMaps(c.Namespace).Create(ctx, cm, metav1.CreateOptions{})
	}
	if err != nil {
		return nil, cluster.APIError("write ConfigMap "+req.ConfigMap+" in namespace "+c.Namespace, err)
	}
	if _, err := c.Dyn.Resource(gpusoftware.ClusterPolicyGVR).Patch(ctx, gpusoftware.ClusterPolicyName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return nil, cluster.APIError("point ClusterPolicy "+gpusoftware.ClusterPolicyName+" at ConfigMap "+req.ConfigMap, err)
	}
	var labelsToSet []helmrelease.NodeLabel
	for _, n := range plan.NodeLabels {
		labelsToSet = append(labelsToSet, helmrelease.NodeLabel{Node: n, Key: LabelDevicePluginConfig, Value: profile})
	}
	if err := c.LabelNodes(ctx, labelsToSet); err != nil {
		return nil, err
	}
	plan.Applied = true
	return plan, nil
}

// MIGRequest is one `operator mig`.
type MIGRequest struct {
	Profile  string
	Selector string
	DryRun   bool
}

// MIGPlan is what `operator mig` labels.
type MIGPlan struct {
	report.TypeMeta `json:",inline"`
	Profile         string   `json:"profile"`
	Nodes           []string `json:"nodes"`
	Applied         bool     `json:"applied"`
	// States are the MIG manager's nvidia.com/mig.config.state per node, after --wait.
	States map[string]string `json:"states,omitempty"`
}

// MIGKind is the kind of the MIG document.
const MIGKind = "MIGPlan"

// MIGProfiles are the layouts the GPU Operator's default MIG manager config (ConfigMap
// default-mig-parted-config) defines, by name: `all-disabled`, `all-enabled`,
// `all-balanced` and `all-<profile>` for every single-profile layout.
func MIGProfiles(cmData map[string]string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, text := range cmData {
		var doc struct {
			MIGConfigs map[string]any `json:"mig-configs"`
		}
		if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
			return nil, fmt.Errorf("read the MIG manager's config: %w", err)
		}
		for k := range doc.MIGConfigs {
			out[k] = true
		}
	}
	return out, nil
}

// MIGConfigMap is the MIG manager's config in the release namespace.
const MIGConfigMap = "default-mig-parted-config"

// MIG asks the MIG manager for a layout on the selected GPU nodes by labelling them
// nvidia.com/mig.config=PROFILE. The profile must be one the MIG manager's ConfigMap
// defines (when that ConfigMap exists); the nodes must be GPU nodes.
func (c *Client) MIG(ctx context.Context, req MIGRequest) (*MIGPlan, error) {
	if req.Selector == "" {
		return nil, cliexit.Usagef("-l SELECTOR is required: MIG repartitions the GPUs of the nodes it selects (their running GPU workloads end)")
	}
	sel, err := inventory.ParseSelector(req.Selector)
	if err != nil {
		return nil, err
	}
	cm, err := c.CS.CoreV1().ConfigMaps(c.Namespace).Get(ctx, MIGConfigMap, metav1.GetOptions{})
	switch {
	case err == nil:
		known, err := MIGProfiles(cm.Data)
		if err != nil {
			return nil, err
		}
		if !known[req.Profile] {
			var names []string
			for k := range known {
				names = append(names, k)
			}
			sort.Strings(names)
			return nil, cliexit.Usagef("MIG profile %q is not in ConfigMap %s/%s: one of %s", req.Profile, c.Namespace, MIGConfigMap, strings.Join(names, ", "))
		}
	case apierrors.IsNotFound(err):
		if !validMIGName(req.Profile) {
			return nil, cliexit.Usagef("MIG profile %q is not a MIG manager layout name (such as all-disabled, all-balanced, all-1g.10gb)", req.Profile)
		}
	default:
		return nil, cluster.APIError("get ConfigMap "+MIGConfigMap+" in namespace "+c.Namespace, err)
	}
	nodes, err := c.CS.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, cluster.APIError("list nodes", err)
	}
	plan := &MIGPlan{TypeMeta: report.Meta(MIGKind), Profile: req.Profile}
	for i := range nodes.Items {
		if inventory.IsGPUNode(&nodes.Items[i]) {
			plan.Nodes = append(plan.Nodes, nodes.Items[i].Name)
		}
	}
	if len(plan.Nodes) == 0 {
		return nil, cliexit.Usagef("no GPU node matches %q: check it with 'kubectl gpu nodes -l %s'", req.Selector, req.Selector)
	}
	if req.DryRun {
		return plan, nil
	}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if !inventory.IsGPUNode(n) || n.Labels[inventory.LabelMIGConfig] == req.Profile {
			continue
		}
		// The state the MIG manager left for the previous layout goes with it, so that
		// --wait never reads an old "success" as the new layout's.
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q,%q:null}}}`, inventory.LabelMIGConfig, req.Profile, inventory.LabelMIGConfigState)
		if _, err := c.CS.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return nil, cluster.APIError("label node "+n.Name, err)
		}
		fmt.Fprintf(c.Log, "labelled node %s %s=%s\n", n.Name, inventory.LabelMIGConfig, req.Profile)
	}
	plan.Applied = true
	return plan, nil
}

// validMIGName: the MIG manager's layout names are label values.
func validMIGName(s string) bool {
	return s != "" && len(labels.Set{"x": s}) == 1 && len(s) <= 63 && strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789.-_") == ""
}

// WaitMIG follows the MIG manager's nvidia.com/mig.config.state on the plan's nodes until
// every one is success (nil), one is failed (exit 1 naming it), or timeout passes.
func (c *Client) WaitMIG(ctx context.Context, plan *MIGPlan, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		plan.States = map[string]string{}
		var pending, failed []string
		for _, name := range plan.Nodes {
			n, err := c.CS.CoreV1().Nodes().Get(wctx, name, metav1.GetOptions{})
			if err != nil {
				if wctx.Err() != nil {
					break
				}
				return cluster.APIError("get node "+name, err)
			}
			st := n.Labels[inventory.LabelMIGConfigState]
			if n.Labels[inventory.LabelMIGConfig] != plan.Profile {
				st = "" // the label was changed since
			}
			plan.States[name] = st
			switch st {
			case "success":
			case "failed":
				failed = append(failed, name)
			default:
				pending = append(pending, name+" "+orPending(st))
			}
		}
		if len(failed) > 0 {
			return cliexit.Failuresf("the MIG manager failed to apply %s on %s: see its pod's log ('kubectl logs -n %s -l app=nvidia-mig-manager')", plan.Profile, strings.Join(failed, ", "), c.Namespace)
		}
		if len(pending) == 0 && wctx.Err() == nil {
			return nil
		}
		if s := strings.Join(pending, ", "); s != last && wctx.Err() == nil {
			fmt.Fprintf(c.Log, "waiting: %s\n", s)
			last = s
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return cliexit.ErrInterrupted
			}
			return cliexit.Failuresf("MIG layout %s not applied after %s on %s: the MIG manager may be rebooting or draining the node", plan.Profile, timeout, strings.Join(pending, ", "))
		case <-time.After(2 * time.Second):
		}
	}
}

func orPending(s string) string {
	if s == "" {
		return "pending"
	}
	return s
}

// WriteText prints the sharing plan: the profile, the ClusterPolicy patch, the node labels.
func (p *SharingPlan) WriteText(w io.Writer) error {
	verb := "would write"
	if p.Applied {
		verb = "wrote"
	}
	fmt.Fprintf(w, "# %s profile %q into ConfigMap %s/%s:\n%s", verb, p.Profile, p.Namespace, p.ConfigMap, p.Config)
	fmt.Fprintf(w, "# ClusterPolicy %s patch: %s\n", gpusoftware.ClusterPolicyName, p.PolicyPatch)
	for _, n := range p.NodeLabels {
		fmt.Fprintf(w, "# node %s: %s=%s\n", n, LabelDevicePluginConfig, p.Profile)
	}
	return nil
}

// WriteText prints the MIG plan and, after --wait, each node's state.
func (p *MIGPlan) WriteText(w io.Writer) error {
	verb := "would label"
	if p.Applied {
		verb = "labelled"
	}
	for _, n := range p.Nodes {
		line := fmt.Sprintf("%s node %s %s=%s", verb, n, inventory.LabelMIGConfig, p.Profile)
		if st, ok := p.States[n]; ok {
			line += ": " + orPending(st)
		}
		fmt.Fprintln(w, line)
	}
	return nil
}
