package localcluster

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"
)

// The simulated nodes' objects live in nodefixtures (no init(), for unit tests).
type (
	Profile  = nodefixtures.Profile
	NodeSpec = nodefixtures.NodeSpec
)

var (
	// Profiles are the kinds of simulated node.
	Profiles = nodefixtures.Profiles
	// DefaultNodes is the demo's and the end-to-end tests' cluster.
	DefaultNodes = nodefixtures.DefaultNodes
	// NodeObject returns the Node object of a profile, as a kubelet would register it.
	NodeObject = nodefixtures.NodeObject
)

// AddNodes creates the nodes (in parallel) and waits until kwok reports the managed ones
// Ready. It returns their names in order.
func (c *Cluster) AddNodes(ctx context.Context, specs ...NodeSpec) ([]string, error) {
	type item struct {
		name string
		p    Profile
	}
	var items []item
	for _, s := range specs {
		p, ok := Profiles[s.Profile]
		if !ok {
			return nil, fmt.Errorf("unknown node profile %q", s.Profile)
		}
		for i := 0; i < s.Count; i++ {
			items = append(items, item{fmt.Sprintf("%s-%d", s.Prefix, i), p})
		}
	}
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for _, it := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func(it item) {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := c.Client.CoreV1().Nodes().Create(ctx, NodeObject(it.name, it.p), metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("create node %s: %w", it.name, err)
				}
				mu.Unlock()
			}
		}(it)
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	names := make([]string, 0, len(items))
	want := map[string]bool{}
	for _, it := range items {
		names = append(names, it.name)
		if !it.p.NotReady {
			want[it.name] = true
		}
	}
	err := c.waitReady(ctx, "simulated nodes", 120*time.Second, func(ctx context.Context) error {
		list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		ready := 0
		for i := range list.Items {
			n := &list.Items[i]
			if !want[n.Name] {
				continue
			}
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready < len(want) {
			return fmt.Errorf("%d of %d nodes Ready%s", ready, len(want), c.leaseNote(ctx, want))
		}
		return nil
	})
	sort.Strings(names)
	return names, err
}

// leaseNote says, for a wait on nodes that do not become Ready, how many of their leases
// kwok holds (kwok manages only the nodes whose lease it holds, and makes them Ready then):
// what tells a kwok that never took the nodes from one that took them and did not play
// their stages.
func (c *Cluster) leaseNote(ctx context.Context, want map[string]bool) string {
	// Read on its own clock: the wait's last attempt runs when its deadline has passed.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	leases, err := c.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Sprintf(" (leases not read: %v)", err)
	}
	held, holders := 0, map[string]bool{}
	for _, l := range leases.Items {
		if want[l.Name] && l.Spec.HolderIdentity != nil {
			held++
			holders[*l.Spec.HolderIdentity] = true
		}
	}
	return fmt.Sprintf("; kwok holds the lease of %d of them (%d holders)", held, len(holders))
}
