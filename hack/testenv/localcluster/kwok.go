package localcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kubectl-gpu/kubectl-gpu/hack/testenv/nodefixtures"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

// KwokNodeAnnotation marks the nodes kwok manages.
const KwokNodeAnnotation = nodefixtures.KwokNodeAnnotation

var (
	stageGVR = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "stages"}
	logsGVR  = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "logs"}
)

// defaultStages are kwok's own stages, from its module (copied beside the binary by
// hack/testenv/build-tools.sh): nodes become Ready and keep their lease, pods become Ready, pods of
// Jobs complete, deleted pods go away.
var defaultStages = []string{
	"node/fast/node-initialize.yaml",
	"node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
	"pod/fast/pod-ready.yaml",
	"pod/general/pod-complete.yaml",
	"pod/fast/pod-delete.yaml",
}

func (c *Cluster) startKwok(ctx context.Context) error {
	kwokDir := filepath.Join(c.opts.BinDir, "kwok-"+KwokBuild)
	ext, err := apiextensionsclient.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	crds, err := filepath.Glob(filepath.Join(kwokDir, "crd", "*.yaml"))
	if err != nil || len(crds) == 0 {
		return fmt.Errorf("%w (no kwok CRDs in %s)", ErrNoBinaries, kwokDir)
	}
	var names []string
	for _, f := range crds {
		var crd apiextensionsv1.CustomResourceDefinition
		if err := readYAML(f, &crd); err != nil {
			return err
		}
		if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, &crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s: %w", crd.Name, err)
		}
		names = append(names, crd.Name)
	}
	if err := c.waitReady(ctx, "kwok CRDs", 60*time.Second, func(ctx context.Context) error {
		for _, n := range names {
			crd, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return err
			}
			established := false
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					established = true
				}
			}
			if !established {
				return fmt.Errorf("CRD %s not established", n)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	for _, s := range defaultStages {
		var obj unstructured.Unstructured
		if err := readYAML(filepath.Join(kwokDir, "stage", s), &obj.Object); err != nil {
			return err
		}
		if obj.GetName() == "pod-complete" {
			// A pod whose log ServePodLogs is still making does not end yet: a real container
			// ends after it printed, and a log read after the end finds the log.
			exprs, _, _ := unstructured.NestedSlice(obj.Object, "spec", "selector", "matchExpressions")
			exprs = append(exprs, map[string]any{"key": `.metadata.annotations["` + LogPendingAnnotation + `"]`, "operator": "DoesNotExist"})
			if err := unstructured.SetNestedSlice(obj.Object, exprs, "spec", "selector", "matchExpressions"); err != nil {
				return err
			}
		}
		if err := c.ApplyStage(ctx, &obj); err != nil {
			return err
		}
	}

	pki := filepath.Join(c.Dir, "pki")
	ca := &ca{dir: pki}
	if ca.cert, ca.key, err = loadCA(pki, "ca"); err != nil {
		return err
	}
	crt, key, err := ca.issue("kwok-serving", "kwok", nil, []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"}, true)
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  enableCRDs: [Stage, Logs, ClusterLogs, Exec, ClusterExec, Attach, ClusterAttach, PortForward, ClusterPortForward]
  cidr: 10.244.0.0/16
  nodeIP: 127.0.0.1
  nodePort: %[1]d
  serverAddress: 127.0.0.1:%[1]d
  tlsCertFile: %[2]s
  tlsPrivateKeyFile: %[3]s
  manageAllNodes: false
  manageNodesWithAnnotationSelector: %[4]s=fake
  enableDebuggingHandlers: true
  enableProfilingHandler: false
  enableContentionProfiling: false
  nodeLeaseDurationSeconds: 40
  nodeLeaseParallelism: 16
  podPlayStageParallelism: 16
  nodePlayStageParallelism: 16
  podsOnNodeSyncParallelism: 16
  enablePodsOnNodeSyncListPager: false
  enablePodsOnNodeSyncStreamWatch: true
`, c.KwokPort, crt, key, KwokNodeAnnotation)
	cfgPath := filepath.Join(c.Dir, "kwok", "kwok.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	if err := c.spawn("kwok", filepath.Join(kwokDir, "kwok"),
		"--kubeconfig="+filepath.Join(c.Dir, "kwok.kubeconfig"),
		"--config="+cfgPath,
	); err != nil {
		return err
	}
	return c.waitReady(ctx, "kwok", 60*time.Second, func(ctx context.Context) error {
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(c.KwokPort))
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// ApplyStage creates or replaces a kwok Stage.
func (c *Cluster) ApplyStage(ctx context.Context, obj *unstructured.Unstructured) error {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	res := dyn.Resource(stageGVR)
	_, err = res.Create(ctx, obj, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		cur, gerr := res.Get(ctx, obj.GetName(), metav1.GetOptions{})
		if gerr != nil {
			return gerr
		}
		obj.SetResourceVersion(cur.GetResourceVersion())
		_, err = res.Update(ctx, obj, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("apply stage %s: %w", obj.GetName(), err)
	}
	return nil
}

// SetPodLog makes kwok serve text as the log of container in pod ns/name (the pod may not
// exist yet). kwok reads CRI-format lines from a file; each line of text becomes one.
func (c *Cluster) SetPodLog(ctx context.Context, ns, pod, container, text string) error {
	dir := filepath.Join(c.Dir, "kwok", "logs", ns)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var b bytes.Buffer
	ts := time.Now().UTC().Format(time.RFC3339Nano)
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintf(&b, "%s stdout F %s\n", ts, line)
	}
	file := filepath.Join(dir, pod+"."+container+".log")
	if err := os.WriteFile(file, b.Bytes(), 0o600); err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1",
		"kind":       "Logs",
		"metadata":   map[string]any{"name": pod, "namespace": ns},
		"spec": map[string]any{"logs": []any{
			map[string]any{"containers": []any{container}, "logsFile": file},
		}},
	}}
	res := dyn.Resource(logsGVR).Namespace(ns)
	_, err = res.Create(ctx, obj, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		cur, gerr := res.Get(ctx, pod, metav1.GetOptions{})
		if gerr != nil {
			return gerr
		}
		obj.SetResourceVersion(cur.GetResourceVersion())
		_, err = res.Update(ctx, obj, metav1.UpdateOptions{})
	}
	return err
}

func readYAML(path string, into any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}

// LogPendingAnnotation holds a pod served by ServePodLogs from completing (kwok's
// pod-complete stage) until its log is set.
const LogPendingAnnotation = "sim.kubectl-gpu.io/log-pending"

// ServePodLogs makes kwok serve, for every pod matching selector in ns that is created from
// now until ctx ends, logFor(pod) as its container's log: for pods whose names are not known
// in advance (a Job's). Logs are set up to 16 at a time (a thousand Jobs' pods appear within
// seconds, and a pod that completes before its log is set shows none), and each pod's Logs
// object and file are removed when the pod is deleted, so that kwok does not slow down under
// the objects of earlier runs.
func (c *Cluster) ServePodLogs(ctx context.Context, ns, selector, container string, logFor func(*corev1.Pod) string) error {
	return c.servePodLogs(ctx, ns, selector, container, logFor, false)
}

// ServePodLogsHeld is ServePodLogs for a logFor that takes a while (a package host's agent
// runs apt-get for seconds): each pod is held from completing (LogPendingAnnotation) until
// its log is set, as a real container ends only after it printed. Each hold is one more
// patch per pod: fast logFors (and a thousand pods at once) do better without.
func (c *Cluster) ServePodLogsHeld(ctx context.Context, ns, selector, container string, logFor func(*corev1.Pod) string) error {
	return c.servePodLogs(ctx, ns, selector, container, logFor, true)
}

func (c *Cluster) servePodLogs(ctx context.Context, ns, selector, container string, logFor func(*corev1.Pod) string, held bool) error {
	w, err := c.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	sem, delSem := make(chan struct{}, 16), make(chan struct{}, 8)
	go func() {
		for {
			for ev := range w.ResultChan() {
				p, ok := ev.Object.(*corev1.Pod)
				if !ok {
					continue
				}
				switch ev.Type {
				case watch.Added:
					// Held (LogPendingAnnotation) until its log is set, when asked: logFor may
					// run a while (a package host's apt-get), and kwok would end the pod on its
					// own clock.
					hold := func(v any) {
						if !held {
							return
						}
						patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{LogPendingAnnotation: v}}})
						_, _ = c.Client.CoreV1().Pods(p.Namespace).Patch(context.WithoutCancel(ctx), p.Name, types.MergePatchType, patch, metav1.PatchOptions{})
					}
					hold("true")
					// The slot is taken in the goroutine: the watch is read on meanwhile, so a
					// burst of deletions (a run's Jobs deleted at once) never holds up the
					// logs of the pods that appear behind it.
					go func() {
						sem <- struct{}{}
						defer func() { <-sem }()
						_ = c.SetPodLog(context.WithoutCancel(ctx), p.Namespace, p.Name, container, logFor(p))
						hold(nil)
					}()
				case watch.Deleted:
					go func() {
						delSem <- struct{}{}
						defer func() { <-delSem }()
						_ = dyn.Resource(logsGVR).Namespace(p.Namespace).Delete(context.WithoutCancel(ctx), p.Name, metav1.DeleteOptions{})
						_ = os.Remove(filepath.Join(c.Dir, "kwok", "logs", p.Namespace, p.Name+"."+container+".log"))
					}()
				}
			}
			w.Stop()
			// The watch ended: the caller is done, or the API server went away (a restart
			// under a fault test). A new watch starts with the pods that exist, so a pod
			// made meanwhile still gets its log, as a kubelet's would.
			for {
				if ctx.Err() != nil {
					return
				}
				if w, err = c.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: selector}); err == nil {
					break
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(500 * time.Millisecond):
				}
			}
		}
	}()
	return nil
}
