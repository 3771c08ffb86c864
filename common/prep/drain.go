package prep

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	policyv1client "k8s.io/client-go/kubernetes/typed/policy/v1"
	"k8s.io/kubectl/pkg/drain"

	"github.com/kubectl-gpu/kubectl-gpu/common/cliexit"
	"github.com/kubectl-gpu/kubectl-gpu/common/nodepod"
)

// EvictRetryDelay is how long the drain waits before it asks again for an eviction the API
// server refused (a PodDisruptionBudget that allows no disruption now): kubectl drain's 5 s.
const EvictRetryDelay = 5 * time.Second

// Budget is a PodDisruptionBudget that refused the eviction of pods on a node being drained.
type Budget struct {
	// Name is namespace/name.
	Name string `json:"name"`
	// Needs and Has are the healthy pods the budget needs and has (when the API server said).
	Needs int `json:"needs,omitempty"`
	Has   int `json:"has,omitempty"`
	// Message is the API server's reason, as it gave it.
	Message string `json:"message"`
	// Pods are the node's pods (namespace/name) the budget kept from being evicted.
	Pods []string `json:"pods"`
	// MinAvailable or MaxUnavailable is the budget's spec, as written (read when the drain
	// stopped; empty when it could not be read).
	MinAvailable   string `json:"minAvailable,omitempty"`
	MaxUnavailable string `json:"maxUnavailable,omitempty"`
}

// noDisruption tells a budget that never allows a voluntary disruption, whatever the
// workload's size (maxUnavailable 0 or 0%, minAvailable 100%): scaling up cannot help.
func (b Budget) noDisruption() bool {
	return b.MaxUnavailable == "0" || b.MaxUnavailable == "0%" || b.MinAvailable == "100%"
}

// String is how a budget is named in a line: "web/gpu-web-pdb (needs 3 healthy pods, has 3)".
func (b Budget) String() string {
	if b.Needs > 0 || b.Has > 0 {
		return fmt.Sprintf("%s (needs %d healthy pods, has %d)", b.Name, b.Needs, b.Has)
	}
	return b.Name + " (" + b.Message + ")"
}

var (
	budgetName  = regexp.MustCompile(`^The disruption budget (\S+) `)
	budgetNeeds = regexp.MustCompile(`needs (\d+) healthy pods and has (\d+) currently`)
)

// refusal reads the budget out of an eviction the API server refused with 429 (its
// DisruptionBudget cause); ok is false for any other error.
func refusal(ns string, err error) (b Budget, ok bool) {
	var st apierrors.APIStatus
	if !apierrors.IsTooManyRequests(err) || !errors.As(err, &st) || st.Status().Details == nil {
		return Budget{}, false
	}
	for _, c := range st.Status().Details.Causes {
		if c.Type != policyv1.DisruptionBudgetCause {
			continue
		}
		b.Message = c.Message
		if m := budgetName.FindStringSubmatch(c.Message); m != nil {
			b.Name = ns + "/" + m[1]
			b.Message = strings.TrimPrefix(c.Message, m[0])
		}
		if m := budgetNeeds.FindStringSubmatch(c.Message); m != nil {
			b.Needs, _ = strconv.Atoi(m[1])
			b.Has, _ = strconv.Atoi(m[2])
		}
		return b, b.Name != ""
	}
	return Budget{}, false
}

// drainWatch follows one node's drain: the pods left, and the budget each blocked pod is
// held by. Its client answers the drain helper's eviction requests and notes refusals.
type drainWatch struct {
	mu      sync.Mutex
	left    map[string]bool   // pods not yet gone
	blocked map[string]Budget // pod -> the budget that refused it last
}

func (w *drainWatch) evicted(ns, name string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	key := ns + "/" + name
	if b, ok := refusal(ns, err); ok {
		w.blocked[key] = b
	} else {
		delete(w.blocked, key)
	}
}

