package localcluster

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// PodOutcomeStage makes kwok finish the running pods that carry label component=value
// (app.kubernetes.io/component) on the given nodes: Succeeded with exit code 0, or Failed
// with exitCode. This is what a container would do on a real node; kwok runs none.
func PodOutcomeStage(name, component string, nodes []string, exitCode int) (*unstructured.Unstructured, error) {
	return PodOutcomeStageAfter(name, component, nodes, exitCode, 200*time.Millisecond)
}

// PodOutcomeStageAfter is PodOutcomeStage with the time a pod runs before it finishes.
func PodOutcomeStageAfter(name, component string, nodes []string, exitCode int, after time.Duration) (*unstructured.Unstructured, error) {
	if len(nodes) == 0 {
		nodes = []string{"-none-"}
	}
	values := ""
	for _, n := range nodes {
		values += fmt.Sprintf("\n      - %q", n)
	}
	return podOutcomeStage(name, component, "'.spec.nodeName'", values, exitCode, after)
}

// OutcomeAnnotation, set on a pod to OutcomePass or OutcomeFail, finishes it through
// PodOutcomeByAnnotation's stages: a simulator that decides a pod's outcome when the pod
// appears (from its node's fake host) sets it.
const (
	OutcomeAnnotation = "sim.kubectl-gpu.io/outcome"
	OutcomePass       = "pass"
	OutcomeFail       = "fail"
)

// SetPodOutcomeByAnnotation makes kwok finish the running pods of the component whose
// OutcomeAnnotation is set: Succeeded for OutcomePass, Failed with exitCode for OutcomeFail.
func (c *Cluster) SetPodOutcomeByAnnotation(ctx context.Context, name, component string, exitCode int) error {
	for _, o := range []struct {
		value string
		code  int
	}{{OutcomePass, 0}, {OutcomeFail, exitCode}} {
		obj, err := podOutcomeStage(name+"-"+o.value, component, `'.metadata.annotations["`+OutcomeAnnotation+`"]'`, fmt.Sprintf("\n      - %q", o.value), o.code, 200*time.Millisecond)
		if err != nil {
			return err
		}
		if err := c.ApplyStage(ctx, obj); err != nil {
			return err
		}
	}
	return nil
}

func podOutcomeStage(name, component, key, values string, exitCode int, after time.Duration) (*unstructured.Unstructured, error) {
	phase, reason := "Succeeded", "Completed"
	if exitCode != 0 {
		phase, reason = "Failed", "Error"
	}
	doc := fmt.Sprintf(`apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: %s
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.metadata.labels["app.kubernetes.io/component"]'
      operator: 'In'
      values: [%q]
    - key: %s
      operator: 'In'
      values:%s
  weight: 10
  delay:
    durationMilliseconds: %d
  next:
    statusTemplate: |
      {{ $now := Now }}
      containerStatuses:
      {{ range $index, $item := .spec.containers }}
      - image: {{ $item.image | Quote }}
        name: {{ $item.name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: %d
            finishedAt: {{ $now | Quote }}
            reason: %s
            startedAt: {{ $now | Quote }}
      {{ end }}
      phase: %s
`, name, component, key, values, after.Milliseconds(), exitCode, reason, phase)
	var obj unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
		return nil, err
	}
	return &obj, nil
}

// SetPodOutcome applies PodOutcomeStage.
func (c *Cluster) SetPodOutcome(ctx context.Context, name, component string, nodes []string, exitCode int) error {
	return c.SetPodOutcomeAfter(ctx, name, component, nodes, exitCode, 200*time.Millisecond)
}

// SetPodOutcomeAfter applies PodOutcomeStageAfter.
func (c *Cluster) SetPodOutcomeAfter(ctx context.Context, name, component string, nodes []string, exitCode int, after time.Duration) error {
	obj, err := PodOutcomeStageAfter(name, component, nodes, exitCode, after)
	if err != nil {
		return err
	}
	return c.ApplyStage(ctx, obj)
}
