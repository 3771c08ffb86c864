package clustertest

import (
	"context"
	"io"
	"net/http"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	fakerest "k8s.io/client-go/rest/fake"
)

// Outcome is how a simulated node ends a pod: its phase ("" leaves it Pending), its log,
// and a status to set as is (for unschedulable pods and the like).
type Outcome struct {
	Phase  corev1.PodPhase
	Log    string
	Status *corev1.PodStatus
}

// RunNodes plays the Job controller and the nodes' kubelets on the fake clientset for the
// pods of namespace ns: each Job gets its pod, and each pod is ended as outcome says. Pod
// logs are served through the fake's pods/log. It stops with ctx.
func (g *Getter) RunNodes(ctx context.Context, ns string, outcome func(p *corev1.Pod) Outcome) error {
	g.mu.Lock()
	if g.logs == nil {
		g.logs = map[string]string{}
	}
	g.mu.Unlock()
	pw, err := g.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	jw, err := g.Client.BatchV1().Jobs(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	go func() {
		defer pw.Stop()
		defer jw.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-jw.ResultChan():
				if !ok {
					return
				}
				j, isJob := ev.Object.(*batchv1.Job)
				if !isJob || ev.Type != watch.Added {
					continue
				}
				p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: j.Name + "-pod", Namespace: ns, Labels: j.Spec.Template.Labels},
					Spec: j.Spec.Template.Spec}
				_, _ = g.Client.CoreV1().Pods(ns).Create(context.WithoutCancel(ctx), p, metav1.CreateOptions{})
			case ev, ok := <-pw.ResultChan():
				if !ok {
					return
				}
				p, isPod := ev.Object.(*corev1.Pod)
				if !isPod || ev.Type != watch.Added {
					continue
				}
				o := outcome(p)
				g.mu.Lock()
				g.logs[p.Name] = o.Log
				g.mu.Unlock()
				if o.Status != nil {
					p.Status = *o.Status
				} else if o.Phase != "" {
					p.Status.Phase = o.Phase
				} else {
					continue
				}
				_, _ = g.Client.CoreV1().Pods(ns).UpdateStatus(context.WithoutCancel(ctx), p, metav1.UpdateOptions{})
			}
		}
	}()
	return nil
}

// clientset is the fake clientset whose pod logs are the simulated nodes'.
type clientset struct {
	*fake.Clientset
	g *Getter
}

func (c clientset) CoreV1() corev1client.CoreV1Interface { return coreV1{c.Clientset.CoreV1(), c.g} }

type coreV1 struct {
	corev1client.CoreV1Interface
	g *Getter
}

func (c coreV1) Pods(ns string) corev1client.PodInterface {
	return pods{c.CoreV1Interface.Pods(ns), c.g}
}

type pods struct {
	corev1client.PodInterface
	g *Getter
}

// GetLogs answers with the log the simulated node gave the pod.
func (p pods) GetLogs(name string, opts *corev1.PodLogOptions) *rest.Request {
	p.g.mu.Lock()
	log, ok := p.g.logs[name]
	p.g.mu.Unlock()
	if !ok {
		return p.PodInterface.GetLogs(name, opts)
	}
	c := &fakerest.RESTClient{
		Client: fakerest.CreateHTTPClient(func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(strings.NewReader(log))}, nil
		}),
		NegotiatedSerializer: scheme.Codecs.WithoutConversion(),
		GroupVersion:         corev1.SchemeGroupVersion,
		VersionedAPIPath:     "/api/v1/namespaces/x/pods/" + name + "/log",
	}
	return c.Request()
}

// List honours the field selector on spec.nodeName, as the API server does (client-go's
// fake ignores field selectors): kubectl drain lists a node's pods that way.
func (p pods) List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error) {
	list, err := p.PodInterface.List(ctx, opts)
	if err != nil || opts.FieldSelector == "" {
		return list, err
	}
	sel, err := fields.ParseSelector(opts.FieldSelector)
	if err != nil {
		return nil, err
	}
	node, ok := sel.RequiresExactMatch("spec.nodeName")
	if !ok {
		return list, nil
	}
	kept := list.Items[:0]
	for _, pod := range list.Items {
		if pod.Spec.NodeName == node {
			kept = append(kept, pod)
		}
	}
	list.Items = kept
	return list, nil
}
