package inventory

import (
	"context"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-gpu/kubectl-gpu/common/cluster"
)

// GPUPod is a pod that holds GPUs on its node and that a drain evicts.
type GPUPod struct {
	Pod  string `json:"pod"`
	GPUs int64  `json:"gpus"`
	// Budgets are the PodDisruptionBudgets that cover the pod, with how many disruptions
	// each allows now.
	Budgets []string `json:"budgets,omitempty"`
}

// GPUPods lists, per node, the pods holding GPUs that a drain evicts (what kubectl drain
// evicts: not DaemonSet or mirror pods, not finished), with the budgets over each: what
// holds a node that is to be drained, or whose driver is to be unloaded.
func GPUPods(ctx context.Context, cs kubernetes.Interface, nodes []string) (map[string][]GPUPod, error) {
	out := map[string][]GPUPod{}
	budgets := map[string][]budget{}
	for _, node := range nodes {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: fields.AndSelectors(
			fields.OneTermEqualSelector("spec.nodeName", node), fields.ParseSelectorOrDie(ActivePodsOnNodes)).String(), ResourceVersion: "0"})
		if err != nil {
			return nil, cluster.APIError("list the pods on node "+node, err)
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			gpus := GPURequest(p)
			if gpus == 0 || ownedByDaemonSet(p) || p.Annotations[corev1.MirrorPodAnnotationKey] != "" {
				continue
			}
			bs, ok := budgets[p.Namespace]
			if !ok {
				if bs, err = readBudgets(ctx, cs, p.Namespace); err != nil {
					return nil, err
				}
				budgets[p.Namespace] = bs
			}
			e := GPUPod{Pod: p.Namespace + "/" + p.Name, GPUs: gpus}
			for _, b := range bs {
				if b.selector.Matches(labels.Set(p.Labels)) {
					e.Budgets = append(e.Budgets, fmt.Sprintf("PodDisruptionBudget %s/%s allows %d", p.Namespace, b.name, b.allowed))
				}
			}
			out[node] = append(out[node], e)
		}
		sort.Slice(out[node], func(i, j int) bool { return out[node][i].Pod < out[node][j].Pod })
	}
	return out, nil
}

type budget struct {
	name     string
	selector labels.Selector
	allowed  int32
}

func readBudgets(ctx context.Context, cs kubernetes.Interface, ns string) ([]budget, error) {
	list, err := cs.PolicyV1().PodDisruptionBudgets(ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return nil, cluster.APIError("list the PodDisruptionBudgets in namespace "+ns, err)
	}
	var out []budget
	for _, b := range list.Items {
		sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
		if err != nil || sel.Empty() {
			continue // kubectl drain ignores a budget with no selector too
		}
		out = append(out, budget{name: b.Name, selector: sel, allowed: b.Status.DisruptionsAllowed})
	}
	return out, nil
}

func ownedByDaemonSet(p *corev1.Pod) bool {
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" {
			return true
		}
	}
	return false
}