func (w *drainWatch) gone(p *corev1.Pod) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.left, p.Namespace+"/"+p.Name)
	delete(w.blocked, p.Namespace+"/"+p.Name)
}

// budgets are the budgets blocking pods now, each with its pods, by name.
func (w *drainWatch) budgets() []Budget {
	w.mu.Lock()
	defer w.mu.Unlock()
	by := map[string]*Budget{}
	for pod, b := range w.blocked {
		if !w.left[pod] {
			continue
		}
		if by[b.Name] == nil {
			c := b
			c.Pods = nil
			by[b.Name] = &c
		}
		by[b.Name].Pods = append(by[b.Name].Pods, pod)
	}
	out := make([]Budget, 0, len(by))
	for _, b := range by {
		sort.Strings(b.Pods)
		out = append(out, *b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (w *drainWatch) podsLeft() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.left)
}

// status is what the drain waits for, as a progress state and detail.
func (w *drainWatch) status(deadline time.Time) (state, detail string) {
	left := w.podsLeft()
	state = fmt.Sprintf("draining: %d pod(s) left to evict", left)
	if bs := w.budgets(); len(bs) > 0 {
		var names []string
		for _, b := range bs {
			names = append(names, b.String()+" holds "+strings.Join(b.Pods, ", "))
		}
		state = fmt.Sprintf("draining: %d pod(s) left, blocked by PodDisruptionBudget %s", left, strings.Join(names, "; "))
	}
	if !deadline.IsZero() {
		detail = fmt.Sprintf("%s left of --drain-timeout", time.Until(deadline).Round(time.Second))
	}
	return state, detail
}

// evictionClient is the drain helper's client: every eviction's answer reaches onEvict.
type evictionClient struct {
	kubernetes.Interface
	onEvict func(ns, name string, err error)
}

func (c evictionClient) PolicyV1() policyv1client.PolicyV1Interface {
	return evictionPolicy{c.Interface.PolicyV1(), c.onEvict}
}

type evictionPolicy struct {
	policyv1client.PolicyV1Interface
	onEvict func(ns, name string, err error)
}

func (p evictionPolicy) Evictions(ns string) policyv1client.EvictionInterface {
	return evictions{p.PolicyV1Interface.Evictions(ns), p.onEvict}
}

type evictions struct {
	policyv1client.EvictionInterface
	onEvict func(ns, name string, err error)
}

func (e evictions) Evict(ctx context.Context, ev *policyv1.Eviction) error {
	err := e.EvictionInterface.Evict(ctx, ev)
	e.onEvict(ev.Namespace, ev.Name, err)
	return err
}

// DrainError is a drain that did not finish; Budgets, when set, are what kept it.
type DrainError struct {
	Err     error
	Budgets []Budget
	Timeout time.Duration
}

func (e *DrainError) Error() string {
	if len(e.Budgets) == 0 {
		return cliexit.OneLine(e.Err.Error())
	}
	var parts []string
	for _, b := range e.Budgets {
		parts = append(parts, fmt.Sprintf("PodDisruptionBudget %s allows no eviction of %s", b, strings.Join(b.Pods, ", ")))
	}
	until := "the drain stopped"
	if e.Timeout > 0 {
		until = fmt.Sprintf("--drain-timeout %s ran out", e.Timeout)
	}
	return strings.Join(parts, "; ") + " (" + until + ")"
}

func (e *DrainError) Unwrap() error { return e.Err }

// Hint says what to do about a drain that did not finish.
func (e *DrainError) Hint() string {
	if len(e.Budgets) == 0 {
		return "kubectl drain's rules apply: --delete-emptydir-data, --force and --drain-timeout are its flags"
	}
	b := e.Budgets[0]
	ns, name, _ := strings.Cut(b.Name, "/")
	edit := fmt.Sprintf("kubectl edit pdb %s -n %s", name, ns)
	if b.noDisruption() {
		return fmt.Sprintf("the budget allows no voluntary disruption at all (maxUnavailable: %s): relax it (%s), "+
			"or move the pod yourself if the disruption is acceptable; then run the same command again", or(b.MaxUnavailable, "0, minAvailable: 100%"), edit)
	}
	return fmt.Sprintf("the budget allows no disruption now: scale up the workload it protects, relax it (%s), "+
		"or move the pod yourself if the disruption is acceptable; then run the same command again (a running drain asks every %s)", edit, EvictRetryDelay)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// specs fills in each budget's spec (one get per budget, when a drain stopped on it).
func specs(ctx context.Context, cs kubernetes.Interface, bs []Budget) {
	for i := range bs {
		ns, name, _ := strings.Cut(bs[i].Name, "/")
		pdb, err := cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			continue
		}
		if v := pdb.Spec.MinAvailable; v != nil {
			bs[i].MinAvailable = v.String()
		}
		if v := pdb.Spec.MaxUnavailable; v != nil {
			bs[i].MaxUnavailable = v.String()
		}
	}
}

// drain evicts the node's pods by kubectl drain's rules: DaemonSet pods stay, pods with
// emptyDir data and pods without a controller are refused unless DeleteEmptyDirData /
// Force, PodDisruptionBudgets are honoured through the eviction API (a refused eviction is
// asked again every EvictRetryDelay, as kubectl drain does, until the drain timeout).
// kubectl gpu's own pods are left alone. While it waits, status is told what for.
func (r *roller) drain(ctx context.Context, node string, status func(state, detail string)) (int, error) {
	w := &drainWatch{left: map[string]bool{}, blocked: map[string]Budget{}}
	var evicted int
	var mu sync.Mutex
	h := &drain.Helper{
		Ctx: ctx, Client: evictionClient{r.cs, w.evicted}, Force: r.o.Force, GracePeriodSeconds: -1, IgnoreAllDaemonSets: true,
		DeleteEmptyDirData: r.o.DeleteEmptyDirData, Timeout: r.o.DrainTimeout, Out: io.Discard, ErrOut: io.Discard,
		EvictErrorRetryDelay: EvictRetryDelay,
		AdditionalFilters: []drain.PodFilter{func(p corev1.Pod) drain.PodDeleteStatus {
			if p.Labels[nodepod.LabelManagedBy] == nodepod.ManagedBy {
				return drain.MakePodDeleteStatusSkip()
			}
			return drain.MakePodDeleteStatusOkay()
		}},
		OnPodDeletionOrEvictionFinished: func(p *corev1.Pod, _ bool, err error) {
			if err == nil {
				mu.Lock()
				evicted++
				mu.Unlock()
				w.gone(p)
			}
		},
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return evicted }
	list, errs := h.GetPodsForDeletion(node)
	if len(errs) > 0 {
		return 0, &DrainError{Err: errors.Join(errs...)}
	}
	pods := list.Pods()
	if len(pods) == 0 {
		return 0, nil
	}
	for _, p := range pods {
		w.left[p.Namespace+"/"+p.Name] = true
	}
	var deadline time.Time
	if r.o.DrainTimeout > 0 {
		deadline = time.Now().Add(r.o.DrainTimeout)
	}
	done := make(chan error, 1)
	go func() { done <- h.DeleteOrEvictPods(pods) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		status(w.status(deadline))
		select {
		case err := <-done:
			if err != nil {
				bs := w.budgets()
				specs(context.WithoutCancel(ctx), r.cs, bs)
				return count(), &DrainError{Err: err, Budgets: bs, Timeout: r.o.DrainTimeout}
			}
			return count(), nil
		case <-ctx.Done():
			// The helper's goroutines end on their own at their next look at the context
			// (within EvictRetryDelay); the roll does not wait for them.
			return count(), ctx.Err()
		case <-tick.C:
		}
	}
}
